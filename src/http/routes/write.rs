//! Editor writes (articles, trends, newsletters) and the admin audit view; each
//! needs an API key (checked first), and each outcome of an authenticated
//! request, success or refusal, lands in the audit trail.

use crate::http::auth::{self, Actor, Role};
use crate::http::{AppState, params};
use crate::store::{ArticleInput, ContentStore, NewsletterInput, TrendInput, valid_slug};
use crate::web::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::net::SocketAddr;

/// True when the body stopped arriving (the body-read timeout fired).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Is `v` a JSON media type (`application/json` or `application/*+json`)?
fn is_json(v: &HeaderValue) -> bool {
    let Ok(v) = v.to_str() else { return false };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json") && sub.len() > 5)
}

/// Read a JSON body only after the caller authenticated the request: the
/// headers are checked first (one JSON Content-Type, no Content-Encoding, a
/// declared length within server.body_limit_bytes: 413 at once, so nothing is
/// read or buffered for a request that will be refused), then the body is read
/// within server.body_read_timeout_secs in total (408 otherwise).
async fn read_json<T: serde::de::DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    payload: Body,
) -> Result<T, ApiError> {
    let s = &st.settings.server;
    let limit = s.body_limit_bytes as usize;
    let types: Vec<&HeaderValue> = headers.get_all(header::CONTENT_TYPE).iter().collect();
    if types.len() != 1 || !is_json(types[0]) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with exactly one 'Content-Type: application/json' header",
        ));
    }
    if headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "compressed request bodies (Content-Encoding) are not accepted; send plain JSON",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let deadline = std::time::Duration::from_secs(s.body_read_timeout_secs);
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(payload, limit)).await {
        Err(_) => return Err(body_timeout()),
        Ok(Err(e)) if timed_out(&e) => return Err(body_timeout()),
        Ok(Err(e)) if too_long(&e) => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(ApiError::bad_request(format!(
                "the request body could not be read: {e}"
            )));
        }
        Ok(Ok(b)) => b,
    };
    body(Json::<T>::from_bytes(&bytes))
}

fn too_long(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than server.body_limit_bytes allows",
    )
}

fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body did not arrive within server.body_read_timeout_secs; send it without pauses",
    )
}

/// Unwrap a JSON body, turning a rejection into our error with a clear message.
fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(v)| v).map_err(|r| {
        if timed_out(&r) {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body stopped arriving for longer than server.body_read_timeout_secs; send it without pauses",
            );
        }
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            _ => "bad_request",
        };
        let hint = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "; send 'Content-Type: application/json'"
        } else {
            ""
        };
        ApiError::new(status, code, format!("{}{hint}", r.body_text()))
    })
}

fn id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "a {what} id is a positive whole number, got {:?}",
            raw.chars().take(40).collect::<String>()
        ))
    })
}

fn slug(raw: &str) -> Result<(), ApiError> {
    if valid_slug(raw) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "an article slug is 1 to 120 characters of a-z, 0-9 and '-'",
        ))
    }
}

/// Authenticate an editor first, so anonymous clients learn nothing about validation.
async fn editor(
    st: &AppState,
    headers: &HeaderMap,
    addr: SocketAddr,
    action: &'static str,
    target: &str,
) -> Result<Actor, ApiError> {
    auth::require(st, headers, addr, Role::Editor, action, target.to_string()).await
}

/// Run the write on a blocking thread and invalidate the cache.
async fn write<T, F>(st: &AppState, target: &str, created: bool, f: F) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&dyn ContentStore) -> Result<Option<T>, ApiError> + Send + 'static,
{
    let out = st.with_store(f).await??;
    let Some(out) = out else {
        return Err(ApiError::not_found(format!("{target} does not exist")));
    };
    st.cache.invalidate();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)).into_response())
}

/// Audit what became of an authenticated request and pass the answer on.
async fn finish(
    st: &AppState,
    actor: &Actor,
    action: &'static str,
    target: String,
    res: Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    let outcome = auth::outcome(&res);
    auth::audit_outcome(st, actor, action, target, outcome).await;
    res
}

#[derive(Serialize)]
struct Deleted {
    deleted: String,
}

pub async fn create_article(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    payload: Body,
) -> Result<Response, ApiError> {
    let action = "article.create";
    let actor = editor(&st, &headers, addr, action, "articles").await?;
    let mut target = "articles".to_string();
    let res = async {
        let mut input: ArticleInput = read_json(&st, &headers, payload).await?;
        input.validate().map_err(ApiError::bad_request)?;
        target = format!("article {}", input.slug);
        write(&st, &target, true, move |s| {
            Ok(Some(s.create_article(&input)?))
        })
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

pub async fn update_article(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(old): Path<String>,
    headers: HeaderMap,
    payload: Body,
) -> Result<Response, ApiError> {
    let action = "article.update";
    let target = format!("article {}", clip(&old));
    let actor = editor(&st, &headers, addr, action, &target).await?;
    let res = async {
        slug(&old)?;
        let mut input: ArticleInput = read_json(&st, &headers, payload).await?;
        input.validate().map_err(ApiError::bad_request)?;
        write(&st, &target, false, move |s| {
            Ok(s.update_article(&old, &input)?)
        })
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

pub async fn delete_article(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(old): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let action = "article.delete";
    let target = format!("article {}", clip(&old));
    let actor = editor(&st, &headers, addr, action, &target).await?;
    let res = async {
        slug(&old)?;
        let t = target.clone();
        write(&st, &target, false, move |s| {
            Ok(s.delete_article(&old)?.then_some(Deleted { deleted: t }))
        })
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

pub async fn create_trend(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    payload: Body,
) -> Result<Response, ApiError> {
    let action = "trend.create";
    let actor = editor(&st, &headers, addr, action, "trends").await?;
    let mut target = "trends".to_string();
    let res = async {
        let mut input: TrendInput = read_json(&st, &headers, payload).await?;
        input.validate().map_err(ApiError::bad_request)?;
        target = format!("trend {} {}", input.name, input.period);
        write(&st, &target, true, move |s| {
            Ok(Some(s.create_trend(&input)?))
        })
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

pub async fn update_trend(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    payload: Body,
) -> Result<Response, ApiError> {
    let action = "trend.update";
    let target = format!("trend {}", clip(&raw));
    let actor = editor(&st, &headers, addr, action, &target).await?;
    let res = async {
        let id = id(&raw, "trend")?;
        let mut input: TrendInput = read_json(&st, &headers, payload).await?;
        input.validate().map_err(ApiError::bad_request)?;
        write(
            &st,
            &target,
            false,
            move |s| Ok(s.update_trend(id, &input)?),
        )
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

pub async fn delete_trend(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let action = "trend.delete";
    let target = format!("trend {}", clip(&raw));
    let actor = editor(&st, &headers, addr, action, &target).await?;
    let res = async {
        let id = id(&raw, "trend")?;
        let t = target.clone();
        write(&st, &target, false, move |s| {
            Ok(s.delete_trend(id)?.then_some(Deleted { deleted: t }))
        })
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

pub async fn create_newsletter(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    payload: Body,
) -> Result<Response, ApiError> {
    let action = "newsletter.create";
    let actor = editor(&st, &headers, addr, action, "newsletters").await?;
    let mut target = "newsletters".to_string();
    let res = async {
        let mut input: NewsletterInput = read_json(&st, &headers, payload).await?;
        input.validate().map_err(ApiError::bad_request)?;
        target = format!("newsletter {}", input.slug);
        write(&st, &target, true, move |s| {
            Ok(Some(s.create_newsletter(&input)?))
        })
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

pub async fn update_newsletter(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    payload: Body,
) -> Result<Response, ApiError> {
    let action = "newsletter.update";
    let target = format!("newsletter {}", clip(&raw));
    let actor = editor(&st, &headers, addr, action, &target).await?;
    let res = async {
        let id = id(&raw, "newsletter")?;
        let mut input: NewsletterInput = read_json(&st, &headers, payload).await?;
        input.validate().map_err(ApiError::bad_request)?;
        write(&st, &target, false, move |s| {
            Ok(s.update_newsletter(id, &input)?)
        })
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

pub async fn delete_newsletter(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let action = "newsletter.delete";
    let target = format!("newsletter {}", clip(&raw));
    let actor = editor(&st, &headers, addr, action, &target).await?;
    let res = async {
        let id = id(&raw, "newsletter")?;
        let t = target.clone();
        write(&st, &target, false, move |s| {
            Ok(s.delete_newsletter(id)?.then_some(Deleted { deleted: t }))
        })
        .await
    }
    .await;
    finish(&st, &actor, action, target, res).await
}

/// A path segment as recorded in the audit trail: at most 80 characters.
fn clip(raw: &str) -> String {
    raw.chars().take(80).collect()
}

/// `GET /api/audit?limit=N` (admin): the newest audit entries.
pub async fn audit_log(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    // Authenticate first: anonymous clients learn nothing about the parameters.
    auth::require(
        &st,
        &headers,
        addr,
        Role::Admin,
        "audit.read",
        "audit log".into(),
    )
    .await?;
    let q = params::Query::parse(q.as_deref(), &["skip", "limit"])?;
    let limit = q.paging()?.limit as u32;
    let rows = st.with_store(move |s| s.recent_audit(limit)).await??;
    Ok(Json(rows).into_response())
}
