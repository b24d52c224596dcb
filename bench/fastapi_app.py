"""The peer for bench/http.sh: a minimal FastAPI app shaped like the original
backend. /health answers directly; /api/optimized/articles opens SQLite per
request, as the original did, and reads the same database aica serves."""
import os
import sqlite3
from datetime import datetime, timezone

from fastapi import FastAPI, Query

DB = os.environ["AICA_BENCH_DB"]
app = FastAPI()


@app.get("/health")
async def health():
    return {"status": "healthy", "timestamp": datetime.now(timezone.utc).isoformat()}


@app.get("/api/optimized/articles")
def articles(skip: int = Query(0, ge=0), limit: int = Query(20, ge=1, le=100)):
    conn = sqlite3.connect(DB)
    try:
        conn.row_factory = sqlite3.Row
        total = conn.execute("SELECT COUNT(*) FROM articles WHERE status = 'published'").fetchone()[0]
        rows = conn.execute(
            "SELECT a.id, a.slug, a.title, a.summary, a.author, a.category, a.status, a.published_at, "
            "a.updated_at, (SELECT group_concat(tag, ',') FROM article_tags t WHERE t.article_id = a.id) AS tags "
            "FROM articles a WHERE a.status = 'published' ORDER BY a.published_at DESC, a.id DESC LIMIT ? OFFSET ?",
            (limit, skip),
        ).fetchall()
        items = []
        for r in rows:
            item = dict(r)
            item["tags"] = sorted(item["tags"].split(",")) if item["tags"] else []
            items.append(item)
        return {"items": items, "total": total, "skip": skip, "limit": limit}
    finally:
        conn.close()
