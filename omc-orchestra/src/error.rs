//! The library's one error type, and the one JSON shape every error answer has.

/// Everything that can go wrong in `omc-orchestra`, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input failed validation; `field` names the offending field (camelCase, as on the wire).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field that failed, as it is spelled on the wire.
        field: String,
        /// Why it failed, in words a caller can act on.
        reason: String,
    },
    /// No item of this kind has this id.
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// What was looked up (`service`, `job`, …).
        kind: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// The request conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No healthy instance of a service can serve.
    #[error("no healthy instance of `{service}`")]
    Unavailable {
        /// The service that has nothing to offer.
        service: String,
    },
    /// A bounded buffer or queue is full; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The backing store failed (Redis down, a script error, …).
    #[error("backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] of `kind` for `id`.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// An [`Error::Backend`] from any error of a backing store.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(err))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::backend(err)
    }
}

#[cfg(feature = "redis")]
impl From<redis::ParsingError> for Error {
    fn from(err: redis::ParsingError) -> Self {
        Self::backend(err)
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        Self::backend(err)
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The JSON body of every error answer, whichever server or path makes it (the servers'
/// handlers, the gateway's own answers, its HTTP/1 fast path): `{"error", "message",
/// "details"}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable, machine-readable code (`validation_failed`, `not_found`, …).
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// Specifics, e.g. `{"field": "port", "reason": "..."}` for a validation failure.
    pub details: Vec<serde_json::Value>,
}

impl ErrorBody {
    /// A body with `code` and `message` and no details.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: code.into(),
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// `validation_failed` naming `field` (in the message and in `details`).
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self {
            error: "validation_failed".to_owned(),
            message: format!("{field}: {reason}"),
            details: vec![serde_json::json!({ "field": field, "reason": reason })],
        }
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
