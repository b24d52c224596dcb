//! Our JSON error shape for the answers hyper writes itself when it cannot
//! parse a request head (400 bad request line or header, 414 URI too long,
//! 431 header too large). Those never reach the router, so the connection's
//! writer recognises them and replaces them: every 4xx of ours has a JSON body,
//! so a 4xx head with `content-length: 0` can only be hyper's.

use super::error::error_body;
use super::security::SecurityHeaders;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose automatic parse-error answers are rewritten.
pub struct JsonParseErrors<T> {
    inner: T,
    /// Replacement being written, how much of it is out, and the length of the
    /// original write it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> JsonParseErrors<T> {
    pub fn new(inner: T) -> Self {
        JsonParseErrors {
            inner,
            pending: None,
        }
    }
}

/// The replacement for `buf` if it is one of hyper's automatic error answers.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(buf).ok()?;
    let (status, reason) = match head.get(..12)? {
        "HTTP/1.1 400" | "HTTP/1.0 400" => (400, "Bad Request"),
        "HTTP/1.1 414" | "HTTP/1.0 414" => (414, "URI Too Long"),
        "HTTP/1.1 431" | "HTTP/1.0 431" => (431, "Request Header Fields Too Large"),
        _ => return None,
    };
    if !head.ends_with("\r\n\r\n") || !head.to_ascii_lowercase().contains("content-length: 0\r\n") {
        return None;
    }
    let (code, message) = match status {
        414 => (
            "uri_too_long",
            "the request target is too long; send fewer or shorter query parameters",
        ),
        431 => (
            "headers_too_large",
            "the request headers are too large; send fewer or smaller headers",
        ),
        _ => (
            "bad_request",
            "the request line or a header is malformed (RFC 9112); fix the client",
        ),
    };
    metrics::counter!("aica_http_parse_errors_total").increment(1);
    let rid = format!("{:016x}", rand::random::<u64>());
    let body = error_body(code, message, Some(&rid)).to_string();
    let mut headers = axum::http::HeaderMap::new();
    SecurityHeaders {
        csp: SecurityHeaders::API_CSP,
        hsts: false,
    }
    .apply(&mut headers);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {rid}\r\n",
        body.len()
    );
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none()
            && buf.len() < 512
            && let Some(r) = replacement(buf)
        {
            this.pending = Some((r, 0, buf.len()));
        }
        if let Some((data, off, original)) = &mut this.pending {
            while *off < data.len() {
                *off += ready!(Pin::new(&mut this.inner).poll_write(cx, &data[*off..]))?;
            }
            let n = *original;
            this.pending = None;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_4xx_heads_are_replaced() {
        let auto = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let r = String::from_utf8(replacement(auto).unwrap()).unwrap();
        assert!(r.starts_with("HTTP/1.1 414 "), "{r}");
        assert!(
            r.contains("\"uri_too_long\"") && r.contains("x-request-id: "),
            "{r}"
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 80\r\n\r\n";
        assert!(replacement(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(ok).is_none());
    }
}
