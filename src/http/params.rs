//! Query-string parsing with errors that name the parameter and what is allowed.

use crate::store::{
    ARTICLE_STATUSES, ArticleFilter, NEWSLETTER_STATUSES, NewsletterFilter, Paging, TIME_FORMS,
    TrendFilter, normalize_time,
};
use crate::web::error::ApiError;
use std::collections::HashMap;

pub const MAX_LIMIT: i64 = 100;
const MAX_SKIP: i64 = 10_000_000;
const MAX_TEXT: usize = 100;

/// Parsed query parameters, checked against an allowlist.
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let raw = raw.unwrap_or("");
        // form_urlencoded decodes lossily; refuse invalid UTF-8 instead of guessing.
        for part in raw.split('&') {
            let plus = part.replace('+', " ");
            if percent_encoding::percent_decode_str(&plus)
                .decode_utf8()
                .is_err()
            {
                return Err(ApiError::bad_request(
                    "the query string is not valid UTF-8 after percent-decoding; encode text as UTF-8",
                ));
            }
        }
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {:?}; allowed: {}",
                    truncate(&k),
                    allowed.join(", ")
                )));
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ApiError::bad_request(format!(
                    "query parameter {k:?} is given more than once"
                )));
            }
        }
        Ok(Query(map))
    }

    fn int(&self, key: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.0.get(key).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "query parameter {key:?} must be a whole number from {min} to {max}, got {:?}",
                        truncate(v)
                    ))
                }),
        }
    }

    fn text(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if v.chars().count() > MAX_TEXT || v.chars().any(char::is_control) => {
                Err(ApiError::bad_request(format!(
                    "query parameter {key:?} must be at most {MAX_TEXT} printable characters"
                )))
            }
            Some(v) => Ok(Some(v.to_string())),
        }
    }

    fn one_of(&self, key: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        let v = self.text(key)?;
        if let Some(s) = &v
            && !allowed.contains(&s.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "query parameter {key:?} must be one of {}, got {:?}",
                allowed.join(", "),
                truncate(s)
            )));
        }
        Ok(v)
    }

    fn range(&self) -> Result<(Option<String>, Option<String>), ApiError> {
        let parse = |key: &str, end: bool| -> Result<Option<String>, ApiError> {
            match self.text(key)? {
                None => Ok(None),
                Some(v) => normalize_time(&v, end).map(Some).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "query parameter {key:?} must be {TIME_FORMS}, got {:?}",
                        truncate(&v)
                    ))
                }),
            }
        };
        let (from, to) = (parse("from", false)?, parse("to", true)?);
        if let (Some(f), Some(t)) = (&from, &to)
            && f > t
        {
            return Err(ApiError::bad_request(
                "query parameter \"from\" is after \"to\"; swap them",
            ));
        }
        Ok((from, to))
    }

    pub fn paging(&self) -> Result<Paging, ApiError> {
        Ok(Paging {
            skip: self.int("skip", 0, 0, MAX_SKIP)?,
            limit: self.int("limit", 20, 1, MAX_LIMIT)?,
            known_total: None,
        })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

pub const ARTICLE_PARAMS: &[&str] = &[
    "skip", "limit", "category", "tag", "author", "status", "from", "to",
];
pub const TREND_PARAMS: &[&str] = &["skip", "limit", "category", "name", "from", "to"];
pub const NEWSLETTER_PARAMS: &[&str] = &["skip", "limit", "status", "from", "to"];

pub fn article_filter(raw: Option<&str>) -> Result<ArticleFilter, ApiError> {
    let q = Query::parse(raw, ARTICLE_PARAMS)?;
    let (from, to) = q.range()?;
    Ok(ArticleFilter {
        paging: q.paging()?,
        category: q.text("category")?,
        tag: q.text("tag")?.map(|t| t.to_lowercase()),
        author: q.text("author")?,
        status: q.one_of("status", &ARTICLE_STATUSES)?,
        from,
        to,
    })
}

pub fn trend_filter(raw: Option<&str>) -> Result<TrendFilter, ApiError> {
    let q = Query::parse(raw, TREND_PARAMS)?;
    let (from, to) = q.range()?;
    Ok(TrendFilter {
        paging: q.paging()?,
        category: q.text("category")?,
        name: q.text("name")?,
        from,
        to,
    })
}

pub fn newsletter_filter(raw: Option<&str>) -> Result<NewsletterFilter, ApiError> {
    let q = Query::parse(raw, NEWSLETTER_PARAMS)?;
    let (from, to) = q.range()?;
    Ok(NewsletterFilter {
        paging: q.paging()?,
        status: q.one_of("status", &NEWSLETTER_STATUSES)?,
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    fn msg(r: Result<ArticleFilter, ApiError>) -> String {
        r.unwrap_err().message
    }

    #[test]
    fn limits_and_unknowns() {
        assert_eq!(
            article_filter(Some("limit=100&skip=5")).unwrap().paging,
            Paging {
                skip: 5,
                limit: 100,
                known_total: None
            }
        );
        assert!(msg(article_filter(Some("limit=0"))).contains("1 to 100"));
        assert!(msg(article_filter(Some("limit=-1"))).contains("1 to 100"));
        assert!(msg(article_filter(Some("limit=99999999999999999999"))).contains("\"limit\""));
        assert!(msg(article_filter(Some("colour=red"))).contains("allowed: skip"));
        assert!(msg(article_filter(Some("limit=1&limit=2"))).contains("more than once"));
        assert!(msg(article_filter(Some("status=gone"))).contains("draft, published"));
        assert!(msg(article_filter(Some("from=2026-02-01&to=2026-01-01"))).contains("swap"));
        assert!(msg(article_filter(Some("from=yesterday"))).contains("RFC 3339"));
        assert!(msg(article_filter(Some("category=%FF%FE"))).contains("UTF-8"));
    }

    #[test]
    fn out_of_range_dates_name_the_parameter() {
        for (q, key) in [
            ("from=9999-12-31T23:59:59-01:00", "\"from\""),
            ("to=9999-12-31T23:59:59-01:00", "\"to\""),
            ("from=0001-01-01T00:00:00%2B01:00", "\"from\""),
        ] {
            let m = msg(article_filter(Some(q)));
            assert!(m.contains(key) && m.contains("9999"), "{q}: {m}");
            let m = trend_filter(Some(q)).err().unwrap().message;
            assert!(m.contains(key), "{q}: {m}");
            let m = newsletter_filter(Some(q)).err().unwrap().message;
            assert!(m.contains(key), "{q}: {m}");
        }
    }

    /// Query text: anything printable or percent-encoded, and dates near the edges.
    fn query() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            "\\PC{0,40}",
            "(%[0-9A-Fa-f]{2}){0,10}",
            crate::store::test_strategies::time_text(),
            any::<i64>().prop_map(|n| n.to_string()),
        ];
        let key = prop_oneof![
            Just("skip"),
            Just("limit"),
            Just("from"),
            Just("to"),
            Just("status"),
            Just("category"),
            Just("tag"),
            Just("name"),
            Just("author"),
        ];
        prop::collection::vec((key, value), 0..6).prop_map(|kv| {
            kv.iter()
                .map(|(k, v)| {
                    let v = v.replace('+', "%2B");
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    fn check<T>(r: Result<T, ApiError>) -> Result<(), TestCaseError> {
        if let Err(e) = r {
            prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            prop_assert!(e.message.len() > 10);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn article_query_never_panics(q in query(), raw in "\\PC{0,80}") {
            check(article_filter(Some(&q)))?;
            check(article_filter(Some(&raw)))?;
        }

        #[test]
        fn trend_query_never_panics(q in query(), raw in "\\PC{0,80}") {
            check(trend_filter(Some(&q)))?;
            check(trend_filter(Some(&raw)))?;
        }

        #[test]
        fn newsletter_query_never_panics(q in query(), raw in "\\PC{0,80}") {
            check(newsletter_filter(Some(&q)))?;
            check(newsletter_filter(Some(&raw)))?;
        }

        #[test]
        fn paging_query_never_panics(q in query()) {
            check(Query::parse(Some(&q), &["skip", "limit"]).and_then(|q| q.paging()))?;
        }
    }

    #[test]
    fn sql_metacharacters_are_just_text() {
        let f = article_filter(Some("category=%27%3B%20DROP%20TABLE%20articles%3B--")).unwrap();
        assert_eq!(f.category.as_deref(), Some("'; DROP TABLE articles;--"));
    }
}
