//! Control-plane authorization: which scope each route needs, and the layer that checks
//! the caller's service token against it.
//!
//! The table is one place for every server, so a route nobody listed needs `admin`
//! rather than nothing: a new write endpoint is closed until someone grants it.

use super::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use omc_orchestra::access::{Caller, Rejected, Scope, TokenVerifier};
use std::sync::Arc;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (liveness, metrics, the API description, the dashboard's static files).
    Public,
    /// A token granting this scope (or `admin`).
    Needs(Scope),
}

/// The access `method` on the matched route `route` needs, for every server's routes.
pub fn required(method: &Method, route: &str) -> Access {
    use Access::{Needs, Public};
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        "/health" | "/health/ready" | "/metrics" | "/openapi.json" => Public,
        page if crate::dashboard::is_page(page) => Public,
        "/registry/register" | "/registry/heartbeat/{service_id}" if !read => {
            Needs(Scope::RegistryWrite)
        }
        "/registry/services/{id}" if *method == Method::DELETE => Needs(Scope::RegistryWrite),
        "/events" | "/events/replay" if !read => Needs(Scope::EventsPublish),
        "/jobs" | "/schedules" if *method == Method::POST => Needs(Scope::JobsWrite),
        "/jobs/{id}" | "/schedules/{id}" if *method == Method::DELETE => Needs(Scope::JobsWrite),
        // A worker's own calls: taking jobs and reporting on the ones it holds.
        "/jobs/lease"
        | "/jobs/{id}/complete"
        | "/jobs/{id}/fail"
        | "/jobs/{id}/progress"
        | "/jobs/{id}/extend"
            if *method == Method::POST =>
        {
            Needs(Scope::JobsWrite)
        }
        "/logs" | "/v1/logs" if *method == Method::POST => Needs(Scope::LogsWrite),
        gateway if gateway.starts_with("/gateway/") => Needs(Scope::Admin),
        _ if read => Needs(Scope::Read),
        // Operator actions such as `POST /jobs/retry-failed`, and anything not listed.
        _ => Needs(Scope::Admin),
    }
}

/// The layer's state: the verifier when the control plane has credentials.
#[derive(Clone, Debug)]
pub struct Guard {
    verifier: Option<Arc<TokenVerifier>>,
}

impl Guard {
    /// Check tokens with `verifier`; every caller may do everything when `None`.
    pub fn new(verifier: Option<Arc<TokenVerifier>>) -> Self {
        Self { verifier }
    }

    /// The caller a request's credentials stand for: its `Authorization: Bearer` token,
    /// or on `/ws` (a browser cannot set headers there) a `token` query parameter.
    pub fn caller(&self, req: &Request) -> Result<Caller, ApiError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Caller::unauthenticated());
        };
        let token = bearer(req.headers().get(header::AUTHORIZATION))?
            .or_else(|| query_token(req))
            .ok_or_else(|| unauthorized(Rejected("missing bearer token".into())))?;
        verifier.verify(&token).map_err(unauthorized)
    }
}

fn unauthorized(rejected: Rejected) -> ApiError {
    ApiError::unauthorized(rejected.0)
}

/// The token of an `Authorization: Bearer` header; `None` when there is no header.
fn bearer(value: Option<&HeaderValue>) -> Result<Option<String>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })
        .map(Some)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

fn query_token(req: &Request) -> Option<String> {
    if req.uri().path() != "/ws" {
        return None;
    }
    form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, token)| token.into_owned())
}

/// The middleware: public routes pass; others need a token with the route's scope. The
/// verified [`Caller`] rides on the request for handlers that check more (whose
/// instances a `registry:write` token may change).
pub async fn authorize(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    // A preflight carries no credentials by design (the CORS layer answers it).
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let access = match req.extensions().get::<MatchedPath>() {
        Some(route) => required(req.method(), route.as_str()),
        // Unrouted: the 404 answer holds nothing worth guarding.
        None => Access::Public,
    };
    if let Access::Needs(scope) = access {
        let caller = match guard.caller(&req) {
            Ok(caller) => caller,
            Err(err) => return with_challenge(err.into_response()),
        };
        if let Err(denied) = caller.require(scope) {
            return ApiError::forbidden("scope", &denied).into_response();
        }
        req.extensions_mut().insert(caller);
    }
    next.run(req).await
}

/// RFC 6750: a 401 for a bearer-protected resource names the scheme.
fn with_challenge(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"orchestra\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_need_their_scope_reads_need_read_and_the_rest_admin() {
        let cases = [
            (Method::GET, "/health", Access::Public),
            (Method::GET, "/metrics", Access::Public),
            (Method::GET, "/health/ready", Access::Public),
            (Method::GET, "/dashboard/app.js", Access::Public),
            (
                Method::POST,
                "/registry/register",
                Access::Needs(Scope::RegistryWrite),
            ),
            (
                Method::PUT,
                "/registry/heartbeat/{service_id}",
                Access::Needs(Scope::RegistryWrite),
            ),
            (
                Method::DELETE,
                "/registry/services/{id}",
                Access::Needs(Scope::RegistryWrite),
            ),
            (
                Method::GET,
                "/registry/services/{id}",
                Access::Needs(Scope::Read),
            ),
            (Method::POST, "/events", Access::Needs(Scope::EventsPublish)),
            (
                Method::POST,
                "/events/replay",
                Access::Needs(Scope::EventsPublish),
            ),
            (Method::GET, "/events", Access::Needs(Scope::Read)),
            (Method::POST, "/jobs", Access::Needs(Scope::JobsWrite)),
            (
                Method::DELETE,
                "/jobs/{id}",
                Access::Needs(Scope::JobsWrite),
            ),
            (Method::POST, "/schedules", Access::Needs(Scope::JobsWrite)),
            (Method::POST, "/jobs/lease", Access::Needs(Scope::JobsWrite)),
            (
                Method::POST,
                "/jobs/{id}/complete",
                Access::Needs(Scope::JobsWrite),
            ),
            (Method::GET, "/jobs/workers", Access::Needs(Scope::Read)),
            (
                Method::POST,
                "/jobs/retry-failed",
                Access::Needs(Scope::Admin),
            ),
            (Method::POST, "/logs", Access::Needs(Scope::LogsWrite)),
            (Method::POST, "/v1/logs", Access::Needs(Scope::LogsWrite)),
            (Method::GET, "/logs/stream", Access::Needs(Scope::Read)),
            (Method::GET, "/ws", Access::Needs(Scope::Read)),
            (
                Method::GET,
                "/gateway/breakers",
                Access::Needs(Scope::Admin),
            ),
            (
                Method::DELETE,
                "/gateway/cache",
                Access::Needs(Scope::Admin),
            ),
            (
                Method::PATCH,
                "/some/new/route",
                Access::Needs(Scope::Admin),
            ),
        ];
        for (method, route, access) in cases {
            assert_eq!(required(&method, route), access, "{method} {route}");
        }
    }

    #[test]
    fn bearer_headers_parse_case_insensitively_and_reject_other_schemes() {
        let value = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(
            bearer(Some(&value("Bearer abc"))).unwrap().as_deref(),
            Some("abc")
        );
        assert_eq!(
            bearer(Some(&value("BEARER  abc "))).unwrap().as_deref(),
            Some("abc")
        );
        assert!(bearer(None).unwrap().is_none());
        assert!(bearer(Some(&value("Basic dTpw"))).is_err());
        assert!(bearer(Some(&value("Bearer"))).is_err());
    }
}
