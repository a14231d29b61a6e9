//! The `orchestra` command line: flags override environment variables, which override a
//! TOML file given with `--config`.

use crate::app::{App, Config, ServerKind};
use clap::{Args, Parser, Subcommand, ValueEnum};
use omc_orchestra::access::{Grants, Scope, TokenIssuer, TokenVerifier};
use omc_orchestra::gateway::GatewayConfig;
use omc_orchestra::redact::{redact, MASK};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// omc-orchestra: service registry, API gateway, jobs and logging for the OMC ERP.
#[derive(Parser)]
#[command(name = "orchestra", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Options every command shares.
    #[command(flatten)]
    pub options: Options,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run all four servers in one process: registry 3010, gateway 3000, jobs 3013,
    /// logging 3014.
    Up,
    /// Run the registry server only (port from PORT, default 3010).
    Registry,
    /// Run the gateway server only (port from PORT, default 3000).
    Gateway,
    /// Run the jobs server only (port from PORT, default 3013).
    Jobs,
    /// Run the logging server only (port from PORT, default 3014).
    Logging,
    /// Mint a control-plane service token from JWT_SECRET (or --private-key) and print it.
    Token(TokenArgs),
}

/// What `orchestra token` mints.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The service the token acts for (its `sub`); `registry:write` covers this
    /// service's instances only.
    #[arg(long)]
    pub service: Option<String>,
    /// Space-separated scopes: registry:write, read, events:publish, jobs:write,
    /// logs:write, admin.
    #[arg(long)]
    pub scope: Option<String>,
    /// Mint an admin token (every scope, any service): for operators and the dashboard.
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid: `90s`, `15m`, `12h`, `30d`.
    #[arg(long, default_value = "30d", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Sign with this PEM private key (RSA, P-256 or Ed25519) instead of JWT_SECRET, for
    /// servers started with --service-public-key.
    #[arg(long)]
    pub private_key: Option<PathBuf>,
}

/// `90s`, `15m`, `12h`, `30d` or plain seconds.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30d, 12h or 15m"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}`: use s, m, h or d")),
    };
    // A control-plane token that outlives ten years is a token nobody will rotate.
    match n.checked_mul(unit_secs) {
        Some(secs) if secs > 0 && secs <= 10 * 365 * 86_400 => Ok(Duration::from_secs(secs)),
        _ => Err("the ttl must be between 1 second and 10 years".into()),
    }
}

/// How the server logs.
#[derive(Debug, Clone, Copy, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Options shared by every command.
#[derive(Args)]
pub struct Options {
    /// A TOML file with any of these options (snake_case keys) plus a `[gateway]` table
    /// (`[[gateway.routes]]`, limits, auth, breaker, cache); flags and environment
    /// variables win over it.
    #[arg(long, global = true, env = "ORCHESTRA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1]. Any other address needs control-plane
    /// credentials (JWT_SECRET or --service-public-key) or --allow-unauthenticated.
    #[arg(long, global = true, env = "BIND")]
    pub bind: Option<IpAddr>,
    /// Serve without control-plane credentials on a non-loopback address: anyone who
    /// reaches the ports may register, publish and read. A warning is logged at every
    /// start.
    #[arg(long, global = true, env = "ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Port of a single-server command.
    #[arg(long, global = true, env = "PORT")]
    pub port: Option<u16>,
    /// Registry port for `up`.
    #[arg(long, global = true)]
    pub registry_port: Option<u16>,
    /// Gateway port for `up`.
    #[arg(long, global = true)]
    pub gateway_port: Option<u16>,
    /// Jobs port for `up`.
    #[arg(long, global = true)]
    pub jobs_port: Option<u16>,
    /// Logging port for `up`.
    #[arg(long, global = true)]
    pub logging_port: Option<u16>,
    /// Redis URL; every backend is Redis when set: redis://host:6379 (rediss:// for TLS),
    /// redis+sentinel://s1:26379,s2:26379/mymaster or redis+cluster://h1:6379,h2:6379.
    #[arg(
        long = "redis",
        global = true,
        env = "REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Redis host, used when no URL is given.
    #[arg(long, global = true, env = "REDIS_HOST")]
    pub redis_host: Option<String>,
    /// Redis port, with --redis-host.
    #[arg(long, global = true, env = "REDIS_PORT")]
    pub redis_port: Option<u16>,
    /// Prefix of every Redis key.
    #[arg(long, global = true, env = "REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// When a job, event or log batch is acknowledged: `memory` (Redis has it in memory),
    /// `aof` (in Redis's append-only file on disk), `replica` (a replica has it) or
    /// `aof+replica`. A level Redis's settings cannot keep stops the server at start.
    #[arg(long, global = true, env = "DURABILITY")]
    pub durability: Option<String>,
    /// Control-plane secret (HS256, at least 32 bytes): every endpoint but /health,
    /// /metrics, /openapi.json and the dashboard's page then needs a service token
    /// (`Authorization: Bearer`, minted by `orchestra token`). Gateway routes never use it.
    #[arg(long, global = true, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Verify control-plane tokens with this PEM public key file (RS256, ES256 or EdDSA)
    /// instead of JWT_SECRET.
    #[arg(long, global = true, env = "SERVICE_PUBLIC_KEY")]
    pub service_public_key: Option<PathBuf>,
    /// Browser origin allowed by CORS and on /ws besides same-origin, e.g.
    /// `https://erp.example.com` (repeatable); none when not given.
    #[arg(long = "cors-origin", global = true)]
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, global = true, env = "BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Heartbeat TTL for registrations that do not ask for one, in seconds.
    #[arg(long, global = true)]
    pub default_ttl: Option<u64>,
    /// Seconds an expired instance is kept (critical) before stale cleanup removes it.
    #[arg(long, global = true)]
    pub grace: Option<u64>,
    /// Discovery serves every instance when more than this % of a service's instances
    /// are unhealthy.
    #[arg(long, global = true)]
    pub panic_threshold: Option<u8>,
    /// Seconds between health checks of each instance (metadata `healthInterval` wins).
    #[arg(long, global = true, env = "HEALTH_INTERVAL")]
    pub health_interval: Option<u64>,
    /// Alertmanager to send firing and resolved alerts to, e.g. `http://alertmanager:9093`
    /// (repeatable; the variable takes a comma-separated list). Alerts go to its v2 API
    /// as Prometheus sends them.
    #[arg(
        long = "alertmanager-url",
        global = true,
        env = "ALERTMANAGER_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub alertmanager_urls: Vec<String>,
    /// Log filter (error, warn, info, debug, trace or a tracing directive).
    #[arg(long, global = true, env = "LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The subset of options a `--config` file may hold.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
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

// Hand-written so that a printed command line never shows a secret or a password.
impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("command", &self.command)
            .field("options", &self.options)
            .finish()
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

    /// The servers' configuration for `command`.
    pub fn to_config(&self, command: &Command) -> Result<Config, String> {
        let file = self.file()?;
        let mut config = Config::default();
        config.bind = self.bind.or(file.bind).unwrap_or(config.bind);
        config.registry_port = self
            .registry_port
            .or(file.registry_port)
            .unwrap_or(config.registry_port);
        config.gateway_port = self
            .gateway_port
            .or(file.gateway_port)
            .unwrap_or(config.gateway_port);
        config.jobs_port = self
            .jobs_port
            .or(file.jobs_port)
            .unwrap_or(config.jobs_port);
        config.logging_port = self
            .logging_port
            .or(file.logging_port)
            .unwrap_or(config.logging_port);
        if let (Some(port), Some(kind)) = (self.port, single(command)) {
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
        if let Ok(url) = std::env::var("DATABASE_URL") {
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

    /// The issuer `orchestra token` signs with.
    fn token_issuer(&self, private_key: Option<&PathBuf>) -> Result<TokenIssuer, String> {
        if let Some(path) = private_key {
            let pem = std::fs::read(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            return TokenIssuer::from_private_key_pem(&pem)
                .map_err(|err| format!("{}: {err}", path.display()));
        }
        let secret = self
            .jwt_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or("set JWT_SECRET (the servers' secret) or pass --private-key to sign")?;
        TokenIssuer::from_secret(secret.as_bytes()).map_err(|err| err.to_string())
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

fn single(command: &Command) -> Option<ServerKind> {
    match command {
        Command::Up => None,
        Command::Registry => Some(ServerKind::Registry),
        Command::Gateway => Some(ServerKind::Gateway),
        Command::Jobs => Some(ServerKind::Jobs),
        Command::Logging => Some(ServerKind::Logging),
        Command::Token(_) => None,
    }
}

/// `orchestra token`: the token alone on stdout, so `$(orchestra token …)` works.
fn mint(options: &Options, args: &TokenArgs) -> i32 {
    let minted = options
        .token_issuer(args.private_key.as_ref())
        .and_then(|issuer| {
            let mut grants = Grants::parse_strict(args.scope.as_deref().unwrap_or_default())
                .map_err(|err| err.to_string())?;
            if args.admin {
                grants = grants.with(Scope::Admin);
            }
            if grants == Grants::NONE {
                return Err(
                    "name the grants with --scope \"registry:write read …\" or pass --admin"
                        .to_owned(),
                );
            }
            let service = match (&args.service, args.admin) {
                (Some(service), _) => service.clone(),
                (None, true) => "admin".to_owned(),
                (None, false) => {
                    return Err("--service names the service the token acts for".into())
                }
            };
            issuer
                .mint(&service, grants, args.ttl)
                .map_err(|err| err.to_string())
        });
    match minted {
        Ok(token) => {
            println!("{token}");
            0
        }
        Err(message) => {
            eprintln!("orchestra token: {message}");
            2
        }
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

/// Run the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    if let Command::Token(args) = &cli.command {
        return mint(&cli.options, args);
    }
    let (level, format) = cli.options.logging();
    init_tracing(&level, format);
    let config = match cli.options.to_config(&cli.command) {
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
    let kinds: Vec<ServerKind> = match single(&cli.command) {
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
        crate::narrate::banner(&app, &config, cli.options.config.as_deref())
    );
    tracing::info!(
        servers = kinds.len(),
        "serving; Ctrl-C or SIGTERM stops, SIGHUP reloads the gateway"
    );
    tokio::select! {
        () = shutdown_signal() => {}
        () = reload_on_hangup(&cli, &app) => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    app.shutdown().await;
    0
}

/// On every SIGHUP, read the configuration again and hand the gateway its new part.
/// Never returns (pending where there are no signals).
async fn reload_on_hangup(cli: &Cli, app: &App) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut hangup), Some(gateway)) = (signal(SignalKind::hangup()), app.gateway()) {
            while hangup.recv().await.is_some() {
                let reloaded = cli
                    .options
                    .to_config(&cli.command)
                    .and_then(|config| gateway.reload(config.gateway).map_err(|e| e.to_string()));
                match reloaded {
                    Ok(()) => tracing::info!("gateway configuration reloaded"),
                    Err(err) => tracing::warn!(error = %err, "gateway configuration not reloaded"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (cli, app);
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

#[cfg(test)]
mod tests {
    use super::*;
    use omc_orchestra::durability::Durability;

    #[test]
    fn alert_receivers_come_from_flags_and_the_toml_file_and_hide_secrets() {
        let path = std::env::temp_dir().join(format!("orchestra-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            r#"
alertmanager_urls = ["http://file-am:9093"]
alert_resend_every = 30
alert_group_wait = 2

[[alert_receivers]]
url = "http://hooks.example/orchestra"
headers = { Authorization = "Bearer hook-s3cret" }
"#,
        )
        .unwrap();
        let file = path.to_str().unwrap_or_default();
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
            cli.options.to_config(&cli.command)
        };
        let config = parse(&["orchestra", "--config", file, "registry"]).unwrap();
        let receivers = &config.alert_receivers;
        assert_eq!(receivers.alertmanagers, ["http://file-am:9093"]);
        assert_eq!(receivers.resend_every, Duration::from_secs(30));
        assert_eq!(receivers.group_wait, Duration::from_secs(2));
        assert_eq!(receivers.webhooks.len(), 1);
        assert!(!format!("{config:?}").contains("hook-s3cret"));
        let flags = [
            "orchestra",
            "--config",
            file,
            "--alertmanager-url",
            "http://a:9093",
            "--alertmanager-url",
            "http://u:pw@b:9093",
            "registry",
        ];
        let config = parse(&flags).unwrap();
        assert_eq!(config.alert_receivers.alertmanagers.len(), 2, "flags win");
        assert!(!format!("{config:?}").contains(":pw@"));
        let err = parse(&["orchestra", "--alertmanager-url", "nonsense", "registry"]);
        assert!(err.is_err_and(|e| e.contains("alertmanager_urls")));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn health_settings_and_alert_rules_come_from_the_toml_file() {
        let path = std::env::temp_dir().join(format!("orchestra-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            r#"
health_interval = 10
system_sample_every = 15

[health_dependencies]
postgres = "postgres://postgres@127.0.0.1:5432/postgres"

[[alert_rules]]
name = "HighCpu"
metric = "cpu_usage_percent"
comparison = "above"
threshold = 95.0
clear = 85.0
forSeconds = 600
severity = "critical"

[[alert_rules]]
name = "SlowPricing"
metric = "probe_latency_ms"
comparison = "above"
threshold = 500.0
severity = "warning"
"#,
        )
        .unwrap();
        let cli =
            Cli::try_parse_from(["orchestra", "--config", path.to_str().unwrap(), "registry"])
                .unwrap();
        let config = cli.options.to_config(&cli.command).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(config.health_interval, Duration::from_secs(10));
        assert_eq!(config.system_sample_every, Duration::from_secs(15));
        assert!(config.health_dependencies.contains_key("postgres"));
        let cpu: Vec<_> = config
            .alert_rules
            .iter()
            .filter(|r| r.name == "HighCpu")
            .collect();
        assert_eq!(
            cpu.len(),
            1,
            "the configured rule replaces the built-in one"
        );
        assert_eq!((cpu[0].threshold, cpu[0].for_seconds), (95.0, 600));
        assert!(config.alert_rules.iter().any(|r| r.name == "SlowPricing"));
        assert!(config.alert_rules.iter().any(|r| r.name == "LowDisk"));
    }

    #[test]
    fn an_alert_rule_with_its_clear_threshold_on_the_wrong_side_is_refused() {
        let path = std::env::temp_dir().join(format!("orchestra-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            "[[alert_rules]]\nname = \"X\"\nmetric = \"m\"\ncomparison = \"above\"\n\
             threshold = 1.0\nclear = 2.0\nseverity = \"info\"\n",
        )
        .unwrap();
        let cli =
            Cli::try_parse_from(["orchestra", "--config", path.to_str().unwrap(), "registry"])
                .unwrap();
        let err = cli.options.to_config(&cli.command).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("clear"), "{err}");
    }

    fn config_of(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(args).map_err(|err| err.to_string())?;
        cli.options.to_config(&cli.command)
    }

    #[test]
    fn servers_bind_loopback_unless_told_and_never_open_beyond_it_by_accident() {
        let config = config_of(&["orchestra", "up"]).unwrap();
        assert!(config.bind.is_loopback());
        assert!(config.service_tokens.is_none());

        let refused = config_of(&["orchestra", "--bind", "0.0.0.0", "up"]).unwrap_err();
        for named in [
            "JWT_SECRET",
            "--service-public-key",
            "--allow-unauthenticated",
        ] {
            assert!(refused.contains(named), "{refused}");
        }
        let open = config_of(&[
            "orchestra",
            "--bind",
            "0.0.0.0",
            "--allow-unauthenticated",
            "registry",
        ])
        .unwrap();
        assert!(open.allow_unauthenticated);
        let closed = config_of(&[
            "orchestra",
            "--bind",
            "0.0.0.0",
            "--jwt-secret",
            "a-control-plane-secret-of-32-bytes",
            "up",
        ])
        .unwrap();
        assert!(closed.service_tokens.is_some());
    }

    #[test]
    fn a_short_secret_or_two_kinds_of_key_are_refused() {
        let short = config_of(&["orchestra", "--jwt-secret", "short", "up"]).unwrap_err();
        assert!(
            short.contains("JWT_SECRET") && short.contains("32"),
            "{short}"
        );
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../omc-orchestra/tests/fixtures/keys/ed25519.pub.pem"
        );
        let keyed = config_of(&["orchestra", "--service-public-key", key, "up"]).unwrap();
        assert!(keyed.service_tokens.is_some());
        let both = config_of(&[
            "orchestra",
            "--service-public-key",
            key,
            "--jwt-secret",
            "a-control-plane-secret-of-32-bytes",
            "up",
        ])
        .unwrap_err();
        assert!(both.contains("not both"), "{both}");
    }

    #[test]
    fn debug_prints_of_the_command_line_and_config_hold_no_secret() {
        let args = [
            "orchestra",
            "--redis",
            "redis://app:redis-pw-secret@127.0.0.1:6379/0",
            "--jwt-secret",
            "a-control-plane-secret-of-32-bytes",
            "up",
        ];
        let cli = Cli::try_parse_from(args).unwrap();
        let mut config = cli.options.to_config(&cli.command).unwrap();
        config.health_dependencies.insert(
            "postgres".into(),
            "host=db user=app password=pg-pw-secret".into(),
        );
        for printed in [format!("{cli:?}"), format!("{config:?}")] {
            for secret in ["redis-pw-secret", "a-control-plane-secret", "pg-pw-secret"] {
                assert!(!printed.contains(secret), "{secret} in {printed}");
            }
            assert!(printed.contains("127.0.0.1:6379"), "{printed}");
        }
    }

    #[test]
    fn connection_limits_come_from_the_http_table() {
        let path = std::env::temp_dir().join(format!("orchestra-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, "[http]\nhead_timeout = 3\nmax_connections = 50\n").unwrap();
        let config = config_of(&["orchestra", "--config", path.to_str().unwrap(), "up"]).unwrap();
        assert_eq!(config.connections.head_timeout, Duration::from_secs(3));
        assert_eq!(config.connections.max_connections, 50);
        assert_eq!(config.connections.idle_timeout, Duration::from_secs(30));
        std::fs::write(&path, "[http]\nidle_timeout = 0\n").unwrap();
        let err = config_of(&["orchestra", "--config", path.to_str().unwrap(), "up"]).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("http.idle_timeout"), "{err}");
    }

    #[test]
    fn token_lifetimes_parse_with_units_and_bounds() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "0s", "3w", "-1d", "99999999999999999999d", "20000d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_routes_come_from_the_config_file() {
        let path =
            std::env::temp_dir().join(format!("orchestra-cli-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            r#"
            gateway_port = 3100
            [gateway]
            access_log = true
            [gateway.auth]
            jwt_secret = "end-user-secret"
            [gateway.discovery]
            limits = { second = 50 }
            [[gateway.routes]]
            prefix = "/prices"
            service = "pricing-service"
            methods = ["GET"]
            auth = true
            cache_ttl_secs = 30
            [gateway.static_services]
            legacy-service = "http://10.0.0.9:8080"
            "#,
        )
        .unwrap();
        let cli = Cli::parse_from(["orchestra", "--config", path.to_str().unwrap(), "gateway"]);
        let config = cli.options.to_config(&cli.command).unwrap();
        assert_eq!(config.gateway_port, 3100);
        assert!(config.gateway.access_log);
        assert_eq!(config.gateway.discovery.limits.second, Some(50));
        assert_eq!(config.gateway.routes[0].service, "pricing-service");
        assert_eq!(
            config.gateway.static_services["legacy-service"],
            "http://10.0.0.9:8080"
        );

        std::fs::write(
            &path,
            "[[gateway.routes]]\nprefix = \"nope\"\nservice = \"x\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["orchestra", "--config", path.to_str().unwrap(), "gateway"]);
        let err = cli.options.to_config(&cli.command).unwrap_err();
        assert!(err.contains("gateway.routes[0].prefix"), "{err}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn durability_is_chosen_by_name_and_a_wrong_one_is_named() {
        let config = config_of(&["orchestra", "--durability", "aof+replica", "up"]).unwrap();
        assert_eq!(config.durability, Durability::AofReplica);
        assert_eq!(
            config_of(&["orchestra", "up"]).unwrap().durability,
            Durability::Memory
        );
        let err = config_of(&["orchestra", "--durability", "disk", "up"]).unwrap_err();
        assert!(err.contains("durability"), "{err}");
    }
}
