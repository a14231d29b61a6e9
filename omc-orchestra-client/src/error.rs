//! The client's one error type.

use serde_json::Value;

/// Everything that can go wrong talking to the registry, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The input failed local validation, before anything was sent; `field` is spelled as
    /// on the wire (camelCase).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field that failed.
        field: String,
        /// Why it failed.
        reason: String,
    },
    /// The server answered with an error status; the fields come from its JSON error body
    /// `{"error": code, "message": ..., "details": [...]}`.
    #[error("registry answered {status} {error}: {message}")]
    Http {
        /// The HTTP status code (`401`, `404`, `503`, …).
        status: u16,
        /// The machine-readable error code (`validation_failed`, `not_found`, …); derived
        /// from the status when the body is not the server's JSON error.
        error: String,
        /// The human-readable message.
        message: String,
        /// Extra details the server attached, if any.
        details: Vec<Value>,
    },
    /// The request never got an answer: bad URL, connection refused, timeout, ….
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// The server answered success with a body that is not what the API promises.
    #[error("unexpected response body: {0}")]
    Decode(#[source] serde_json::Error),
    /// The client could not sign its JWT.
    #[error("cannot sign the JWT: {0}")]
    Token(#[source] jsonwebtoken::errors::Error),
}

impl ClientError {
    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Build an [`ClientError::Http`] from an error status and the raw body.
    pub(crate) fn from_response(status: reqwest::StatusCode, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let fallback_code = status
            .canonical_reason()
            .unwrap_or("http_error")
            .to_ascii_lowercase()
            .replace([' ', '-'], "_");
        let error = field("error").unwrap_or(fallback_code);
        let message = field("message").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(512).collect::<String>().trim().to_owned()
        });
        let details = match parsed.as_ref().and_then(|v| v.get("details")) {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => vec![other.clone()],
        };
        Self::Http {
            status: status.as_u16(),
            error,
            message,
            details,
        }
    }
}

impl From<omc_orchestra::Error> for ClientError {
    fn from(err: omc_orchestra::Error) -> Self {
        match err {
            omc_orchestra::Error::Invalid { field, reason } => Self::Invalid { field, reason },
            // Validation only ever reports `Invalid`; anything else is still the input's fault.
            other => Self::Invalid {
                field: "registration".into(),
                reason: other.to_string(),
            },
        }
    }
}

/// The client's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    /// The parts of an [`ClientError::Http`] (with the number of details); anything else
    /// fails the test.
    fn http_parts(err: ClientError) -> (u16, String, String, usize) {
        match err {
            ClientError::Http {
                status,
                error,
                message,
                details,
            } => (status, error, message, details.len()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_the_servers_error_body() {
        let body = br#"{"error":"validation_failed","message":"port: must be between 1 and 65535","details":[{"field":"port"}]}"#;
        let (status, error, message, details) =
            http_parts(ClientError::from_response(StatusCode::BAD_REQUEST, body));
        assert_eq!(status, 400);
        assert_eq!(error, "validation_failed");
        assert_eq!(message, "port: must be between 1 and 65535");
        assert_eq!(details, 1);
    }

    #[test]
    fn falls_back_to_the_status_when_the_body_is_not_json() {
        let (status, error, message, details) = http_parts(ClientError::from_response(
            StatusCode::UNAUTHORIZED,
            b"nope",
        ));
        assert_eq!(status, 401);
        assert_eq!(error, "unauthorized");
        assert_eq!(message, "nope");
        assert_eq!(details, 0);
    }
}
