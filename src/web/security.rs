//! Security headers added to every answer of both faces; the CSP differs per face.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// Security headers for every answer; `csp` differs between API and console.
#[derive(Clone, Copy, Debug)]
pub struct SecurityHeaders {
    pub csp: &'static str,
    /// Send HSTS (only when the public URL is https).
    pub hsts: bool,
}

impl SecurityHeaders {
    /// The API serves JSON only: nothing may be loaded or framed.
    pub const API_CSP: &'static str = "default-src 'none'; frame-ancestors 'none'";
    /// The console serves HTML with inline styles only.
    pub const CONSOLE_CSP: &'static str =
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

    /// Add each header the response does not set itself.
    pub fn apply(&self, h: &mut HeaderMap) {
        let mut set = |name: HeaderName, value: &'static str| {
            h.entry(name).or_insert(HeaderValue::from_static(value));
        };
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(header::X_FRAME_OPTIONS, "DENY");
        set(header::REFERRER_POLICY, "no-referrer");
        set(header::CONTENT_SECURITY_POLICY, self.csp);
        if self.hsts {
            set(
                header::STRICT_TRANSPORT_SECURITY,
                "max-age=31536000; includeSubDomains",
            );
        }
    }
}
