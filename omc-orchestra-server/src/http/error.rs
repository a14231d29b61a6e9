//! The one mapping from errors to HTTP answers: a status and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use omc_orchestra::access::Denied;
use omc_orchestra::Error;

pub use omc_orchestra::ErrorBody;

/// An error answer: status plus [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, `code` and `message` and no details.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    /// 400 `validation_failed` naming `field`.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody::invalid(field, reason),
        }
    }

    /// 404 for a path nothing serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )
    }

    /// 401 with `reason`.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", reason)
    }

    /// 403: the caller's token does not allow this; `field` names what it lacks
    /// (`scope`) or the input it may not touch (`name`, `serviceId`).
    pub fn forbidden(field: &str, denied: &Denied) -> Self {
        let reason = denied.to_string();
        let mut error = Self::new(StatusCode::FORBIDDEN, "forbidden", reason.clone());
        error.body.details = vec![match denied {
            Denied::MissingScope(scope) => {
                serde_json::json!({ "field": field, "reason": reason, "scope": scope.as_str() })
            }
            Denied::OtherService { .. } => serde_json::json!({ "field": field, "reason": reason }),
        }];
        error
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid { field, reason } => Self::invalid(&field, reason),
            Error::NotFound { kind, id } => {
                let mut e = Self::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("{kind} `{id}` not found"),
                );
                e.body.details = vec![serde_json::json!({ "kind": kind, "id": id })];
                e
            }
            Error::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            Error::Unavailable { service } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("no healthy instance of `{service}`"),
            ),
            Error::Overloaded(message) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            }
            other => {
                // Backend details stay in the logs.
                tracing::error!(error = %other, "backend failure");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backend_unavailable",
                    "the backing store is unavailable; retry shortly",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
