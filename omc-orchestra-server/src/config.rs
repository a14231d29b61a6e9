//! What the servers are started with: which servers, on which ports, over which
//! backends, with which engines' settings.

use crate::jobs_dispatch::JobRoute;
use crate::ws::WsConfig;
use omc_orchestra::access::TokenVerifier;
use omc_orchestra::durability::Durability;
use omc_orchestra::gateway::GatewayConfig;
use omc_orchestra::health::{builtin_rules, AlertRule, ReceiverOptions};
use omc_orchestra::redact::redact;
use omc_orchestra::registry::RegistryOptions;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One of the four servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// Registry, events, health and WebSocket (3010).
    Registry,
    /// API gateway (3000).
    Gateway,
    /// Jobs (3013).
    Jobs,
    /// Logging (3014).
    Logging,
}

impl ServerKind {
    /// All four, in the order `orchestra up` starts them.
    pub const ALL: [ServerKind; 4] = [Self::Registry, Self::Gateway, Self::Jobs, Self::Logging];

    /// The server's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Gateway => "gateway",
            Self::Jobs => "jobs",
            Self::Logging => "logging",
        }
    }

    /// The server's default port.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Registry => 3010,
            Self::Gateway => 3000,
            Self::Jobs => 3013,
            Self::Logging => 3014,
        }
    }
}

/// Deadlines and caps every port applies to its clients, so a slow or stalled client
/// holds a connection for a bounded time and no port holds more than it can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// One deadline for a whole request head, however slowly its bytes come (10 s);
    /// on the hyper-served paths it also bounds an idle keep-alive connection.
    #[serde(with = "secs")]
    pub head_timeout: Duration,
    /// Longest pause while a request body is read or an answer is written to a client
    /// that stops reading (30 s).
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// An idle keep-alive connection is closed after this long (75 s; at most the head
    /// timeout where hyper serves).
    #[serde(with = "secs")]
    pub keep_alive: Duration,
    /// Open connections per port (10,000); past it new ones wait in the listen backlog.
    pub max_connections: usize,
    /// The server's own deadline for answering a control-plane request (5 s): past it
    /// the caller gets 503 JSON instead of waiting on a stalled backend.
    #[serde(with = "secs")]
    pub request_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(75),
            max_connections: 10_000,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl ConnectionLimits {
    /// An error naming the field when a limit is zero.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("http.head_timeout", self.head_timeout),
            ("http.idle_timeout", self.idle_timeout),
            ("http.keep_alive", self.keep_alive),
            ("http.request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{field} must be at least 1 second"));
            }
        }
        if self.max_connections == 0 {
            return Err("http.max_connections must be at least 1".into());
        }
        Ok(())
    }
}

/// Durations written as whole seconds in the TOML file.
mod secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Everything the servers need to start. Its `Debug` masks passwords in addresses.
#[derive(Clone)]
pub struct Config {
    /// Address to bind.
    pub bind: IpAddr,
    /// Registry port (0 picks a free one).
    pub registry_port: u16,
    /// Gateway port.
    pub gateway_port: u16,
    /// Jobs port.
    pub jobs_port: u16,
    /// Logging port.
    pub logging_port: u16,
    /// Redis URL; in-memory backends when absent.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// When a job, event or log batch is acknowledged (`memory` unless chosen).
    pub durability: Durability,
    /// Verifies control-plane service tokens (from `JWT_SECRET` or a public key); every
    /// caller may do everything when absent, which only loopback allows by default.
    pub service_tokens: Option<Arc<TokenVerifier>>,
    /// Serve without control-plane credentials on a non-loopback address.
    pub allow_unauthenticated: bool,
    /// Browser origins allowed by CORS and on `/ws` besides same-origin; none when empty.
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Registry TTL and grace period.
    pub registry: RegistryOptions,
    /// How often stale cleanup runs.
    pub reap_every: Duration,
    /// Discovery's panic threshold in percent (off when absent).
    pub panic_threshold: Option<u8>,
    /// WebSocket hub limits.
    pub ws: WsConfig,
    /// How often each instance is health-checked unless its metadata `healthInterval`
    /// says otherwise (30 s).
    pub health_interval: Duration,
    /// Addresses of the dependencies services name (`postgres` → `postgres://…`).
    pub health_dependencies: BTreeMap<String, String>,
    /// How often the host is sampled (60 s).
    pub system_sample_every: Duration,
    /// How often alert rules are evaluated again (5 s).
    pub alert_eval_every: Duration,
    /// Alert rules (the built-in ones unless configured).
    pub alert_rules: Vec<AlertRule>,
    /// Where firing and resolved alerts are sent (Alertmanagers, webhooks) and how often;
    /// nowhere by default. An empty `external_url` means the registry server's own URL.
    pub alert_receivers: ReceiverOptions,
    /// Where the logging server also writes JSON-lines files with rotation and archives
    /// (`LOG_DIR`); no files when absent.
    pub log_dir: Option<PathBuf>,
    /// Elasticsearch to forward logs to (`ELASTICSEARCH_URL`); none when absent.
    pub elasticsearch_url: Option<String>,
    /// The gateway: routes, static fallbacks, auth, limits, breakers, cache.
    pub gateway: GatewayConfig,
    /// Job types the jobs server runs itself by POSTing them to a registered service.
    pub job_routes: BTreeMap<String, JobRoute>,
    /// How often the cron scheduler looks for due ticks.
    pub cron_every: Duration,
    /// Deadlines and connection caps of every port.
    pub connections: ConnectionLimits,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dependencies: BTreeMap<&str, String> = self
            .health_dependencies
            .iter()
            .map(|(name, address)| (name.as_str(), redact(address)))
            .collect();
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("registry_port", &self.registry_port)
            .field("gateway_port", &self.gateway_port)
            .field("jobs_port", &self.jobs_port)
            .field("logging_port", &self.logging_port)
            .field("redis_url", &self.redis_url.as_deref().map(redact))
            .field("redis_prefix", &self.redis_prefix)
            .field("durability", &self.durability)
            .field("service_tokens", &self.service_tokens)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("cors_origins", &self.cors_origins)
            .field("health_dependencies", &dependencies)
            .field(
                "elasticsearch_url",
                &self.elasticsearch_url.as_deref().map(redact),
            )
            .field("alert_receivers", &self.alert_receivers)
            .field("gateway", &self.gateway)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            registry_port: ServerKind::Registry.default_port(),
            gateway_port: ServerKind::Gateway.default_port(),
            jobs_port: ServerKind::Jobs.default_port(),
            logging_port: ServerKind::Logging.default_port(),
            redis_url: None,
            redis_prefix: "orc".into(),
            durability: Durability::Memory,
            service_tokens: None,
            allow_unauthenticated: false,
            cors_origins: Vec::new(),
            body_limit: 1024 * 1024,
            registry: RegistryOptions::default(),
            reap_every: Duration::from_secs(5),
            panic_threshold: None,
            ws: WsConfig::default(),
            health_interval: Duration::from_secs(30),
            health_dependencies: BTreeMap::new(),
            system_sample_every: Duration::from_secs(60),
            alert_eval_every: Duration::from_secs(5),
            alert_rules: builtin_rules(),
            alert_receivers: ReceiverOptions::default(),
            log_dir: std::env::var_os("LOG_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            elasticsearch_url: std::env::var("ELASTICSEARCH_URL")
                .ok()
                .filter(|u| !u.is_empty()),
            gateway: GatewayConfig::default(),
            job_routes: BTreeMap::new(),
            cron_every: Duration::from_secs(1),
            connections: ConnectionLimits::default(),
        }
    }
}

impl Config {
    /// In memory, on loopback, every port free: for tests.
    pub fn ephemeral() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            registry_port: 0,
            gateway_port: 0,
            jobs_port: 0,
            logging_port: 0,
            reap_every: Duration::from_millis(200),
            alert_eval_every: Duration::from_millis(200),
            log_dir: None,
            elasticsearch_url: None,
            ..Self::default()
        }
    }

    /// The same configuration with the control plane closed to all but tokens signed
    /// with `secret` (HS256, at least 32 bytes), as `JWT_SECRET` does.
    pub fn with_service_secret(mut self, secret: &str) -> omc_orchestra::Result<Self> {
        self.service_tokens = Some(Arc::new(TokenVerifier::from_secret(secret.as_bytes())?));
        Ok(self)
    }

    /// Why serving as configured would expose an open control plane, if it would: a bind
    /// beyond loopback with no credentials and no `--allow-unauthenticated`.
    pub fn exposure(&self) -> Option<String> {
        if self.bind.is_loopback() || self.service_tokens.is_some() || self.allow_unauthenticated {
            return None;
        }
        Some(format!(
            "refusing to serve on {} without control-plane credentials: anyone who reaches \
             the port could register instances and read everything. Set JWT_SECRET (at least \
             32 bytes) or --service-public-key, bind 127.0.0.1, or pass \
             --allow-unauthenticated to serve open on purpose",
            self.bind
        ))
    }

    /// The configured port of `kind`.
    pub fn port(&self, kind: ServerKind) -> u16 {
        match kind {
            ServerKind::Registry => self.registry_port,
            ServerKind::Gateway => self.gateway_port,
            ServerKind::Jobs => self.jobs_port,
            ServerKind::Logging => self.logging_port,
        }
    }
}
