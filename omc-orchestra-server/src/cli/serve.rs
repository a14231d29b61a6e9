//! The server commands (`up`, `registry`, `gateway`, `jobs`, `logging`): each command's
//! own options, and how they become the servers' [`Config`]. Flags override environment
//! variables, which override a TOML file given with `--config`.

use crate::app::{App, Config, ServerKind};
use clap::{Args, ValueEnum};
use omc_orchestra::access::TokenVerifier;
use omc_orchestra::gateway::GatewayConfig;
use omc_orchestra::redact::{redact, MASK};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the server logs.
#[derive(Debug, Clone, Copy, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Options of every server command: the file, the address, Redis, credentials, limits
/// and logging.
#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file with any of these options (snake_case keys) plus a `[gateway]` table
    /// (`[[gateway.routes]]`, limits, auth, breaker, cache); flags and environment
    /// variables win over it.
    #[arg(long, env = "ORCHESTRA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1]. Any other address needs control-plane
    /// credentials (JWT_SECRET or --service-public-key) or --allow-unauthenticated.
    #[arg(long, env = "BIND")]
    pub bind: Option<IpAddr>,
    /// Serve without control-plane credentials on a non-loopback address: anyone who
    /// reaches the ports may register, publish and read. A warning is logged at every
    /// start.
    #[arg(long, env = "ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Redis URL; every backend is Redis when set, in memory otherwise: redis://host:6379
    /// (rediss:// for TLS), redis+sentinel://s1:26379,s2:26379/mymaster or
    /// redis+cluster://h1:6379,h2:6379.
    #[arg(
        long = "redis",
        env = "REDIS_URL",
        hide_env_values = true,
        help_heading = "Redis"
    )]
    pub redis_url: Option<String>,
    /// Redis host, used when no URL is given.
    #[arg(long, env = "REDIS_HOST", help_heading = "Redis")]
    pub redis_host: Option<String>,
    /// Redis port, with --redis-host [default: 6379].
    #[arg(long, env = "REDIS_PORT", help_heading = "Redis")]
    pub redis_port: Option<u16>,
    /// Prefix of every Redis key [default: orc].
    #[arg(long, env = "REDIS_PREFIX", help_heading = "Redis")]
    pub redis_prefix: Option<String>,
    /// When a job, event or log batch is acknowledged: `memory` (Redis has it in memory),
    /// `aof` (in Redis's append-only file on disk), `replica` (a replica has it) or
    /// `aof+replica` [default: memory]. A level Redis's settings cannot keep stops the
    /// server at start.
    #[arg(long, env = "DURABILITY", help_heading = "Redis")]
    pub durability: Option<String>,
    /// Control-plane secret (HS256, at least 32 bytes): every endpoint but /health,
    /// /metrics, /openapi.json and the dashboard's page then needs a service token
    /// (`Authorization: Bearer`, minted by `orchestra token`). Gateway routes never use it.
    #[arg(
        long,
        env = "JWT_SECRET",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub jwt_secret: Option<String>,
    /// Verify control-plane tokens with this PEM public key file (RS256, ES256 or EdDSA)
    /// instead of JWT_SECRET.
    #[arg(long, env = "SERVICE_PUBLIC_KEY", help_heading = "Security")]
    pub service_public_key: Option<PathBuf>,
    /// Browser origin allowed by CORS and on /ws besides same-origin, e.g.
    /// `https://erp.example.com` (repeatable); none when not given.
    #[arg(long = "cors-origin", help_heading = "Security")]
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes [default: 1048576].
    #[arg(long, env = "BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Log filter: error, warn, info, debug, trace or a tracing directive [default: info].
    #[arg(long, env = "LOG_LEVEL", help_heading = "Logging")]
    pub log_level: Option<String>,
    /// Log format [default: pretty].
    #[arg(long, env = "LOG_FORMAT", value_enum, help_heading = "Logging")]
    pub log_format: Option<LogFormat>,
}

/// The registry server's own options.
#[derive(Args)]
#[command(next_help_heading = "Registry")]
pub struct RegistryOptions {
    /// Heartbeat TTL for registrations that do not ask for one, in seconds [default: 30].
    #[arg(long)]
    pub default_ttl: Option<u64>,
    /// Seconds an expired instance is kept (critical) before stale cleanup removes it
    /// [default: 90].
    #[arg(long)]
    pub grace: Option<u64>,
    /// Seconds between health checks of each instance (metadata `healthInterval` wins)
    /// [default: 30].
    #[arg(long, env = "HEALTH_INTERVAL")]
    pub health_interval: Option<u64>,
    /// PostgreSQL the services depend on, probed by the health checker as `postgres`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Alertmanager to send firing and resolved alerts to, e.g. `http://alertmanager:9093`
    /// (repeatable; the variable takes a comma-separated list). Alerts go to its v2 API
    /// as Prometheus sends them.
    #[arg(
        long = "alertmanager-url",
        env = "ALERTMANAGER_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub alertmanager_urls: Vec<String>,
}

/// Options of the servers that pick instances: the registry's discovery and the gateway.
#[derive(Args)]
#[command(next_help_heading = "Discovery")]
pub struct DiscoveryOptions {
    /// Discovery serves every instance when more than this % of a service's instances
    /// are unhealthy [default: off].
    #[arg(long)]
    pub panic_threshold: Option<u8>,
}

/// The logging server's own options.
#[derive(Args)]
#[command(next_help_heading = "Log storage")]
pub struct LoggingOptions {
    /// Also write the records as rotated, gzipped JSON-lines files in this directory.
    #[arg(long, env = "LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Forward the records to Elasticsearch's `_bulk` API at this URL.
    #[arg(long, env = "ELASTICSEARCH_URL", hide_env_values = true)]
    pub elasticsearch_url: Option<String>,
}

/// The tracing variables every server reads (through the library), which clap cannot
/// list as options: a macro, so the gateway's help can add its own to the same text.
macro_rules! telemetry_help {
    () => {
        "Environment: OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) \
         exports spans over OTLP/HTTP; OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, \
         OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_TRACES_EXPORTER and OTEL_SDK_DISABLED \
         apply as OpenTelemetry defines them (docs/telemetry.md)."
    };
}

/// What the help of the servers without a gateway says after the options.
pub(super) const SERVER_HELP: &str = telemetry_help!();

/// What the help of the commands that run the gateway says after the options.
const GATEWAY_HELP: &str = concat!(
    "Environment: <NAME>_SERVICE_URL (e.g. PRICING_SERVICE_URL=http://pricing-service:3006) \
     is the gateway's static fallback for the service <name>-service when the registry \
     has no healthy instance.\n\n",
    telemetry_help!()
);

/// `orchestra up`: all four servers in one process.
#[derive(Args)]
#[command(after_help = GATEWAY_HELP)]
pub struct UpArgs {
    /// Registry port [default: 3010].
    #[arg(long)]
    pub registry_port: Option<u16>,
    /// Gateway port [default: 3000].
    #[arg(long)]
    pub gateway_port: Option<u16>,
    /// Jobs port [default: 3013].
    #[arg(long)]
    pub jobs_port: Option<u16>,
    /// Logging port [default: 3014].
    #[arg(long)]
    pub logging_port: Option<u16>,
    /// Options of every server.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The registry's options.
    #[command(flatten)]
    pub registry: RegistryOptions,
    /// Discovery's options.
    #[command(flatten)]
    pub discovery: DiscoveryOptions,
    /// The logging server's options.
    #[command(flatten)]
    pub logging: LoggingOptions,
}

/// `orchestra registry`: the registry, events, health and WebSocket server alone.
#[derive(Args)]
#[command(after_help = SERVER_HELP)]
pub struct RegistryArgs {
    /// Port to listen on [default: 3010].
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Options of every server.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The registry's options.
    #[command(flatten)]
    pub registry: RegistryOptions,
    /// Discovery's options.
    #[command(flatten)]
    pub discovery: DiscoveryOptions,
}

/// `orchestra gateway`: the gateway alone.
#[derive(Args)]
#[command(after_help = GATEWAY_HELP)]
pub struct GatewayArgs {
    /// Port to listen on [default: 3000].
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Options of every server.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Discovery's options.
    #[command(flatten)]
    pub discovery: DiscoveryOptions,
}

/// `orchestra jobs` without a subcommand: the jobs server alone.
#[derive(Args)]
pub struct JobsServerArgs {
    /// Port to listen on [default: 3013].
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Options of every server.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `orchestra logging`: the logging server alone.
#[derive(Args)]
#[command(after_help = SERVER_HELP)]
pub struct LoggingArgs {
    /// Port to listen on [default: 3014].
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Options of every server.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The logging server's options.
    #[command(flatten)]
    pub logging: LoggingOptions,
}

/// Every server option in one place, whichever command gave it: what
/// [`Options::to_config`] turns into a [`Config`].
#[derive(Default)]
pub struct Options {
    config: Option<PathBuf>,
    bind: Option<IpAddr>,
    allow_unauthenticated: bool,
    port: Option<u16>,
    registry_port: Option<u16>,
    gateway_port: Option<u16>,
    jobs_port: Option<u16>,
    logging_port: Option<u16>,
    redis_url: Option<String>,
    redis_host: Option<String>,
    redis_port: Option<u16>,
    redis_prefix: Option<String>,
    durability: Option<String>,
    jwt_secret: Option<String>,
    service_public_key: Option<PathBuf>,
    cors_origins: Vec<String>,
    body_limit: Option<usize>,
    default_ttl: Option<u64>,
    grace: Option<u64>,
    panic_threshold: Option<u8>,
    health_interval: Option<u64>,
    database_url: Option<String>,
    alertmanager_urls: Vec<String>,
    log_dir: Option<PathBuf>,
    elasticsearch_url: Option<String>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
}

impl ServeArgs {
    fn options(&self) -> Options {
        Options {
            config: self.config.clone(),
            bind: self.bind,
            allow_unauthenticated: self.allow_unauthenticated,
            redis_url: self.redis_url.clone(),
            redis_host: self.redis_host.clone(),
            redis_port: self.redis_port,
            redis_prefix: self.redis_prefix.clone(),
            durability: self.durability.clone(),
            jwt_secret: self.jwt_secret.clone(),
            service_public_key: self.service_public_key.clone(),
            cors_origins: self.cors_origins.clone(),
            body_limit: self.body_limit,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            ..Options::default()
        }
    }
}

impl Options {
    fn with_registry(mut self, registry: &RegistryOptions, discovery: &DiscoveryOptions) -> Self {
        self.default_ttl = registry.default_ttl;
        self.grace = registry.grace;
        self.health_interval = registry.health_interval;
        self.database_url = registry.database_url.clone();
        self.alertmanager_urls = registry.alertmanager_urls.clone();
        self.panic_threshold = discovery.panic_threshold;
        self
    }

    fn with_logging(mut self, logging: &LoggingOptions) -> Self {
        self.log_dir = logging.log_dir.clone();
        self.elasticsearch_url = logging.elasticsearch_url.clone();
        self
    }
}

/// Servers to run and their options, from one of the server commands.
pub struct ServerRun {
    /// The one server of a single-server command; `None` for `up`.
    pub single: Option<ServerKind>,
    /// The options given.
    pub options: Options,
}

impl UpArgs {
    /// What `orchestra up` runs.
    pub fn run(&self) -> ServerRun {
        let mut options = self
            .serve
            .options()
            .with_registry(&self.registry, &self.discovery)
            .with_logging(&self.logging);
        options.registry_port = self.registry_port;
        options.gateway_port = self.gateway_port;
        options.jobs_port = self.jobs_port;
        options.logging_port = self.logging_port;
        ServerRun {
            single: None,
            options,
        }
    }
}

impl RegistryArgs {
    /// What `orchestra registry` runs.
    pub fn run(&self) -> ServerRun {
        let mut options = self
            .serve
            .options()
            .with_registry(&self.registry, &self.discovery);
        options.port = self.port;
        ServerRun {
            single: Some(ServerKind::Registry),
            options,
        }
    }
}

impl GatewayArgs {
    /// What `orchestra gateway` runs.
    pub fn run(&self) -> ServerRun {
        let mut options = self.serve.options();
        options.panic_threshold = self.discovery.panic_threshold;
        options.port = self.port;
        ServerRun {
            single: Some(ServerKind::Gateway),
            options,
        }
    }
}

impl JobsServerArgs {
    /// What `orchestra jobs` runs.
    pub fn run(&self) -> ServerRun {
        let mut options = self.serve.options();
        options.port = self.port;
        ServerRun {
            single: Some(ServerKind::Jobs),
            options,
        }
    }
}

impl LoggingArgs {
    /// What `orchestra logging` runs.
    pub fn run(&self) -> ServerRun {
        let mut options = self.serve.options().with_logging(&self.logging);
        options.port = self.port;
        ServerRun {
            single: Some(ServerKind::Logging),
            options,
        }
    }
}

/// The subset of options a `--config` file may hold.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileOptions {
    bind: Option<IpAddr>,
    registry_port: Option<u16>,
    gateway_port: Option<u16>,
    jobs_port: Option<u16>,
    logging_port: Option<u16>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    durability: Option<String>,
    cors_origins: Option<Vec<String>>,
    body_limit: Option<usize>,
    default_ttl: Option<u64>,
    grace: Option<u64>,
    panic_threshold: Option<u8>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    health_interval: Option<u64>,
    health_dependencies: Option<std::collections::BTreeMap<String, String>>,
    system_sample_every: Option<u64>,
    alert_rules: Option<Vec<omc_orchestra::health::AlertRule>>,
    /// Alertmanagers alerts go to (`--alertmanager-url` wins).
    alertmanager_urls: Option<Vec<String>>,
    /// Webhooks alerts go to: `[[alert_receivers]]` with `url`, optional `name` and
    /// `headers = { Authorization = "Bearer …" }`.
    alert_receivers: Option<Vec<omc_orchestra::health::WebhookReceiver>>,
    /// Seconds between sends of a firing alert to Alertmanager (60).
    alert_resend_every: Option<u64>,
    /// Seconds a new alert waits before it is first sent (10).
    alert_group_wait: Option<u64>,
    /// Seconds between repeats of a still-firing alert to the webhooks (14400).
    alert_repeat_every: Option<u64>,
    /// This orchestra's URL in alerts (`externalURL`, `generatorURL`); the registry
    /// server's address by default.
    alert_external_url: Option<String>,
    gateway: Option<GatewayConfig>,
    /// Job types the jobs server runs by POSTing them to a registered service, e.g.
    /// `[job_routes.report-generation]` with `service = "report-service"` and
    /// `path = "/jobs/run"`.
    job_routes: Option<std::collections::BTreeMap<String, crate::jobs_dispatch::JobRoute>>,
    /// Deadlines and connection caps of every port: `[http]` with `head_timeout`,
    /// `idle_timeout`, `keep_alive` (seconds) and `max_connections`.
    http: Option<crate::config::ConnectionLimits>,
}

/// Debug-print a server command as the options it runs with, which hide every secret.
macro_rules! debug_as_options {
    ($($command:ty),*) => {$(
        impl std::fmt::Debug for $command {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.run().options.fmt(f)
            }
        }
    )*};
}

debug_as_options!(
    UpArgs,
    RegistryArgs,
    GatewayArgs,
    JobsServerArgs,
    LoggingArgs
);

// Hand-written so that a printed command line never shows a secret or a password.
impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options().fmt(f)
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("config", &self.config)
            .field("bind", &self.bind)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("redis_url", &self.redis_url.as_deref().map(redact))
            .field("redis_host", &self.redis_host)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| MASK))
            .field("service_public_key", &self.service_public_key)
            .field("cors_origins", &self.cors_origins)
            .field(
                "alertmanager_urls",
                &self
                    .alertmanager_urls
                    .iter()
                    .map(|u| redact(u))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Options {
    fn file(&self) -> Result<FileOptions, String> {
        let Some(path) = &self.config else {
            return Ok(FileOptions::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// The servers' configuration; `single` is the server of a single-server command,
    /// which `--port` moves.
    pub fn to_config(&self, single: Option<ServerKind>) -> Result<Config, String> {
        let file = self.file()?;
        let mut config = Config::default();
        config.bind = self.bind.or(file.bind).unwrap_or(config.bind);
        let ports = [
            (
                &mut config.registry_port,
                self.registry_port,
                file.registry_port,
            ),
            (
                &mut config.gateway_port,
                self.gateway_port,
                file.gateway_port,
            ),
            (&mut config.jobs_port, self.jobs_port, file.jobs_port),
            (
                &mut config.logging_port,
                self.logging_port,
                file.logging_port,
            ),
        ];
        for (port, flag, in_file) in ports {
            *port = flag.or(in_file).unwrap_or(*port);
        }
        if let (Some(port), Some(kind)) = (self.port, single) {
            match kind {
                ServerKind::Registry => config.registry_port = port,
                ServerKind::Gateway => config.gateway_port = port,
                ServerKind::Jobs => config.jobs_port = port,
                ServerKind::Logging => config.logging_port = port,
            }
        }
        config.redis_url = self.redis_url.clone().or(file.redis_url).or_else(|| {
            self.redis_host
                .as_ref()
                .map(|host| format!("redis://{host}:{}", self.redis_port.unwrap_or(6379)))
        });
        if let Some(prefix) = self.redis_prefix.clone().or(file.redis_prefix) {
            config.redis_prefix = prefix;
        }
        if let Some(level) = self.durability.clone().or(file.durability) {
            config.durability = level.parse().map_err(|err| format!("{err}"))?;
        }
        config.service_tokens = self.service_tokens()?.map(Arc::new);
        config.allow_unauthenticated = self.allow_unauthenticated;
        config.cors_origins = if self.cors_origins.is_empty() {
            file.cors_origins.unwrap_or_default()
        } else {
            self.cors_origins.clone()
        };
        config.body_limit = self
            .body_limit
            .or(file.body_limit)
            .unwrap_or(config.body_limit);
        if let Some(ttl) = self.default_ttl.or(file.default_ttl) {
            if ttl == 0 {
                return Err("--default-ttl must be at least 1 second".into());
            }
            config.registry.default_ttl = Duration::from_secs(ttl);
        }
        if let Some(grace) = self.grace.or(file.grace) {
            config.registry.grace = Duration::from_secs(grace);
        }
        if let Some(seconds) = self.health_interval.or(file.health_interval) {
            if seconds == 0 {
                return Err("--health-interval must be at least 1 second".into());
            }
            config.health_interval = Duration::from_secs(seconds);
        }
        if let Some(seconds) = file.system_sample_every.filter(|s| *s > 0) {
            config.system_sample_every = Duration::from_secs(seconds);
        }
        if let Some(deps) = file.health_dependencies {
            config.health_dependencies = deps;
        }
        if let Some(url) = &config.redis_url {
            config
                .health_dependencies
                .entry("redis".into())
                .or_insert_with(|| url.clone());
        }
        if let Some(url) = self.database_url.clone().filter(|u| !u.is_empty()) {
            config
                .health_dependencies
                .entry("postgres".into())
                .or_insert(url);
        }
        // A configured rule replaces the built-in one of the same name.
        for rule in file.alert_rules.unwrap_or_default() {
            rule.validate()
                .map_err(|err| format!("alert rule `{}`: {err}", rule.name))?;
            config.alert_rules.retain(|r| r.name != rule.name);
            config.alert_rules.push(rule);
        }
        let receivers = &mut config.alert_receivers;
        receivers.alertmanagers = if self.alertmanager_urls.is_empty() {
            file.alertmanager_urls.unwrap_or_default()
        } else {
            self.alertmanager_urls.clone()
        };
        receivers.alertmanagers.retain(|url| !url.trim().is_empty());
        receivers.webhooks = file.alert_receivers.unwrap_or_default();
        for (seconds, field) in [
            (file.alert_resend_every, &mut receivers.resend_every),
            (file.alert_group_wait, &mut receivers.group_wait),
            (file.alert_repeat_every, &mut receivers.repeat_every),
        ] {
            if let Some(seconds) = seconds {
                *field = Duration::from_secs(seconds);
            }
        }
        receivers.external_url = file.alert_external_url.unwrap_or_default();
        receivers.validate().map_err(|err| err.to_string())?;
        if let Some(dir) = self.log_dir.clone().filter(|d| !d.as_os_str().is_empty()) {
            config.log_dir = Some(dir);
        }
        if let Some(url) = self.elasticsearch_url.clone().filter(|u| !u.is_empty()) {
            config.elasticsearch_url = Some(url);
        }
        config.panic_threshold = self.panic_threshold.or(file.panic_threshold);
        config.gateway = file.gateway.unwrap_or_default();
        // `<NAME>_SERVICE_URL` variables win over the file's static services.
        config
            .gateway
            .static_services
            .extend(GatewayConfig::static_services_from_env(std::env::vars()));
        config.gateway.validate().map_err(|err| err.to_string())?;
        config.job_routes = file.job_routes.unwrap_or_default();
        if let Some(limits) = file.http {
            limits.validate()?;
            config.connections = limits;
        }
        if config.panic_threshold.is_some_and(|p| p > 100) {
            return Err("--panic-threshold is a percentage, 0-100".into());
        }
        if let Some(refusal) = config.exposure() {
            return Err(refusal);
        }
        Ok(config)
    }

    /// The control plane's verifier, from `JWT_SECRET` or `--service-public-key`.
    fn service_tokens(&self) -> Result<Option<TokenVerifier>, String> {
        let secret = self.jwt_secret.as_deref().filter(|s| !s.is_empty());
        match (secret, &self.service_public_key) {
            (Some(_), Some(_)) => {
                Err("set one of JWT_SECRET and --service-public-key, not both".into())
            }
            (Some(secret), None) => TokenVerifier::from_secret(secret.as_bytes())
                .map(Some)
                .map_err(|err| err.to_string()),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
                TokenVerifier::from_public_key_pem(&pem)
                    .map(Some)
                    .map_err(|err| format!("{}: {err}", path.display()))
            }
            (None, None) => Ok(None),
        }
    }

    fn logging(&self) -> (String, LogFormat) {
        let file = self.file().unwrap_or_default();
        (
            self.log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            self.log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Pretty),
        )
    }
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
/// Run the servers until a signal stops them; returns the process exit code.
pub(super) async fn run(run: ServerRun) -> i32 {
    let (level, format) = run.options.logging();
    init_tracing(&level, format);
    let config = match run.options.to_config(run.single) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("orchestra: {message}");
            return 2;
        }
    };
    if config.service_tokens.is_none() && !config.bind.is_loopback() {
        tracing::warn!(
            bind = %config.bind,
            "serving WITHOUT control-plane authentication (--allow-unauthenticated): anyone \
             who reaches these ports may register instances, publish, enqueue and read"
        );
    }
    let kinds: Vec<ServerKind> = match run.single {
        Some(kind) => vec![kind],
        None => ServerKind::ALL.to_vec(),
    };
    let app = match App::start(config.clone(), &kinds).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("orchestra: {err}");
            return 1;
        }
    };
    println!(
        "{}",
        crate::narrate::banner(&app, &config, run.options.config.as_deref())
    );
    tracing::info!(
        servers = kinds.len(),
        "serving; Ctrl-C or SIGTERM stops, SIGHUP reloads the gateway"
    );
    tokio::select! {
        () = shutdown_signal() => {}
        () = reload_on_hangup(&run, &app) => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    app.shutdown().await;
    0
}

/// On every SIGHUP, read the configuration again and hand the gateway its new part.
/// Never returns (pending where there are no signals).
async fn reload_on_hangup(run: &ServerRun, app: &App) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut hangup), Some(gateway)) = (signal(SignalKind::hangup()), app.gateway()) {
            while hangup.recv().await.is_some() {
                let reloaded = run
                    .options
                    .to_config(run.single)
                    .and_then(|config| gateway.reload(config.gateway).map_err(|e| e.to_string()));
                match reloaded {
                    Ok(()) => tracing::info!("gateway configuration reloaded"),
                    Err(err) => tracing::warn!(error = %err, "gateway configuration not reloaded"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (run, app);
    std::future::pending::<()>().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
