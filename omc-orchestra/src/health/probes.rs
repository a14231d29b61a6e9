//! The probes: HTTP, TCP, Redis, PostgreSQL and a closure.
//!
//! Every probe answers within its own timeout and tells a refused connection
//! (`connection refused`) from silence (`timed out after …ms`).
//!
//! An address may carry a password (`redis://:secret@cache`, `password=` in a DSN), and a
//! probe's name, reasons and `Debug` output are shown and logged: they all go through
//! [`redact`], only the connection itself sees the address as given.

use super::{timed, HealthProbe, ProbeResult};
use crate::redact::redact;
use crate::registry::HealthStatus;
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::future::Future;
use std::time::Duration;

/// A short reason for a failed connection: `connection refused`, or the innermost message
/// (redacted: drivers may quote the address they were given).
fn connect_reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return "connection refused".to_owned();
            }
        }
        innermost = e.to_string();
        current = e.source();
    }
    if innermost
        .to_ascii_lowercase()
        .contains("connection refused")
    {
        return "connection refused".to_owned();
    }
    redact(&innermost)
}

/// An error as a probe's reason, redacted.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn reason(err: impl std::fmt::Display) -> String {
    redact(&err.to_string())
}

/// A TCP connect probe: passing when the address accepts a connection in time.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    name: String,
    address: String,
    timeout: Duration,
}

impl TcpProbe {
    /// A probe of `address` (`host:port`) with a `timeout`.
    pub fn new(address: impl Into<String>, timeout: Duration) -> Self {
        let address = address.into();
        Self {
            name: format!("tcp:{address}"),
            address,
            timeout,
        }
    }
}

#[async_trait]
impl HealthProbe for TcpProbe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> ProbeResult {
        timed(self.timeout, async {
            match tokio::net::TcpStream::connect(&self.address).await {
                Ok(_) => Ok((HealthStatus::Passing, "connected".to_owned())),
                Err(err) => Err(connect_reason(&err)),
            }
        })
        .await
    }
}

/// An HTTP probe: `GET url`; 2xx is passing, 429 warning, anything else critical.
#[derive(Clone)]
pub struct HttpProbe {
    name: String,
    url: String,
    timeout: Duration,
    client: reqwest::Client,
}

impl HttpProbe {
    /// A probe of `url` with a client of its own.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        Self::with_client(reqwest::Client::new(), url, timeout)
    }

    /// A probe of `url` sharing `client` (and its connection pool) with other probes.
    pub fn with_client(client: reqwest::Client, url: impl Into<String>, timeout: Duration) -> Self {
        let url = url.into();
        Self {
            name: format!("http:{}", redact(&url)),
            url,
            timeout,
            client,
        }
    }
}

impl std::fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProbe")
            .field("url", &redact(&self.url))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl HealthProbe for HttpProbe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> ProbeResult {
        timed(self.timeout, async {
            let response = self
                .client
                .get(&self.url)
                .send()
                .await
                .map_err(|err| connect_reason(&err))?;
            let code = response.status();
            let status = if code.is_success() {
                HealthStatus::Passing
            } else if code.as_u16() == 429 {
                HealthStatus::Warning
            } else {
                HealthStatus::Critical
            };
            Ok((status, format!("HTTP {}", code.as_u16())))
        })
        .await
    }
}

/// A Redis probe: connect and `PING`.
#[cfg(feature = "redis")]
#[derive(Clone)]
pub struct RedisProbe {
    name: String,
    url: String,
    timeout: Duration,
}

#[cfg(feature = "redis")]
impl RedisProbe {
    /// A probe of the Redis at `url` (`redis://host:port`).
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        let url = url.into();
        Self {
            name: format!("redis:{}", redact(&url)),
            url,
            timeout,
        }
    }
}

#[cfg(feature = "redis")]
impl std::fmt::Debug for RedisProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProbe")
            .field("url", &redact(&self.url))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl HealthProbe for RedisProbe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> ProbeResult {
        timed(self.timeout, async {
            // Every node that holds data must answer: the server, the master the
            // Sentinels name, or each cluster master.
            let target = crate::topology::Target::parse(&self.url).map_err(reason)?;
            let nodes = target.nodes().await.map_err(reason)?;
            let mut pong = String::new();
            for node in &nodes {
                let mut conn = node
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|err| connect_reason(&err))?;
                pong = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .map_err(reason)?;
            }
            let detail = match target.topology() {
                crate::Topology::Single => pong,
                topology => format!("{pong} from {} {topology} node(s)", nodes.len()),
            };
            Ok((HealthStatus::Passing, detail))
        })
        .await
    }
}

/// A PostgreSQL probe: connect and `SELECT 1`.
#[cfg(feature = "postgres")]
#[derive(Clone)]
pub struct PostgresProbe {
    name: String,
    config: String,
    timeout: Duration,
}

#[cfg(feature = "postgres")]
impl PostgresProbe {
    /// A probe of the database `config` names (a `postgres://` URL or `key=value` pairs).
    pub fn new(config: impl Into<String>, timeout: Duration) -> Self {
        let config = config.into();
        Self {
            name: "postgres".to_owned(),
            config,
            timeout,
        }
    }
}

#[cfg(feature = "postgres")]
impl std::fmt::Debug for PostgresProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProbe")
            .field("config", &redact(&self.config))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl HealthProbe for PostgresProbe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> ProbeResult {
        timed(self.timeout, async {
            let (client, connection) = tokio_postgres::connect(&self.config, tokio_postgres::NoTls)
                .await
                .map_err(|err| connect_reason(&err))?;
            let driver = tokio::spawn(connection);
            let answer = client.simple_query("SELECT 1").await;
            drop(client);
            driver.abort();
            answer.map_err(reason)?;
            Ok((HealthStatus::Passing, "SELECT 1 ok".to_owned()))
        })
        .await
    }
}

type CheckFn = dyn Fn() -> BoxFuture<'static, std::result::Result<(HealthStatus, String), String>>
    + Send
    + Sync;

/// A probe made from a closure that returns `Ok((status, reason))` or `Err(reason)`.
pub struct FnProbe {
    name: String,
    timeout: Duration,
    check: Box<CheckFn>,
}

impl std::fmt::Debug for FnProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnProbe")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FnProbe {
    /// A probe called `name` that runs `check` under `timeout`.
    pub fn new<F, Fut>(name: impl Into<String>, timeout: Duration, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(HealthStatus, String), String>> + Send + 'static,
    {
        Self {
            name: name.into(),
            timeout,
            check: Box::new(move || Box::pin(check())),
        }
    }
}

#[async_trait]
impl HealthProbe for FnProbe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> ProbeResult {
        timed(self.timeout, (self.check)()).await
    }
}

/// The probe for a dependency at `address`, chosen by its scheme: `postgres://` or
/// `postgresql://` (PostgreSQL), `redis://` (Redis), `http://`/`https://` (HTTP GET), or a
/// bare `host:port` (TCP). `None` when the scheme needs a feature that is off.
pub fn dependency_probe(
    address: &str,
    timeout: Duration,
    client: &reqwest::Client,
) -> Option<Box<dyn HealthProbe>> {
    let lower = address.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Some(Box::new(PostgresProbe::new(address, timeout)));
        #[cfg(not(feature = "postgres"))]
        return None;
    }
    if lower.starts_with("redis://") || lower.starts_with("rediss://") {
        #[cfg(feature = "redis")]
        return Some(Box::new(RedisProbe::new(address, timeout)));
        #[cfg(not(feature = "redis"))]
        return None;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(Box::new(HttpProbe::with_client(
            client.clone(),
            address,
            timeout,
        )));
    }
    let address = lower.strip_prefix("tcp://").unwrap_or(address);
    // `user:password@host:port` is no socket address; refusing it also keeps the password
    // out of the probe's name, which redaction only finds behind a `scheme://`.
    if address.contains('@') {
        return None;
    }
    address
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map(|_| Box::new(TcpProbe::new(address, timeout)) as Box<dyn HealthProbe>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_debug_output_hold_no_password() {
        let timeout = Duration::from_secs(1);
        let client = reqwest::Client::new();
        for address in [
            "redis://:hunter2@127.0.0.1:6399/0",
            "rediss://app:hunter2@cache:6380",
            "postgres://app:hunter2@db:5432/erp",
            "http://app:hunter2@svc:80/health?token=hunter2",
        ] {
            let probe = dependency_probe(address, timeout, &client).expect(address);
            assert!(!probe.name().contains("hunter2"), "{}", probe.name());
        }
        assert!(dependency_probe("tcp://app:hunter2@db:5432", timeout, &client).is_none());
        let shown = [
            format!("{:?}", RedisProbe::new("redis://u:hunter2@h:1", timeout)),
            format!(
                "{:?}",
                PostgresProbe::new("host=h password=hunter2", timeout)
            ),
            format!("{:?}", HttpProbe::new("https://u:hunter2@h/", timeout)),
        ];
        for text in shown {
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert_eq!(
            RedisProbe::new("redis://u:hunter2@h:1", timeout).name(),
            "redis:redis://u:***@h:1"
        );
    }
}
