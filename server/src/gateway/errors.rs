//! Errors as the OCI distribution spec writes them: a status and
//! `{"errors":[{"code","message","detail"}]}`, with the spec's codes. The
//! only place that knows them.

use std::time::Duration;

use http::{HeaderValue, StatusCode};

use super::route::RouteError;
use crate::pulls::PullError;

/// The realm of the Basic challenge.
pub const CHALLENGE: &str = "Basic realm=\"pullpass\"";

/// One distribution error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The distribution code (`MANIFEST_UNKNOWN`).
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
    /// When to retry (429).
    pub retry_after: Option<Duration>,
    /// The `Content-Range` of a 416.
    pub content_range: Option<String>,
}

impl GatewayError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, content_range: None }
    }

    /// 401: credentials are needed (or were not valid).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// 405: the gateway is read-only.
    pub fn method_not_allowed(method: &http::Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!("{method} is not supported: the pullpass gateway is read-only (GET and HEAD)"),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let mut detail = serde_json::Map::new();
        if let Some(wait) = self.retry_after {
            detail.insert("retry_after_seconds".into(), wait.as_secs().max(1).into());
        }
        serde_json::json!({"errors": [{"code": self.code, "message": self.message, "detail": detail}]}).to_string()
    }

    /// Headers the error needs: the challenge on 401, `Retry-After` on 429.
    pub fn headers(&self) -> Vec<(http::HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.push((http::header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE)));
        }
        if let Some(wait) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            headers.push((http::header::RETRY_AFTER, value));
        }
        if let Some(range) = self.content_range.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
            headers.push((http::header::CONTENT_RANGE, range));
        }
        headers
    }
}

impl From<PullError> for GatewayError {
    fn from(error: PullError) -> Self {
        match error {
            PullError::Unauthenticated(m) => Self::unauthorized(m),
            PullError::Denied(m) => Self::new(StatusCode::FORBIDDEN, "DENIED", m),
            PullError::NameUnknown(m) => Self::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", m),
            PullError::ManifestUnknown(m) => Self::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", m),
            PullError::BlobUnknown(m) => Self::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", m),
            PullError::Invalid { code, message } => Self::new(StatusCode::BAD_REQUEST, code, message),
            PullError::RateLimited { message, retry_after } => Self {
                retry_after: Some(retry_after),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
            },
            PullError::RangeNotSatisfiable(range) => Self {
                content_range: Some(range.clone()),
                ..Self::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "UNSUPPORTED",
                    format!("the range asked is not satisfiable ({range})"),
                )
            },
            PullError::Unavailable(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", m),
            PullError::BadUpstream(m) => Self::new(StatusCode::BAD_GATEWAY, "UNKNOWN", m),
            PullError::Internal(m) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", m),
        }
    }
}

impl From<RouteError> for GatewayError {
    fn from(error: RouteError) -> Self {
        match error {
            RouteError::Unsupported(m) => Self::new(StatusCode::NOT_FOUND, "UNSUPPORTED", m),
            RouteError::NoUpstream(m) => Self::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", m),
            RouteError::Invalid(code, m) => Self::new(StatusCode::BAD_REQUEST, code, m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_the_distribution_json_with_the_right_headers() {
        let error = GatewayError::from(PullError::RateLimited {
            message: "slow down".into(),
            retry_after: Duration::from_secs(7),
        });
        assert_eq!((error.status.as_u16(), error.code), (429, "TOOMANYREQUESTS"));
        let body: serde_json::Value = serde_json::from_str(&error.body()).unwrap();
        assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
        assert_eq!(body["errors"][0]["message"], "slow down");
        assert_eq!(body["errors"][0]["detail"]["retry_after_seconds"], 7);
        assert!(error.headers().iter().any(|(n, v)| n == http::header::RETRY_AFTER && v == "7"));
        let unauthorized = GatewayError::unauthorized("who are you");
        assert!(unauthorized.headers().iter().any(|(n, v)| n == http::header::WWW_AUTHENTICATE && v == CHALLENGE));
        let cases = [
            (PullError::Denied(String::new()), 403, "DENIED"),
            (PullError::NameUnknown(String::new()), 404, "NAME_UNKNOWN"),
            (PullError::ManifestUnknown(String::new()), 404, "MANIFEST_UNKNOWN"),
            (PullError::BlobUnknown(String::new()), 404, "BLOB_UNKNOWN"),
            (PullError::Unavailable(String::new()), 503, "UNAVAILABLE"),
        ];
        for (pull, status, code) in cases {
            let error = GatewayError::from(pull);
            assert_eq!((error.status.as_u16(), error.code), (status, code));
        }
    }
}
