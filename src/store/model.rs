//! Records, inputs, filters and their validation, shared by every store backend.

use serde::{Deserialize, Serialize};

pub const ARTICLE_STATUSES: [&str; 3] = ["draft", "published", "archived"];
pub const NEWSLETTER_STATUSES: [&str; 3] = ["draft", "scheduled", "sent"];
pub const ROLES: [&str; 2] = ["editor", "admin"];

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub skip: i64,
    pub limit: i64,
}

/// An article without its body, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ArticleSummary {
    pub id: i64,
    pub slug: String,
    pub title: String,
    pub summary: String,
    pub author: String,
    pub category: String,
    pub tags: Vec<String>,
    pub status: String,
    pub published_at: Option<String>,
    pub updated_at: String,
}

/// A whole article.
#[derive(Debug, Clone, Serialize)]
pub struct Article {
    #[serde(flatten)]
    pub meta: ArticleSummary,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArticleInput {
    pub slug: String,
    pub title: String,
    #[serde(default)]
    pub summary: String,
    pub body: String,
    pub author: String,
    pub category: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub status: String,
    #[serde(default)]
    pub published_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub period: String,
    pub score: f64,
    pub growth_pct: f64,
    pub mentions: i64,
    pub summary: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendInput {
    pub name: String,
    pub category: String,
    /// Week the figures describe, `YYYY-MM-DD`.
    pub period: String,
    pub score: f64,
    #[serde(default)]
    pub growth_pct: f64,
    #[serde(default)]
    pub mentions: i64,
    #[serde(default)]
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Newsletter {
    pub id: i64,
    pub slug: String,
    pub title: String,
    pub body: String,
    pub status: String,
    pub issued_at: Option<String>,
    pub recipients: i64,
    pub open_rate: f64,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewsletterInput {
    pub slug: String,
    pub title: String,
    pub body: String,
    pub status: String,
    #[serde(default)]
    pub issued_at: Option<String>,
    #[serde(default)]
    pub recipients: i64,
    #[serde(default)]
    pub open_rate: f64,
}

/// Paging shared by every listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    pub skip: i64,
    pub limit: i64,
    /// The listing's total when the caller already knows it for this filter
    /// (the read cache keeps totals per filter): the store skips its count.
    pub known_total: Option<i64>,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            skip: 0,
            limit: 20,
            known_total: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArticleFilter {
    pub paging: Paging,
    pub category: Option<String>,
    pub tag: Option<String>,
    pub author: Option<String>,
    /// Defaults to `published`.
    pub status: Option<String>,
    /// Inclusive bounds on `published_at`, RFC 3339.
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrendFilter {
    pub paging: Paging,
    pub category: Option<String>,
    pub name: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewsletterFilter {
    pub paging: Paging,
    pub status: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Counts and latest items for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub articles: StatusCounts,
    pub newsletters: StatusCounts,
    pub trends: i64,
    pub latest_articles: Vec<ArticleSummary>,
    pub top_trends: Vec<Trend>,
    pub latest_newsletters: Vec<Newsletter>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusCounts {
    pub total: i64,
    pub by_status: std::collections::BTreeMap<String, i64>,
}

/// A stored API key (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub name: String,
    pub role: String,
    /// First characters of the key, to recognise it.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

pub struct NewApiKey {
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub hash: String,
}

/// One line of the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: String,
    /// Key name, or `anonymous`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub client: String,
    /// `ok`, `denied`, `unauthenticated`, or `refused` with the status (`refused 409`).
    pub outcome: String,
    /// How many attempts this row stands for: anonymous refusals from one client
    /// are counted per minute and action in one row.
    pub count: i64,
}

/// A slug: 1–120 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 120
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// What [`normalize_time`] accepts, for error messages.
pub const TIME_FORMS: &str =
    "a date (2026-01-31) or RFC 3339 time (2026-01-31T09:00:00Z) from year 0001 to 9999 (UTC)";

/// Normalise a date (`YYYY-MM-DD`) or RFC 3339 timestamp to UTC `YYYY-MM-DDTHH:MM:SSZ`;
/// `end` makes a date mean its last second. `None` for anything else, including
/// times whose UTC year falls outside 0001..=9999 (the text form must stay sortable).
pub fn normalize_time(s: &str, end: bool) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    let t = if let Ok(d) =
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
    {
        let t = if end {
            time::Time::from_hms(23, 59, 59).ok()?
        } else {
            time::Time::MIDNIGHT
        };
        d.with_time(t).assume_utc()
    } else {
        time::OffsetDateTime::parse(s, &Rfc3339)
            .ok()?
            .checked_to_offset(time::UtcOffset::UTC)?
    };
    (1..=9999)
        .contains(&t.year())
        .then(|| crate::util::fmt_time(t))
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(msg()) }
}

fn text(field: &str, v: &str, min: usize, max: usize) -> Result<(), String> {
    let n = v.chars().count();
    check(n >= min && n <= max, || {
        format!("field '{field}' must be {min} to {max} characters long, got {n}")
    })?;
    check(min == 0 || !v.trim().is_empty(), || {
        format!("field '{field}' must not be only spaces")
    })?;
    check(
        !v.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t'),
        || format!("field '{field}' must not contain control characters (NUL, escapes)"),
    )
}

/// At most 40 characters of a client's value, for error messages (a value is
/// never echoed whole: it may be megabytes).
fn clip(v: &str) -> String {
    let mut out: String = v.chars().take(40).collect();
    if v.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

fn one_of(field: &str, v: &str, allowed: &[&str]) -> Result<(), String> {
    check(allowed.contains(&v), || {
        format!(
            "field '{field}' must be one of {}, got {:?}",
            allowed.join(", "),
            clip(v)
        )
    })
}

fn slug(v: &str) -> Result<(), String> {
    check(valid_slug(v), || {
        format!(
            "field 'slug' must be 1 to 120 characters of a-z, 0-9 and '-', got {:?}",
            clip(v)
        )
    })
}

fn opt_time(field: &str, v: &mut Option<String>) -> Result<(), String> {
    if let Some(s) = v {
        *v = Some(normalize_time(s, false).ok_or_else(|| {
            format!(
                "field '{field}' must be {TIME_FORMS}, got {:?}",
                s.chars().take(40).collect::<String>()
            )
        })?);
    }
    Ok(())
}

impl ArticleInput {
    /// Check and normalise; the error names the field and what is allowed.
    pub fn validate(&mut self) -> Result<(), String> {
        slug(&self.slug)?;
        text("title", &self.title, 1, 300)?;
        text("summary", &self.summary, 0, 2000)?;
        text("body", &self.body, 1, 500_000)?;
        text("author", &self.author, 1, 100)?;
        text("category", &self.category, 1, 60)?;
        one_of("status", &self.status, &ARTICLE_STATUSES)?;
        check(self.tags.len() <= 20, || {
            "field 'tags' may hold at most 20 tags".into()
        })?;
        for t in &mut self.tags {
            *t = t.trim().to_lowercase();
            text("tags[]", t, 1, 50)?;
        }
        self.tags.sort();
        self.tags.dedup();
        opt_time("published_at", &mut self.published_at)?;
        if self.status == "published" && self.published_at.is_none() {
            self.published_at = Some(crate::util::now());
        }
        Ok(())
    }
}

impl TrendInput {
    pub fn validate(&mut self) -> Result<(), String> {
        text("name", &self.name, 1, 100)?;
        text("category", &self.category, 1, 60)?;
        text("summary", &self.summary, 0, 2000)?;
        check(
            self.score.is_finite() && (0.0..=100.0).contains(&self.score),
            || {
                format!(
                    "field 'score' must be a number from 0 to 100, got {}",
                    self.score
                )
            },
        )?;
        check(
            self.growth_pct.is_finite() && self.growth_pct.abs() <= 100_000.0,
            || "field 'growth_pct' must be a finite number within ±100000".into(),
        )?;
        check(self.mentions >= 0, || {
            "field 'mentions' must not be negative".into()
        })?;
        let p = normalize_time(&self.period, false).ok_or_else(|| {
            format!(
                "field 'period' must be a date such as 2026-01-05 (year 0001 to 9999), got {:?}",
                self.period.chars().take(40).collect::<String>()
            )
        })?;
        self.period = p.get(..10).unwrap_or(&p).to_string();
        let latest =
            crate::util::fmt_time(time::OffsetDateTime::now_utc() + time::Duration::days(7));
        if self.period.as_str() > latest.get(..10).unwrap_or_default() {
            return Err(format!(
                "field 'period' is the week the figures describe; {} is more than a week ahead",
                self.period
            ));
        }
        Ok(())
    }
}

impl NewsletterInput {
    pub fn validate(&mut self) -> Result<(), String> {
        slug(&self.slug)?;
        text("title", &self.title, 1, 300)?;
        text("body", &self.body, 1, 500_000)?;
        one_of("status", &self.status, &NEWSLETTER_STATUSES)?;
        check(self.recipients >= 0, || {
            "field 'recipients' must not be negative".into()
        })?;
        check(
            self.open_rate.is_finite() && (0.0..=1.0).contains(&self.open_rate),
            || {
                format!(
                    "field 'open_rate' must be a fraction from 0 to 1, got {}",
                    self.open_rate
                )
            },
        )?;
        opt_time("issued_at", &mut self.issued_at)?;
        let soon =
            crate::util::fmt_time(time::OffsetDateTime::now_utc() + time::Duration::minutes(5));
        match (self.status.as_str(), &self.issued_at) {
            ("sent" | "scheduled", None) => Err(format!(
                "field 'issued_at' is required for a {} newsletter",
                self.status
            )),
            ("sent", Some(t)) if *t > soon => Err(
                "field 'issued_at' of a sent newsletter cannot be in the future; use status 'scheduled'".into(),
            ),
            _ => Ok(()),
        }
    }
}

/// Strategies for property tests of every parser that takes a time.
#[cfg(test)]
pub mod test_strategies {
    use proptest::prelude::*;

    /// Dates and RFC 3339 times across the whole four-digit range, with offsets
    /// (so conversion to UTC can leave the range), plus arbitrary text.
    pub fn time_text() -> impl Strategy<Value = String> {
        let year = prop_oneof![0i32..=9999, Just(0), Just(1), Just(9999)];
        let stamp = (
            year.clone(),
            1u8..=12,
            1u8..=31,
            0u8..=23,
            0u8..=59,
            0u8..=60,
            -25i8..=25,
            0u8..=59,
        )
            .prop_map(|(y, mo, d, h, mi, s, oh, om)| {
                let sign = if oh < 0 { '-' } else { '+' };
                format!(
                    "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{:02}:{om:02}",
                    oh.unsigned_abs()
                )
            });
        // The edges of the range, where an offset moves the UTC time out of it.
        let edge = (any::<bool>(), 0u8..=25, 0u8..=59).prop_map(|(top, h, m)| {
            if top {
                format!("9999-12-31T23:59:59-{h:02}:{m:02}")
            } else {
                format!("0001-01-01T00:00:00+{h:02}:{m:02}")
            }
        });
        prop_oneof![
            stamp,
            edge,
            (year, 0u8..=13, 0u8..=32).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            "\\PC{0,30}",
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slugs() {
        assert!(valid_slug("typescript-5-8-released"));
        for bad in [
            "",
            "../etc/passwd",
            "Upper",
            "a b",
            "-a",
            "a-",
            "a/b",
            "x'; drop table",
        ] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }

    #[test]
    fn times_normalise() {
        assert_eq!(
            normalize_time("2026-01-31", false).unwrap(),
            "2026-01-31T00:00:00Z"
        );
        assert_eq!(
            normalize_time("2026-01-31", true).unwrap(),
            "2026-01-31T23:59:59Z"
        );
        assert_eq!(
            normalize_time("2026-01-31T10:00:00+09:00", false).unwrap(),
            "2026-01-31T01:00:00Z"
        );
        assert!(normalize_time("31/01/2026", false).is_none());
        // Offsets that push the UTC time past year 9999 (or before 0001) are refused, not a panic.
        assert!(normalize_time("9999-12-31T23:59:59-01:00", false).is_none());
        assert!(normalize_time("0001-01-01T00:00:00+01:00", true).is_none());
        assert_eq!(
            normalize_time("9999-12-31T23:59:59Z", false).unwrap(),
            "9999-12-31T23:59:59Z"
        );
    }

    proptest! {
        #[test]
        fn normalize_time_never_panics(t in test_strategies::time_text(), end in any::<bool>()) {
            if let Some(n) = normalize_time(&t, end) {
                prop_assert_eq!(n.len(), 20, "{}", n);
            }
        }

        /// JSON bodies: any text in any time field is a clear error or a normal value.
        #[test]
        fn bodies_never_panic(
            t in test_strategies::time_text(),
            text in "\\PC{0,20}",
            tags in prop::collection::vec("\\PC{0,12}", 0..4),
            num in any::<f64>(),
        ) {
            let article = serde_json::json!({"slug": "s", "title": text, "body": "b", "author": "a",
                "category": "c", "tags": tags, "status": "draft", "published_at": t});
            if let Ok(mut a) = serde_json::from_value::<ArticleInput>(article)
                && let Err(e) = a.validate()
            {
                prop_assert!(e.contains("field '"));
            }
            let trend = serde_json::json!({"name": text, "category": "c", "period": t, "score": num});
            if let Ok(mut tr) = serde_json::from_value::<TrendInput>(trend) {
                match tr.validate() {
                    Ok(()) => prop_assert_eq!(tr.period.len(), 10),
                    Err(e) => prop_assert!(e.contains("field '")),
                }
            }
            let news = serde_json::json!({"slug": "n", "title": text, "body": "b", "status": "sent",
                "issued_at": t, "open_rate": num});
            if let Ok(mut n) = serde_json::from_value::<NewsletterInput>(news)
                && let Err(e) = n.validate()
            {
                prop_assert!(e.contains("field '"));
            }
        }

        #[test]
        fn slugs_never_panic(s in "\\PC{0,130}") {
            let _ = valid_slug(&s);
        }
    }

    #[test]
    fn article_validation_names_field() {
        let mut a = ArticleInput {
            slug: "ok".into(),
            title: "".into(),
            summary: String::new(),
            body: "b".into(),
            author: "a".into(),
            category: "c".into(),
            tags: vec![],
            status: "published".into(),
            published_at: None,
        };
        assert!(a.validate().unwrap_err().contains("'title'"));
        a.title = "t".into();
        a.status = "live".into();
        assert!(
            a.validate()
                .unwrap_err()
                .contains("draft, published, archived")
        );
        a.status = "published".into();
        a.validate().unwrap();
        assert!(a.published_at.is_some());
    }
}

/// One run of a scheduled job, claimed by exactly one replica per tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRun {
    pub job: String,
    /// The scheduled time this run is for (RFC 3339, UTC).
    pub tick: String,
    /// Which process ran it.
    pub replica: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `success` or `failure`; `None` while running (or if the runner died).
    pub outcome: Option<String>,
    pub detail: Option<String>,
}
