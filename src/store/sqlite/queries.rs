//! SQL for content: listings with filters and stable order, single items, writes.

use crate::store::model::*;
use crate::store::{Result, StoreError};
use crate::util::now;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params, params_from_iter};

/// A WHERE clause built from optional filters, with its bound values.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    values: Vec<Value>,
}

impl Where {
    fn eq(&mut self, col: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.values.push(Value::Text(v.clone()));
            self.clauses.push(format!("{col} = ?{}", self.values.len()));
        }
    }
    fn cmp(&mut self, expr: &str, op: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.values.push(Value::Text(v.clone()));
            self.clauses
                .push(format!("{expr} {op} ?{}", self.values.len()));
        }
    }
    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
    /// Count matches, then fetch one page with `order`.
    fn page<T>(
        mut self,
        c: &Connection,
        select: &str,
        from: &str,
        order: &str,
        paging: &Paging,
        map: impl Fn(&Row) -> rusqlite::Result<T>,
    ) -> Result<Page<T>> {
        let wh = self.sql();
        let total: i64 = match paging.known_total {
            Some(t) => t,
            None => c
                .prepare_cached(&format!("SELECT COUNT(*) FROM {from}{wh}"))?
                .query_row(params_from_iter(self.values.iter()), |r| r.get(0))?,
        };
        let n = self.values.len();
        self.values.push(Value::Integer(paging.limit));
        self.values.push(Value::Integer(paging.skip));
        let sql = format!(
            "SELECT {select} FROM {from}{wh} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let items = stmt
            .query_map(params_from_iter(self.values.iter()), map)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Page {
            items,
            total,
            skip: paging.skip,
            limit: paging.limit,
        })
    }
}

const ARTICLE_COLS: &str = "a.id, a.slug, a.title, a.summary, a.author, a.category, \
    (SELECT json_group_array(tag) FROM (SELECT tag FROM article_tags t WHERE t.article_id = a.id ORDER BY tag)), \
    a.status, a.published_at, a.updated_at";

fn article_summary(r: &Row) -> rusqlite::Result<ArticleSummary> {
    // A JSON array, so tags holding commas (or anything else) come back as stored.
    let tags: Option<String> = r.get(6)?;
    let tags: Vec<String> = match tags {
        None => Vec::new(),
        Some(t) => serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
        })?,
    };
    Ok(ArticleSummary {
        id: r.get(0)?,
        slug: r.get(1)?,
        title: r.get(2)?,
        summary: r.get(3)?,
        author: r.get(4)?,
        category: r.get(5)?,
        tags,
        status: r.get(7)?,
        published_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

pub fn list_articles(c: &Connection, f: &ArticleFilter) -> Result<Page<ArticleSummary>> {
    let mut w = Where::default();
    w.eq(
        "a.status",
        &Some(f.status.clone().unwrap_or_else(|| "published".into())),
    );
    w.eq("a.category", &f.category);
    w.eq("a.author", &f.author);
    w.cmp("a.published_at", ">=", &f.from);
    w.cmp("a.published_at", "<=", &f.to);
    if let Some(tag) = &f.tag {
        w.values.push(Value::Text(tag.clone()));
        w.clauses.push(format!(
            "a.id IN (SELECT article_id FROM article_tags WHERE tag = ?{})",
            w.values.len()
        ));
    }
    w.page(
        c,
        ARTICLE_COLS,
        "articles a",
        "a.published_at DESC, a.id DESC",
        &f.paging,
        article_summary,
    )
}

pub fn get_article(c: &Connection, slug: &str) -> Result<Option<Article>> {
    let sql =
        format!("SELECT {ARTICLE_COLS}, a.body, a.created_at FROM articles a WHERE a.slug = ?1");
    Ok(c.prepare_cached(&sql)?
        .query_row([slug], |r| {
            Ok(Article {
                meta: article_summary(r)?,
                body: r.get(10)?,
                created_at: r.get(11)?,
            })
        })
        .optional()?)
}

fn unique_violation(e: rusqlite::Error, what: &str) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            StoreError::Conflict(format!("{what} already exists"))
        }
        _ => e.into(),
    }
}

fn write_tags(tx: &Connection, id: i64, tags: &[String]) -> Result<()> {
    tx.execute("DELETE FROM article_tags WHERE article_id = ?1", [id])?;
    let mut ins =
        tx.prepare_cached("INSERT OR IGNORE INTO article_tags (article_id, tag) VALUES (?1, ?2)")?;
    for t in tags {
        ins.execute(params![id, t])?;
    }
    Ok(())
}

pub fn create_article(c: &mut Connection, i: &ArticleInput) -> Result<Article> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let ts = now();
    tx.execute(
        "INSERT INTO articles (slug, title, summary, body, author, category, status, published_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        params![i.slug, i.title, i.summary, i.body, i.author, i.category, i.status, i.published_at, ts],
    )
    .map_err(|e| unique_violation(e, &format!("an article with slug {:?}", i.slug)))?;
    let id = tx.last_insert_rowid();
    write_tags(&tx, id, &i.tags)?;
    // Read back inside the transaction: the answer is what this write committed,
    // whatever a concurrent delete does next.
    let out = get_article(&tx, &i.slug)?.ok_or_else(|| {
        StoreError::Internal("inserted article not readable in its transaction".into())
    })?;
    tx.commit()?;
    Ok(out)
}

pub fn update_article(c: &mut Connection, slug: &str, i: &ArticleInput) -> Result<Option<Article>> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let id: Option<i64> = tx
        .query_row("SELECT id FROM articles WHERE slug = ?1", [slug], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    tx.execute(
        "UPDATE articles SET slug=?1, title=?2, summary=?3, body=?4, author=?5, category=?6, status=?7, \
         published_at=?8, updated_at=?9 WHERE id=?10",
        params![i.slug, i.title, i.summary, i.body, i.author, i.category, i.status, i.published_at, now(), id],
    )
    .map_err(|e| unique_violation(e, &format!("an article with slug {:?}", i.slug)))?;
    write_tags(&tx, id, &i.tags)?;
    let out = get_article(&tx, &i.slug)?;
    tx.commit()?;
    Ok(out)
}

/// Delete the row of `table` whose `key` column equals `value`; table and column are constants.
pub fn delete(c: &Connection, table: &str, key: &str, value: &dyn ToSql) -> Result<bool> {
    let n = c.execute(&format!("DELETE FROM {table} WHERE {key} = ?1"), [value])?;
    Ok(n > 0)
}

const TREND_COLS: &str =
    "id, name, category, period, score, growth_pct, mentions, summary, updated_at";

fn trend(r: &Row) -> rusqlite::Result<Trend> {
    Ok(Trend {
        id: r.get(0)?,
        name: r.get(1)?,
        category: r.get(2)?,
        period: r.get(3)?,
        score: r.get(4)?,
        growth_pct: r.get(5)?,
        mentions: r.get(6)?,
        summary: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

pub fn list_trends(c: &Connection, f: &TrendFilter) -> Result<Page<Trend>> {
    let mut w = Where::default();
    w.eq("category", &f.category);
    w.eq("name", &f.name);
    // Periods are dates: compare the date part of the (normalised) bounds.
    let day = |s: &String| s.get(..10).unwrap_or(s).to_string();
    w.cmp("period", ">=", &f.from.as_ref().map(day));
    w.cmp("period", "<=", &f.to.as_ref().map(day));
    w.page(
        c,
        TREND_COLS,
        "trends",
        "period DESC, score DESC, id ASC",
        &f.paging,
        trend,
    )
}

fn get_trend(c: &Connection, id: i64) -> Result<Option<Trend>> {
    Ok(
        c.prepare_cached(&format!("SELECT {TREND_COLS} FROM trends WHERE id = ?1"))?
            .query_row([id], trend)
            .optional()?,
    )
}

pub fn create_trend(c: &mut Connection, i: &TrendInput) -> Result<Trend> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let ts = now();
    tx.execute(
        "INSERT INTO trends (name, category, period, score, growth_pct, mentions, summary, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![i.name, i.category, i.period, i.score, i.growth_pct, i.mentions, i.summary, ts],
    )
    .map_err(|e| unique_violation(e, &format!("a trend {:?} for period {}", i.name, i.period)))?;
    let out = get_trend(&tx, tx.last_insert_rowid())?.ok_or_else(|| {
        StoreError::Internal("inserted trend not readable in its transaction".into())
    })?;
    tx.commit()?;
    Ok(out)
}

pub fn update_trend(c: &mut Connection, id: i64, i: &TrendInput) -> Result<Option<Trend>> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = tx
        .execute(
            "UPDATE trends SET name=?1, category=?2, period=?3, score=?4, growth_pct=?5, mentions=?6, summary=?7, \
             updated_at=?8 WHERE id=?9",
            params![i.name, i.category, i.period, i.score, i.growth_pct, i.mentions, i.summary, now(), id],
        )
        .map_err(|e| unique_violation(e, &format!("a trend {:?} for period {}", i.name, i.period)))?;
    if n == 0 {
        return Ok(None);
    }
    let out = get_trend(&tx, id)?;
    tx.commit()?;
    Ok(out)
}

const NEWSLETTER_COLS: &str =
    "id, slug, title, body, status, issued_at, recipients, open_rate, updated_at";

fn newsletter(r: &Row) -> rusqlite::Result<Newsletter> {
    Ok(Newsletter {
        id: r.get(0)?,
        slug: r.get(1)?,
        title: r.get(2)?,
        body: r.get(3)?,
        status: r.get(4)?,
        issued_at: r.get(5)?,
        recipients: r.get(6)?,
        open_rate: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

pub fn list_newsletters(c: &Connection, f: &NewsletterFilter) -> Result<Page<Newsletter>> {
    let mut w = Where::default();
    w.eq("status", &f.status);
    w.cmp("issued_at", ">=", &f.from);
    w.cmp("issued_at", "<=", &f.to);
    w.page(
        c,
        NEWSLETTER_COLS,
        "newsletters",
        "issued_at DESC, id DESC",
        &f.paging,
        newsletter,
    )
}

fn get_newsletter(c: &Connection, id: i64) -> Result<Option<Newsletter>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {NEWSLETTER_COLS} FROM newsletters WHERE id = ?1"
    ))?
    .query_row([id], newsletter)
    .optional()?)
}

pub fn create_newsletter(c: &mut Connection, i: &NewsletterInput) -> Result<Newsletter> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let ts = now();
    tx.execute(
        "INSERT INTO newsletters (slug, title, body, status, issued_at, recipients, open_rate, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![i.slug, i.title, i.body, i.status, i.issued_at, i.recipients, i.open_rate, ts],
    )
    .map_err(|e| unique_violation(e, &format!("a newsletter with slug {:?}", i.slug)))?;
    let out = get_newsletter(&tx, tx.last_insert_rowid())?.ok_or_else(|| {
        StoreError::Internal("inserted newsletter not readable in its transaction".into())
    })?;
    tx.commit()?;
    Ok(out)
}

pub fn update_newsletter(
    c: &mut Connection,
    id: i64,
    i: &NewsletterInput,
) -> Result<Option<Newsletter>> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = tx
        .execute(
            "UPDATE newsletters SET slug=?1, title=?2, body=?3, status=?4, issued_at=?5, recipients=?6, open_rate=?7, \
             updated_at=?8 WHERE id=?9",
            params![i.slug, i.title, i.body, i.status, i.issued_at, i.recipients, i.open_rate, now(), id],
        )
        .map_err(|e| unique_violation(e, &format!("a newsletter with slug {:?}", i.slug)))?;
    if n == 0 {
        return Ok(None);
    }
    let out = get_newsletter(&tx, id)?;
    tx.commit()?;
    Ok(out)
}

fn status_counts(c: &Connection, table: &str) -> Result<StatusCounts> {
    let mut out = StatusCounts::default();
    let mut stmt = c.prepare_cached(&format!(
        "SELECT status, COUNT(*) FROM {table} GROUP BY status"
    ))?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (s, n) = row?;
        out.total += n;
        out.by_status.insert(s, n);
    }
    Ok(out)
}

pub fn dashboard(c: &mut Connection) -> Result<Dashboard> {
    let five = Paging {
        skip: 0,
        limit: 5,
        known_total: None,
    };
    let latest_period: Option<String> =
        c.query_row("SELECT MAX(period) FROM trends", [], |r| r.get(0))?;
    Ok(Dashboard {
        articles: status_counts(c, "articles")?,
        newsletters: status_counts(c, "newsletters")?,
        trends: c.query_row("SELECT COUNT(*) FROM trends", [], |r| r.get(0))?,
        latest_articles: list_articles(
            c,
            &ArticleFilter {
                paging: five.clone(),
                ..Default::default()
            },
        )?
        .items,
        top_trends: list_trends(
            c,
            &TrendFilter {
                paging: five.clone(),
                from: latest_period.clone(),
                to: latest_period,
                ..Default::default()
            },
        )?
        .items,
        latest_newsletters: list_newsletters(
            c,
            &NewsletterFilter {
                paging: five,
                ..Default::default()
            },
        )?
        .items,
    })
}

/// Fill the content tables with `demo()` when they are all empty. Returns whether it seeded.
pub fn seed_if_empty(
    conn: &mut Connection,
    demo: fn() -> crate::store::seed::Demo,
) -> Result<bool> {
    let existing: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM articles) + (SELECT COUNT(*) FROM trends) + (SELECT COUNT(*) FROM newsletters)",
        [],
        |r| r.get(0),
    )?;
    if existing > 0 {
        return Ok(false);
    }
    let d = demo();
    let tx = conn.transaction()?;
    {
        let mut art = tx.prepare(
            "INSERT INTO articles (slug, title, summary, body, author, category, status, published_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        )?;
        let mut tag =
            tx.prepare("INSERT OR IGNORE INTO article_tags (article_id, tag) VALUES (?1, ?2)")?;
        for (a, created) in &d.articles {
            art.execute(params![
                a.slug,
                a.title,
                a.summary,
                a.body,
                a.author,
                a.category,
                a.status,
                a.published_at,
                created
            ])?;
            let id = tx.last_insert_rowid();
            for t in &a.tags {
                tag.execute(params![id, t])?;
            }
        }
        let mut tr = tx.prepare(
            "INSERT INTO trends (name, category, period, score, growth_pct, mentions, summary, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        )?;
        for (t, created) in &d.trends {
            tr.execute(params![
                t.name,
                t.category,
                t.period,
                t.score,
                t.growth_pct,
                t.mentions,
                t.summary,
                created
            ])?;
        }
        let mut nl = tx.prepare(
            "INSERT INTO newsletters (slug, title, body, status, issued_at, recipients, open_rate, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        )?;
        for (n, created) in &d.newsletters {
            nl.execute(params![
                n.slug,
                n.title,
                n.body,
                n.status,
                n.issued_at,
                n.recipients,
                n.open_rate,
                created
            ])?;
        }
    }
    tx.commit()?;
    tracing::info!(
        articles = d.articles.len(),
        newsletters = d.newsletters.len(),
        "seeded demo data"
    );
    Ok(true)
}

pub fn claim_run(c: &Connection, job: &str, tick: &str, replica: &str) -> Result<bool> {
    let n = c.execute(
        "INSERT INTO job_runs (job, tick, replica, started_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (job, tick) DO NOTHING",
        params![job, tick, replica, now()],
    )?;
    Ok(n == 1)
}

pub fn finish_run(
    c: &Connection,
    job: &str,
    tick: &str,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    c.execute(
        "UPDATE job_runs SET finished_at = ?3, outcome = ?4, detail = ?5 WHERE job = ?1 AND tick = ?2",
        params![job, tick, now(), outcome, detail],
    )?;
    Ok(())
}

pub fn recent_runs(c: &Connection, job: &str, limit: u32) -> Result<Vec<JobRun>> {
    let mut stmt = c.prepare_cached(
        "SELECT job, tick, replica, started_at, finished_at, outcome, detail FROM job_runs \
         WHERE job = ?1 ORDER BY tick DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![job, limit], |r| {
            Ok(JobRun {
                job: r.get(0)?,
                tick: r.get(1)?,
                replica: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                outcome: r.get(5)?,
                detail: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
