//! The one error shape of the HTTP API (design 3.2):
//! `{"error": {"code", "message", "field"?}}`, mapped once from the domain's
//! [`ChatError`] and from every way a request can be malformed.
//!
//! Codes beyond the design's list appear only where HTTP itself has a more
//! precise status than 400: `PAYLOAD_TOO_LARGE` (413),
//! `UNSUPPORTED_MEDIA_TYPE` (415), `METHOD_NOT_ALLOWED` (405) and
//! `SERVICE_UNAVAILABLE` (503, a dependency is down: retry later).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use io_domain::error::wait_secs;
use io_domain::types::Invalid;
use io_domain::{ChatError, StoreError};
use io_protocol::ErrorBody;

/// An error answer: status, design code, a message safe to show, the field
/// at fault and, for `RATE_LIMITED`, when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Whole seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// `VALIDATION_ERROR` naming the field at fault.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        HttpError {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
        }
    }

    /// `VALIDATION_ERROR` about the request as a whole (not one field).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "not found")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            message,
        )
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        HttpError {
            retry_after: Some(wait_secs(retry_after)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "too many requests, try again in {} s",
                    wait_secs(retry_after)
                ),
            )
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "something went wrong on our side",
        )
    }

    /// The design code and a neutral message for a bare status, for
    /// responses produced below the handlers (the router, middleware).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status.as_u16() {
            400 => ("VALIDATION_ERROR", "bad request"),
            401 => ("UNAUTHORIZED", "not authenticated"),
            403 => ("FORBIDDEN", "forbidden"),
            404 => ("NOT_FOUND", "not found"),
            405 => ("METHOD_NOT_ALLOWED", "method not allowed"),
            409 => ("CONFLICT", "conflict"),
            413 => ("PAYLOAD_TOO_LARGE", "request body too large"),
            415 => (
                "UNSUPPORTED_MEDIA_TYPE",
                "expected Content-Type: application/json",
            ),
            429 => ("RATE_LIMITED", "too many requests, try again later"),
            503 => ("SERVICE_UNAVAILABLE", "temporarily unavailable, try again"),
            s if s < 500 => ("VALIDATION_ERROR", "bad request"),
            _ => ("INTERNAL_ERROR", "something went wrong on our side"),
        };
        Self::new(status, code, message)
    }
}

impl From<ChatError> for HttpError {
    fn from(e: ChatError) -> Self {
        let status = match &e {
            ChatError::Invalid(_) => StatusCode::BAD_REQUEST,
            ChatError::Unauthorized => StatusCode::UNAUTHORIZED,
            ChatError::Forbidden(_) => StatusCode::FORBIDDEN,
            ChatError::NotFound => StatusCode::NOT_FOUND,
            ChatError::Conflict(_) => StatusCode::CONFLICT,
            ChatError::RateLimited { retry_after } => return HttpError::rate_limited(*retry_after),
            ChatError::Unavailable(why) => {
                tracing::warn!(error = %why, "dependency unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        HttpError {
            field: e.field().map(str::to_owned),
            ..HttpError::new(status, e.code(), e.public_message())
        }
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        ChatError::from(e).into()
    }
}

impl From<Invalid> for HttpError {
    fn from(e: Invalid) -> Self {
        HttpError::invalid(e.field, e.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({
            "error": ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            }
        }));
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) type HttpResult<T> = Result<T, HttpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_errors_map_to_design_statuses() {
        let cases = [
            (ChatError::NotFound, 404, "NOT_FOUND"),
            (ChatError::Conflict("x"), 409, "CONFLICT"),
            (ChatError::Unauthorized, 401, "UNAUTHORIZED"),
            (ChatError::Forbidden("x"), 403, "FORBIDDEN"),
            (
                ChatError::Unavailable("db".into()),
                503,
                "SERVICE_UNAVAILABLE",
            ),
            (
                Invalid::new("content", "must not be empty").into(),
                400,
                "VALIDATION_ERROR",
            ),
        ];
        for (e, status, code) in cases {
            let h = HttpError::from(e);
            assert_eq!(h.status.as_u16(), status);
            assert_eq!(h.code, code);
        }
        let h = HttpError::from(ChatError::from(Invalid::new("content", "bad")));
        assert_eq!(h.field.as_deref(), Some("content"));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(wait_secs(Duration::ZERO), 1);
        assert_eq!(wait_secs(Duration::from_millis(1)), 1);
        assert_eq!(wait_secs(Duration::from_secs(2)), 2);
        assert_eq!(wait_secs(Duration::from_millis(2001)), 3);
        let h = HttpError::from(ChatError::RateLimited {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(h.retry_after, Some(2));
        assert_eq!(h.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h.message, "too many requests, try again in 2 s");
        // The socket's `error` says the same in its message.
        let e = ChatError::RateLimited {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(e.public_message(), "rate limited, try again in 2 s");
    }
}
