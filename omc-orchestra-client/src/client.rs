//! [`OrchestraClient`]: the registry's HTTP API as async methods.

use crate::auth::{Credentials, TokenSigner};
use crate::registered::{RegisterOptions, Registered};
use crate::{ClientError, Discovery, Result};
use omc_orchestra::registry::{Registration, ServiceFilter, ServiceInstance};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the registry listens when `SERVICE_REGISTRY_URL` is not set (the embedded default).
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:3010";
/// The JWT subject when no service name was given.
pub const DEFAULT_SUBJECT: &str = "orchestra-client";
/// Where the jobs server listens when `JOB_SCHEDULER_URL` is not set.
pub const DEFAULT_JOBS_URL: &str = "http://127.0.0.1:3013";
/// Where the logging server listens when `LOGGING_SERVICE_URL` is not set.
pub const DEFAULT_LOGGING_URL: &str = "http://127.0.0.1:3014";
/// How long one request may take before it fails with [`ClientError::Transport`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle to the registry's HTTP API. Cheap to clone; clones share the connection pool
/// and the cached token.
#[derive(Clone)]
pub struct OrchestraClient {
    http: reqwest::Client,
    base: Arc<str>,
    jobs: Arc<str>,
    logging: Arc<str>,
    subject: Arc<str>,
    credentials: Option<Arc<Credentials>>,
    /// Registrations and deregistrations made through this client and its clones, so a
    /// local discovery copy can tell it is older than this process's own last write.
    registry_writes: Arc<AtomicU64>,
}

impl std::fmt::Debug for OrchestraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestraClient")
            .field("registry_url", &self.base)
            .field("subject", &self.subject)
            .field("authenticated", &self.credentials.is_some())
            .finish()
    }
}

impl OrchestraClient {
    /// A client for the registry at `registry_url` (e.g. `http://127.0.0.1:3010`), without
    /// authentication. A malformed URL is reported by the first request.
    pub fn new(registry_url: impl Into<String>) -> Self {
        Self {
            http: build_http(DEFAULT_TIMEOUT),
            base: Arc::from(registry_url.into().trim_end_matches('/')),
            jobs: Arc::from(DEFAULT_JOBS_URL),
            logging: Arc::from(DEFAULT_LOGGING_URL),
            subject: Arc::from(DEFAULT_SUBJECT),
            credentials: None,
            registry_writes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A client configured from the environment: `SERVICE_REGISTRY_URL` (default
    /// [`DEFAULT_REGISTRY_URL`]), `JOB_SCHEDULER_URL`, `LOGGING_SERVICE_URL` and, when set
    /// and not empty, `ORCHESTRA_TOKEN` (a minted token) or else `JWT_SECRET`.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let client = Self::new(var("SERVICE_REGISTRY_URL", DEFAULT_REGISTRY_URL))
            .with_jobs_url(var("JOB_SCHEDULER_URL", DEFAULT_JOBS_URL))
            .with_logging_url(var("LOGGING_SERVICE_URL", DEFAULT_LOGGING_URL));
        let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (set("ORCHESTRA_TOKEN"), set("JWT_SECRET")) {
            (Some(token), _) => client.with_token(token),
            (None, Some(secret)) => client.with_jwt_secret(secret),
            (None, None) => client,
        }
    }

    /// Sign every request with a service token made from `secret` (the servers'
    /// `JWT_SECRET`, at least 32 bytes) for this client's service name, with every scope
    /// a service needs for itself, and send it as `Authorization: Bearer …`. Tokens live
    /// five minutes and are renewed before they run out.
    pub fn with_jwt_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        let signer = TokenSigner::new(secret.as_ref());
        self.credentials = Some(Arc::new(Credentials::Signer(signer)));
        self
    }

    /// Send `token` (minted by `orchestra token`) with every request, as
    /// `Authorization: Bearer …`: for services that are given a token, not the secret.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Some(Arc::new(Credentials::Token(token.into().trim().to_owned())));
        self
    }

    /// Where the jobs server listens (default [`DEFAULT_JOBS_URL`]).
    pub fn with_jobs_url(mut self, url: impl Into<String>) -> Self {
        self.jobs = Arc::from(url.into().trim_end_matches('/'));
        self
    }

    /// Where the logging server listens (default [`DEFAULT_LOGGING_URL`]).
    pub fn with_logging_url(mut self, url: impl Into<String>) -> Self {
        self.logging = Arc::from(url.into().trim_end_matches('/'));
        self
    }

    /// The JWT subject (`sub`): the name of the service using the client. Defaults to
    /// [`DEFAULT_SUBJECT`].
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.subject = Arc::from(name.into());
        self
    }

    /// How long one request may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = build_http(timeout);
        self
    }

    /// The registry's base URL, as given.
    pub fn registry_url(&self) -> &str {
        &self.base
    }

    /// Register an instance and keep it alive: validates `registration` locally, posts it,
    /// and returns a handle whose background task sends a heartbeat every third of the TTL.
    /// See [`Registered`] for what happens next.
    pub async fn register(&self, registration: Registration) -> Result<Registered> {
        self.register_with(registration, RegisterOptions::default())
            .await
    }

    /// [`OrchestraClient::register`] with options (e.g. the heartbeat interval).
    pub async fn register_with(
        &self,
        registration: Registration,
        options: RegisterOptions,
    ) -> Result<Registered> {
        let client = self.acting_for(&registration.name);
        let instance = client.register_once(&registration).await?;
        Ok(Registered::start(client, registration, instance, options))
    }

    /// This client, signing as `service` when it signs its own tokens and was given no
    /// service name: a `registry:write` token covers only the service in its `sub`.
    fn acting_for(&self, service: &str) -> Self {
        let signs = matches!(self.credentials.as_deref(), Some(Credentials::Signer(_)));
        if signs && &*self.subject == DEFAULT_SUBJECT {
            self.clone().with_service_name(service)
        } else {
            self.clone()
        }
    }

    /// Validate and post one registration, with no heartbeats: `POST /registry/register`.
    pub async fn register_once(&self, registration: &Registration) -> Result<ServiceInstance> {
        registration.validate()?;
        let request = self
            .acting_for(&registration.name)
            .request(Method::POST, &["registry", "register"])?
            .json(registration);
        let registered = self.send(request).await;
        self.registry_writes.fetch_add(1, Ordering::Release);
        registered
    }

    /// Record a heartbeat for instance `id`: `PUT /registry/heartbeat/{id}`. An unknown id
    /// is [`ClientError::Http`] with status 404.
    pub async fn heartbeat(&self, id: &str) -> Result<ServiceInstance> {
        let request = self.request(Method::PUT, &["registry", "heartbeat", id])?;
        self.send(request).await
    }

    /// Remove instance `id`: `DELETE /registry/services/{id}`. An unknown id is
    /// [`ClientError::Http`] with status 404.
    pub async fn deregister(&self, id: &str) -> Result<()> {
        let request = self.request(Method::DELETE, &["registry", "services", id])?;
        let removed = self.execute(request).await.map(drop);
        self.registry_writes.fetch_add(1, Ordering::Release);
        removed
    }

    /// How many registrations and deregistrations this client and its clones have sent.
    pub(crate) fn registry_writes(&self) -> u64 {
        self.registry_writes.load(Ordering::Acquire)
    }

    /// One instance by id: `GET /registry/services/{id}`; `None` when the registry does not
    /// know it.
    pub async fn instance(&self, id: &str) -> Result<Option<ServiceInstance>> {
        let request = self.request(Method::GET, &["registry", "services", id])?;
        match self.send(request).await {
            Ok(instance) => Ok(Some(instance)),
            Err(ClientError::Http { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The instances that pass `filter`: `GET /registry/services?name=&tag=&status=&type=`.
    pub async fn services(&self, filter: &ServiceFilter) -> Result<Vec<ServiceInstance>> {
        let request = self
            .request(Method::GET, &["registry", "services"])?
            .query(filter);
        self.send(request).await
    }

    /// The instance the registry's balancer picks for `service`, or `None` when it has no
    /// instance to offer: `GET /registry/discovery/{service}`.
    pub async fn discover(&self, service: &str) -> Result<Option<ServiceInstance>> {
        match self.discover_all(service).await {
            Ok(found) => Ok(found.selected),
            // "No healthy instance" is an answer; a backend outage (also 503) is not.
            Err(ClientError::Http {
                status: 503, error, ..
            }) if error == "unavailable" => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Everything discovery knows about `service`: the instances it serves, the one picked,
    /// the counts and whether panic mode is on.
    pub async fn discover_all(&self, service: &str) -> Result<Discovery> {
        let request = self.request(Method::GET, &["registry", "discovery", service])?;
        self.send(request).await
    }

    /// [`OrchestraClient::discover_all`] as a blocking query: answered once `service`
    /// changed past `index` (a [`Discovery::index`] of an earlier answer), or after `wait`
    /// (at most 5 minutes) with the same answer. "No healthy instance" is an answer.
    pub async fn discover_after(
        &self,
        service: &str,
        index: u64,
        wait: Duration,
    ) -> Result<Discovery> {
        let request = self
            .request(Method::GET, &["registry", "discovery", service])?
            .query(&[
                ("index", index.to_string()),
                ("wait", format!("{}ms", wait.as_millis())),
            ])
            // The server holds the answer up to `wait` (plus a sixteenth) on purpose.
            .timeout(wait + wait / 16 + Duration::from_secs(10));
        match self.send(request).await {
            Err(ClientError::Http {
                status: 503, error, ..
            }) if error == "unavailable" => Ok(Discovery::empty(service)),
            answer => answer,
        }
    }

    /// A request to the registry at `segments` (each percent-encoded), with the token when
    /// one is configured.
    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder> {
        self.request_to(Server::Registry, method, segments)
    }

    /// A request to one of the servers, with the token when credentials are configured.
    pub(crate) fn request_to(
        &self,
        server: Server,
        method: Method,
        segments: &[&str],
    ) -> Result<RequestBuilder> {
        let (base, field) = match server {
            Server::Registry => (&self.base, "registryUrl"),
            Server::Jobs => (&self.jobs, "jobsUrl"),
            Server::Logging => (&self.logging, "loggingUrl"),
        };
        let mut url = Url::parse(base).map_err(|err| ClientError::Invalid {
            field: field.into(),
            reason: format!("`{base}` is not a URL: {err}"),
        })?;
        url.path_segments_mut()
            .map_err(|()| ClientError::Invalid {
                field: field.into(),
                reason: format!("`{base}` cannot be a base URL"),
            })?
            .pop_if_empty()
            .extend(segments);
        let mut request = self.http.request(method, url);
        // A call made while a job runs (or inside `telemetry::within`) continues its trace:
        // the events and jobs it makes carry it on.
        if let Some(trace) = omc_orchestra::telemetry::current_header() {
            request = request.header("traceparent", trace);
        }
        if let Some(credentials) = &self.credentials {
            request = request.bearer_auth(credentials.token(&self.subject)?);
        }
        Ok(request)
    }

    /// Send `request` and return the body of a success, or the server's error.
    pub(crate) async fn execute(&self, request: RequestBuilder) -> Result<Vec<u8>> {
        let response = request.send().await.map_err(ClientError::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(ClientError::Transport)?;
        if status.is_success() {
            Ok(body.to_vec())
        } else {
            Err(ClientError::from_response(status, &body))
        }
    }

    /// Send `request` and decode a success's JSON body as `T`.
    pub(crate) async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let body = self.execute(request).await?;
        serde_json::from_slice(&body).map_err(ClientError::Decode)
    }
}

/// The servers a client talks to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Server {
    /// Registry and events (3010).
    Registry,
    /// Jobs (3013).
    Jobs,
    /// Logging (3014).
    Logging,
}

fn build_http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use omc_orchestra::registry::HealthStatus;

    #[test]
    fn paths_are_percent_encoded_under_the_base_path() {
        let client = OrchestraClient::new("http://127.0.0.1:3010/orchestra/");
        let request = client
            .request(Method::GET, &["registry", "discovery", "a b/c"])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:3010/orchestra/registry/discovery/a%20b%2Fc"
        );
    }

    #[test]
    fn the_filter_becomes_the_query_without_empty_fields() {
        let client = OrchestraClient::new("http://127.0.0.1:3010");
        let filter = ServiceFilter {
            tag: Some("pricing".into()),
            status: Some(HealthStatus::Passing),
            service_type: Some("api".into()),
            ..ServiceFilter::default()
        };
        let request = client
            .request(Method::GET, &["registry", "services"])
            .unwrap()
            .query(&filter)
            .build()
            .unwrap();
        assert_eq!(
            request.url().query(),
            Some("tag=pricing&status=passing&type=api")
        );
    }

    #[test]
    fn requests_carry_a_bearer_token_only_with_a_secret() {
        let plain = OrchestraClient::new("http://127.0.0.1:3010");
        let request = plain
            .request(Method::GET, &["health"])
            .unwrap()
            .build()
            .unwrap();
        assert!(request.headers().get("authorization").is_none());

        let signed = plain.with_jwt_secret("a-secret-of-at-least-thirty-two-bytes");
        let request = signed
            .request(Method::GET, &["health"])
            .unwrap()
            .build()
            .unwrap();
        let header = request.headers()["authorization"].to_str().unwrap();
        assert!(header.starts_with("Bearer ey"), "{header}");
    }

    #[tokio::test]
    async fn an_invalid_registration_fails_before_sending() {
        // Nothing listens on port 9 of the discard address; validation must answer first.
        let client = OrchestraClient::new("http://127.0.0.1:9");
        let err = client
            .register(Registration::new("Bad Name", "localhost", 3006))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Invalid { field, .. } if field == "name"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_malformed_registry_url_is_reported() {
        let client = OrchestraClient::new("not a url");
        let err = client.discover("pricing-service").await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Invalid { field, .. } if field == "registryUrl"),
            "{err:?}"
        );
    }
}
