//! The demo data set: thousands of articles, trends and newsletters about the
//! TypeScript ecosystem, generated deterministically so every fresh install matches.

use super::model::{ArticleInput, NewsletterInput, TrendInput};
use crate::util::fmt_time;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::{Duration, OffsetDateTime};

pub const ARTICLES: usize = 6000;
pub const NEWSLETTERS: usize = 400;
const WEEKS: i64 = 104;

const TOPICS: [&str; 24] = [
    "TypeScript",
    "Deno",
    "Bun",
    "Node.js",
    "React",
    "Vue",
    "Svelte",
    "Angular",
    "Next.js",
    "Astro",
    "Vite",
    "esbuild",
    "Vitest",
    "Playwright",
    "tRPC",
    "Zod",
    "Prisma",
    "Drizzle",
    "Effect",
    "Hono",
    "SolidJS",
    "Remix",
    "Turborepo",
    "Biome",
];
const CATEGORIES: [&str; 8] = [
    "language",
    "runtime",
    "framework",
    "tooling",
    "testing",
    "database",
    "performance",
    "security",
];
const AUTHORS: [&str; 12] = [
    "Aiko Tanaka",
    "Kenji Sato",
    "Mina Suzuki",
    "Haruto Ito",
    "Yui Watanabe",
    "Sora Nakamura",
    "Riku Kobayashi",
    "Emi Kato",
    "Daiki Yamamoto",
    "Nao Yoshida",
    "Alex Morgan",
    "Sam Rivera",
];
const ANGLES: [&str; 10] = [
    "What's new in",
    "A practical guide to",
    "Migrating to",
    "Benchmarking",
    "Five pitfalls of",
    "Deep dive:",
    "Why teams choose",
    "Testing strategies for",
    "Securing apps built with",
    "The state of",
];
const SENTENCES: [&str; 12] = [
    "The release tightens type inference across generic boundaries and removes a class of false positives.",
    "Teams report shorter build times after moving their bundling step to a native toolchain.",
    "Adoption is strongest in mid-sized codebases where incremental migration is possible.",
    "The maintainers published a migration guide with codemods for the most common patterns.",
    "Benchmarks on a 2-core machine show cold starts dropping well under a hundred milliseconds.",
    "Edge deployments benefit most, since bundle size and startup cost dominate there.",
    "Runtime validation at API boundaries keeps the static types honest in production.",
    "The ecosystem around it has matured: plugins, editor support and documentation have caught up.",
    "Critics point out that the abstraction leaks when streaming responses are involved.",
    "Security advisories this quarter centred on prototype pollution in transitive dependencies.",
    "A monorepo layout with shared configuration keeps the tooling consistent across packages.",
    "Type-level tests catch regressions in public APIs before users ever notice them.",
];

fn paragraph(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| SENTENCES[rng.random_range(0..SENTENCES.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn slugify(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The demo data set, ready for any store to insert: each row with its creation time.
pub struct Demo {
    pub articles: Vec<(ArticleInput, String)>,
    pub trends: Vec<(TrendInput, String)>,
    pub newsletters: Vec<(NewsletterInput, String)>,
}

/// Generate the demo data set (deterministic apart from "now", its end).
pub fn demo() -> Demo {
    let mut rng = StdRng::seed_from_u64(0x0A1C_A5E5);
    let end = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut articles = Vec::with_capacity(ARTICLES);
    for i in 0..ARTICLES {
        let topic = TOPICS[rng.random_range(0..TOPICS.len())];
        let angle = ANGLES[rng.random_range(0..ANGLES.len())];
        let title = format!("{angle} {topic} ({})", i + 1);
        let created = end - Duration::minutes(rng.random_range(0..(WEEKS * 7 * 24 * 60)));
        let status = match rng.random_range(0..20) {
            0 => "draft",
            1 => "archived",
            _ => "published",
        };
        let published = (status != "draft").then(|| fmt_time(created));
        let body = (0..rng.random_range(3..7))
            .map(|_| paragraph(&mut rng, 4))
            .collect::<Vec<_>>()
            .join("\n\n");
        let summary = paragraph(&mut rng, 2);
        let author = AUTHORS[rng.random_range(0..AUTHORS.len())];
        let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        let mut tags = vec![topic.to_lowercase()];
        for _ in 0..rng.random_range(1..4) {
            tags.push(TOPICS[rng.random_range(0..TOPICS.len())].to_lowercase());
        }
        tags.sort();
        tags.dedup();
        let input = ArticleInput {
            slug: slugify(&title),
            title,
            summary,
            body,
            author: author.into(),
            category: category.into(),
            tags,
            status: status.into(),
            published_at: published,
        };
        articles.push((input, fmt_time(created - Duration::hours(2))));
    }
    let mut trends = Vec::new();
    let monday = end.date() - Duration::days(end.weekday().number_days_from_monday() as i64);
    for (t, topic) in TOPICS.iter().enumerate() {
        let mut score: f64 = rng.random_range(20.0..80.0);
        for w in (0..WEEKS).rev() {
            let prev = score;
            score = (score + rng.random_range(-4.0..4.5)).clamp(1.0, 100.0);
            let period = monday - Duration::weeks(w);
            let input = TrendInput {
                name: topic.to_string(),
                category: CATEGORIES[t % CATEGORIES.len()].into(),
                period: period.to_string(),
                score: (score * 10.0).round() / 10.0,
                growth_pct: ((score - prev) / prev * 1000.0).round() / 10.0,
                mentions: rng.random_range(50..5000),
                summary: format!(
                    "{topic}: {}",
                    SENTENCES[rng.random_range(0..SENTENCES.len())]
                ),
            };
            trends.push((input, fmt_time(period.midnight().assume_utc())));
        }
    }
    let mut newsletters = Vec::with_capacity(NEWSLETTERS);
    for i in 0..NEWSLETTERS {
        let issued = end - Duration::days(((NEWSLETTERS - i) as i64 - 2) * 2);
        let status = if issued > end {
            "scheduled"
        } else if i % 50 == 7 {
            "draft"
        } else {
            "sent"
        };
        let input = NewsletterInput {
            slug: format!("weekly-digest-{}", i + 1),
            title: format!("AICA Weekly #{}: {}", i + 1, TOPICS[i % TOPICS.len()]),
            body: (0..4)
                .map(|_| paragraph(&mut rng, 5))
                .collect::<Vec<_>>()
                .join("\n\n"),
            status: status.into(),
            issued_at: Some(fmt_time(issued)),
            recipients: rng.random_range(800..12_000),
            open_rate: (rng.random_range(0.18..0.62) * 1000.0f64).round() / 1000.0,
        };
        newsletters.push((input, fmt_time(issued - Duration::days(3))));
    }
    Demo {
        articles,
        trends,
        newsletters,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugify_makes_valid_slugs() {
        let s = super::slugify("What's new in Next.js (12)");
        assert_eq!(s, "what-s-new-in-next-js-12");
        assert!(crate::store::valid_slug(&s));
    }
}
