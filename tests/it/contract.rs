//! One contract, two stores: every scenario here runs against SQLite and
//! against PostgreSQL (a database of its own), through `dyn ContentStore`
//! only. A store that fails any of them does not ship.

use crate::pg::TestDb;
use aica::store::{
    ArticleFilter, ArticleInput, AuditEntry, Backend, ContentStore, NewApiKey, NewsletterFilter,
    NewsletterInput, Paging, StoreError, TrendFilter, TrendInput,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// An open store and what keeps its data alive (temp dir or test database).
struct Subject {
    store: Arc<dyn ContentStore>,
    _dir: tempfile::TempDir,
    _db: Option<TestDb>,
}

async fn sqlite() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::Sqlite(dir.path().join("contract.db"));
    let store = aica::store::open(&b, 4, false).await.unwrap().store;
    Subject {
        store,
        _dir: dir,
        _db: None,
    }
}

async fn postgres() -> Option<Subject> {
    let db = tokio::task::spawn_blocking(TestDb::create).await.unwrap()?;
    let b = Backend::Postgres(db.url.clone());
    let store = aica::store::open(&b, 4, false).await.unwrap().store;
    Some(Subject {
        store,
        _dir: tempfile::tempdir().unwrap(),
        _db: Some(db),
    })
}

/// Run a scenario on a blocking thread (store calls block).
async fn check(s: Option<Subject>, scenario: fn(&dyn ContentStore)) {
    let Some(s) = s else { return };
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || scenario(&*store))
        .await
        .unwrap();
    drop(s);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::check(Some(super::sqlite().await), super::$name).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::check(super::postgres().await, super::$name).await;
                }
            )*
        }
    };
}

contract!(
    schema_is_current,
    article_listings_filter_order_and_page,
    trend_and_newsletter_listings,
    writes_round_trip_and_conflicts,
    keys_and_audit,
    concurrent_writers_lose_and_duplicate_nothing,
    a_tick_is_claimed_once,
);

const CATS: [&str; 3] = ["language", "runtime", "tooling"];
const AUTHORS: [&str; 2] = ["Aiko Tanaka", "Kenji Sato"];

fn article(i: usize) -> ArticleInput {
    let status = match i % 7 {
        0 => "draft",
        1 => "archived",
        _ => "published",
    };
    // Pairs share a timestamp, so the id tie-break is exercised.
    let published = (status != "draft")
        .then(|| format!("2026-0{}-1{}T10:00:00Z", 1 + (i / 2) % 9, (i / 2) % 10));
    let mut tags = vec![format!("t{}", i % 4), "all".to_string()];
    if i.is_multiple_of(5) {
        tags.push("comma,tag ✓".into());
    }
    ArticleInput {
        slug: format!("article-{i}"),
        title: format!("Article {i}"),
        summary: format!("summary {i}"),
        body: format!("body {i}"),
        author: AUTHORS[i % 2].into(),
        category: CATS[i % 3].into(),
        tags,
        status: status.into(),
        published_at: published,
    }
}

/// The expected listing, computed from the inputs: status (published by
/// default), filters, newest first, ties by id descending.
fn expected(inputs: &[(i64, ArticleInput)], f: &ArticleFilter) -> (i64, Vec<String>) {
    let status = f.status.clone().unwrap_or_else(|| "published".into());
    let mut v: Vec<&(i64, ArticleInput)> = inputs
        .iter()
        .filter(|(_, a)| a.status == status)
        .filter(|(_, a)| f.category.as_ref().is_none_or(|c| &a.category == c))
        .filter(|(_, a)| f.author.as_ref().is_none_or(|c| &a.author == c))
        .filter(|(_, a)| f.tag.as_ref().is_none_or(|t| a.tags.contains(t)))
        .filter(|(_, a)| {
            f.from
                .as_ref()
                .is_none_or(|x| a.published_at.as_ref().is_some_and(|p| p >= x))
        })
        .filter(|(_, a)| {
            f.to.as_ref()
                .is_none_or(|x| a.published_at.as_ref().is_some_and(|p| p <= x))
        })
        .collect();
    // NULL dates last (SQLite sorts NULL lowest; PostgreSQL is told NULLS LAST).
    v.sort_by(|(ia, a), (ib, b)| {
        (b.published_at.is_some(), &b.published_at, ib).cmp(&(
            a.published_at.is_some(),
            &a.published_at,
            ia,
        ))
    });
    let total = v.len() as i64;
    let page = v
        .into_iter()
        .skip(f.paging.skip as usize)
        .take(f.paging.limit as usize)
        .map(|(_, a)| a.slug.clone())
        .collect();
    (total, page)
}

fn schema_is_current(s: &dyn ContentStore) {
    let st = s.schema_status().unwrap();
    assert!(st.is_current(), "{st:?}");
    assert_eq!(st.expected, aica::store::SCHEMA_VERSION);
    s.ping().unwrap();
    let info = s.info();
    assert_eq!(info.backend, s.backend());
    assert!(info.pool_max >= 1 && !info.version.is_empty(), "{info:?}");
}

fn article_listings_filter_order_and_page(s: &dyn ContentStore) {
    let mut inputs = Vec::new();
    for i in 0..40 {
        let a = article(i);
        let out = s.create_article(&a).unwrap();
        inputs.push((out.meta.id, a));
    }
    let p = |skip, limit| Paging {
        skip,
        limit,
        known_total: None,
    };
    let some = |x: &str| Some(x.to_string());
    let filters = vec![
        ArticleFilter {
            paging: p(0, 100),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(3, 5),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(100, 5),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(0, 100),
            category: some("runtime"),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(0, 100),
            author: some("Kenji Sato"),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(0, 100),
            tag: some("t2"),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(0, 100),
            tag: some("comma,tag ✓"),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(0, 100),
            status: some("draft"),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(0, 100),
            status: some("archived"),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(0, 100),
            from: some("2026-03-10T00:00:00Z"),
            to: some("2026-06-14T10:00:00Z"),
            ..Default::default()
        },
        ArticleFilter {
            paging: p(1, 2),
            category: some("language"),
            author: some("Aiko Tanaka"),
            tag: some("all"),
            ..Default::default()
        },
    ];
    for f in &filters {
        let got = s.list_articles(f).unwrap();
        let (total, slugs) = expected(&inputs, f);
        assert_eq!(got.total, total, "total for {f:?}");
        let got_slugs: Vec<String> = got.items.iter().map(|a| a.slug.clone()).collect();
        assert_eq!(got_slugs, slugs, "page for {f:?}");
        for a in &got.items {
            let want = &inputs.iter().find(|(_, i)| i.slug == a.slug).unwrap().1;
            let mut tags = want.tags.clone();
            tags.sort();
            tags.dedup();
            assert_eq!(a.tags, tags, "tags of {}", a.slug);
        }
    }
}

fn trend(name: &str, cat: &str, period: &str, score: f64) -> TrendInput {
    TrendInput {
        name: name.into(),
        category: cat.into(),
        period: period.into(),
        score,
        growth_pct: -1.5,
        mentions: 42,
        summary: format!("{name} in {period}"),
    }
}

fn newsletter(i: usize, status: &str, issued: Option<&str>) -> NewsletterInput {
    NewsletterInput {
        slug: format!("weekly-{i}"),
        title: format!("Weekly #{i}"),
        body: "body".into(),
        status: status.into(),
        issued_at: issued.map(str::to_string),
        recipients: 1000 + i as i64,
        open_rate: 0.25,
    }
}

fn trend_and_newsletter_listings(s: &dyn ContentStore) {
    let periods = ["2026-01-05", "2026-01-12", "2026-01-19"];
    for (k, name) in ["Deno", "Bun", "Vite"].iter().enumerate() {
        for (j, period) in periods.iter().enumerate() {
            // Bun and Vite tie on score in the second week: id breaks the tie, ascending.
            let score = if j == 1 && k > 0 {
                50.0
            } else {
                10.0 * (k + j) as f64
            };
            s.create_trend(&trend(name, CATS[k], period, score))
                .unwrap();
        }
    }
    let all = s
        .list_trends(&TrendFilter {
            paging: Paging {
                skip: 0,
                limit: 100,
                known_total: None,
            },
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.total, 9);
    let order: Vec<(String, String)> = all
        .items
        .iter()
        .map(|t| (t.period.clone(), t.name.clone()))
        .collect();
    assert_eq!(
        order,
        [
            ("2026-01-19", "Vite"),
            ("2026-01-19", "Bun"),
            ("2026-01-19", "Deno"),
            ("2026-01-12", "Bun"),
            ("2026-01-12", "Vite"),
            ("2026-01-12", "Deno"),
            ("2026-01-05", "Vite"),
            ("2026-01-05", "Bun"),
            ("2026-01-05", "Deno"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let f = TrendFilter {
        paging: Paging {
            skip: 0,
            limit: 100,
            known_total: None,
        },
        name: Some("Bun".into()),
        from: Some("2026-01-12T00:00:00Z".into()),
        to: Some("2026-01-19T23:59:59Z".into()),
        ..Default::default()
    };
    let bun = s.list_trends(&f).unwrap();
    assert_eq!(bun.total, 2);
    assert!(
        bun.items
            .iter()
            .all(|t| t.name == "Bun" && t.score.is_finite())
    );
    let f = TrendFilter {
        paging: Paging {
            skip: 1,
            limit: 1,
            known_total: None,
        },
        category: Some("language".into()),
        ..Default::default()
    };
    let page = s.list_trends(&f).unwrap();
    assert_eq!((page.total, page.items.len()), (3, 1));
    assert_eq!(page.items[0].period, "2026-01-12");

    s.create_newsletter(&newsletter(1, "sent", Some("2026-02-01T09:00:00Z")))
        .unwrap();
    s.create_newsletter(&newsletter(2, "draft", None)).unwrap();
    s.create_newsletter(&newsletter(3, "sent", Some("2026-02-08T09:00:00Z")))
        .unwrap();
    s.create_newsletter(&newsletter(4, "scheduled", Some("2026-02-15T09:00:00Z")))
        .unwrap();
    let page = |f: NewsletterFilter| {
        let p = s.list_newsletters(&f).unwrap();
        (
            p.total,
            p.items.into_iter().map(|n| n.slug).collect::<Vec<_>>(),
        )
    };
    let all = NewsletterFilter {
        paging: Paging {
            skip: 0,
            limit: 10,
            known_total: None,
        },
        ..Default::default()
    };
    assert_eq!(
        page(all.clone()),
        (
            4,
            vec![
                "weekly-4".into(),
                "weekly-3".into(),
                "weekly-1".into(),
                "weekly-2".into()
            ]
        )
    );
    let sent = NewsletterFilter {
        status: Some("sent".into()),
        ..all.clone()
    };
    assert_eq!(page(sent), (2, vec!["weekly-3".into(), "weekly-1".into()]));
    let window = NewsletterFilter {
        from: Some("2026-02-02T00:00:00Z".into()),
        to: Some("2026-02-15T09:00:00Z".into()),
        ..all
    };
    assert_eq!(
        page(window),
        (2, vec!["weekly-4".into(), "weekly-3".into()])
    );

    let d = s.dashboard().unwrap();
    assert_eq!(d.trends, 9);
    assert_eq!(d.newsletters.total, 4);
    assert_eq!(d.newsletters.by_status.get("sent"), Some(&2));
    assert_eq!(d.top_trends.len(), 3, "top trends are the latest period's");
    assert!(d.top_trends.iter().all(|t| t.period == "2026-01-19"));
}

fn writes_round_trip_and_conflicts(s: &dyn ContentStore) {
    let a = article(2);
    let created = s.create_article(&a).unwrap();
    assert_eq!(created.meta.slug, a.slug);
    assert_eq!(created.body, a.body);
    let got = s.get_article(&a.slug).unwrap().unwrap();
    assert_eq!(got.meta.id, created.meta.id);
    assert!(
        matches!(s.create_article(&a), Err(StoreError::Conflict(m)) if m.contains("article-2"))
    );

    let mut b = a.clone();
    b.slug = "renamed".into();
    b.tags = vec!["z".into(), "a".into(), "a".into()];
    let upd = s.update_article(&a.slug, &b).unwrap().unwrap();
    assert_eq!(
        (upd.meta.slug.as_str(), upd.meta.tags.clone()),
        ("renamed", vec!["a".to_string(), "z".to_string()])
    );
    assert!(s.get_article(&a.slug).unwrap().is_none());
    assert!(s.update_article("missing", &b).unwrap().is_none());
    s.create_article(&article(3)).unwrap();
    let mut clash = b.clone();
    clash.slug = "article-3".into();
    assert!(matches!(
        s.update_article("renamed", &clash),
        Err(StoreError::Conflict(_))
    ));
    assert!(s.delete_article("renamed").unwrap());
    assert!(!s.delete_article("renamed").unwrap());

    let t = s
        .create_trend(&trend("Deno", "runtime", "2026-01-05", 12.5))
        .unwrap();
    assert!(matches!(
        s.create_trend(&trend("Deno", "runtime", "2026-01-05", 1.0)),
        Err(StoreError::Conflict(_))
    ));
    let t2 = s
        .update_trend(t.id, &trend("Deno", "runtime", "2026-01-05", 99.0))
        .unwrap()
        .unwrap();
    assert_eq!(t2.score, 99.0);
    assert!(
        s.update_trend(t.id + 1000, &trend("X", "runtime", "2026-01-05", 1.0))
            .unwrap()
            .is_none()
    );
    assert!(s.delete_trend(t.id).unwrap() && !s.delete_trend(t.id).unwrap());

    let n = s.create_newsletter(&newsletter(1, "draft", None)).unwrap();
    assert!(matches!(
        s.create_newsletter(&newsletter(1, "draft", None)),
        Err(StoreError::Conflict(_))
    ));
    let n2 = s
        .update_newsletter(n.id, &newsletter(9, "sent", Some("2026-01-01T00:00:00Z")))
        .unwrap()
        .unwrap();
    assert_eq!(
        (n2.slug.as_str(), n2.issued_at.as_deref()),
        ("weekly-9", Some("2026-01-01T00:00:00Z"))
    );
    assert!(s.delete_newsletter(n.id).unwrap() && !s.delete_newsletter(n.id).unwrap());
}

fn keys_and_audit(s: &dyn ContentStore) {
    let key = |name: &str, hash: &str| NewApiKey {
        name: name.into(),
        role: "editor".into(),
        prefix: "aica_1234567".into(),
        hash: hash.into(),
    };
    s.create_key(&key("ed", "h1")).unwrap();
    s.create_key(&key("admin", "h2")).unwrap();
    assert!(
        matches!(s.create_key(&key("ed", "h3")), Err(StoreError::Conflict(m)) if m.contains("ed"))
    );
    let found = s.find_key("h1").unwrap().unwrap();
    assert_eq!(found.name, "ed");
    assert!(s.find_key("nope").unwrap().is_none());
    let listed = s.list_keys().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .find(|k| k.name == "ed")
            .unwrap()
            .last_used_at
            .is_some()
    );
    assert!(s.revoke_key("ed").unwrap());
    assert!(!s.revoke_key("ed").unwrap());
    assert!(
        s.find_key("h1").unwrap().is_none(),
        "a revoked key no longer authenticates"
    );

    let entry = |target: &str, at: &str| AuditEntry {
        at: at.into(),
        actor: "anonymous".into(),
        action: "article.create".into(),
        target: target.into(),
        client: "192.0.2.7".into(),
        outcome: "denied".into(),
        count: 1,
    };
    s.audit(&AuditEntry {
        actor: "ed".into(),
        outcome: "ok".into(),
        ..entry("article a", "2026-01-01T00:00:00Z")
    })
    .unwrap();
    s.audit_aggregated(&entry("article a", "2026-01-01T00:01:05Z"))
        .unwrap();
    s.audit_aggregated(&entry("article a", "2026-01-01T00:01:30Z"))
        .unwrap();
    s.audit_aggregated(&entry("article b", "2026-01-01T00:01:59Z"))
        .unwrap();
    s.audit_aggregated(&entry("article a", "2026-01-01T00:02:00Z"))
        .unwrap();
    let recent = s.recent_audit(10).unwrap();
    let shape: Vec<(String, String, i64)> = recent
        .iter()
        .map(|e| (e.actor.clone(), e.target.clone(), e.count))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("anonymous".into(), "article a".into(), 1),
            ("anonymous".into(), "(several targets)".into(), 3),
            ("ed".into(), "article a".into(), 1),
        ]
    );
    assert_eq!(s.recent_audit(1).unwrap().len(), 1);
}

fn concurrent_writers_lose_and_duplicate_nothing(s: &dyn ContentStore) {
    // `s` is borrowed: scoped threads share it.
    std::thread::scope(|sc| {
        for t in 0..8 {
            sc.spawn(move || {
                for i in 0..25 {
                    let mut a = article(i);
                    a.slug = format!("w{t}-{i}");
                    a.status = "published".into();
                    a.published_at = Some("2026-01-01T00:00:00Z".into());
                    s.create_article(&a).unwrap();
                }
            });
        }
    });
    let all = s
        .list_articles(&ArticleFilter {
            paging: Paging {
                skip: 0,
                limit: 1000,
                known_total: None,
            },
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.total, 200);
    let ids: BTreeSet<i64> = all.items.iter().map(|a| a.id).collect();
    let slugs: BTreeSet<&str> = all.items.iter().map(|a| a.slug.as_str()).collect();
    assert_eq!((ids.len(), slugs.len()), (200, 200));

    // Eight writers race for one slug: exactly one wins, the others are told why.
    let outcomes: Vec<Result<(), String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(move || match s.create_article(&article(999)) {
                    Ok(_) => Ok(()),
                    Err(StoreError::Conflict(m)) => Err(m),
                    Err(e) => panic!("a duplicate must be a conflict, got {e:?}"),
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
}

fn a_tick_is_claimed_once(s: &dyn ContentStore) {
    let tick = "2026-01-01T03:00:00Z";
    let wins = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| sc.spawn(move || s.claim_run("backup", tick).unwrap()))
            .collect();
        hs.into_iter()
            .filter(|_| true)
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count()
    });
    assert_eq!(wins, 1);
    assert!(s.claim_run("backup", "2026-01-02T03:00:00Z").unwrap());
    assert!(s.claim_run("other-job", tick).unwrap(), "ticks are per job");
    s.finish_run("backup", tick, "success", "aica-x.aicabak")
        .unwrap();
    let runs = s.recent_runs("backup", 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].tick, "2026-01-02T03:00:00Z");
    assert_eq!(runs[0].outcome, None);
    assert_eq!(
        (runs[1].outcome.as_deref(), runs[1].detail.as_deref()),
        (Some("success"), Some("aica-x.aicabak"))
    );
}

/// Both stores, same inputs: the same answers, field for field (times aside).
#[tokio::test(flavor = "multi_thread")]
async fn both_stores_answer_alike() {
    let Some(pg) = postgres().await else { return };
    let lite = sqlite().await;
    let (a, b) = (lite.store.clone(), pg.store.clone());
    tokio::task::spawn_blocking(move || {
        for s in [&a, &b] {
            for i in 0..30 {
                s.create_article(&article(i)).unwrap();
            }
        }
        let strip = |mut v: serde_json::Value| {
            for item in v["items"].as_array_mut().unwrap() {
                item.as_object_mut().unwrap().remove("updated_at");
            }
            v
        };
        for status in [None, Some("draft"), Some("archived")] {
            for tag in [None, Some("t1"), Some("comma,tag ✓")] {
                let f = ArticleFilter {
                    paging: Paging {
                        skip: 2,
                        limit: 7,
                        known_total: None,
                    },
                    status: status.map(String::from),
                    tag: tag.map(String::from),
                    ..Default::default()
                };
                let x = strip(serde_json::to_value(a.list_articles(&f).unwrap()).unwrap());
                let y = strip(serde_json::to_value(b.list_articles(&f).unwrap()).unwrap());
                assert_eq!(x, y, "{f:?}");
            }
        }
    })
    .await
    .unwrap();
}
