//! What the servers say on their own: one block at start saying what runs where, then one
//! INFO line per thing an operator wants to hear about (registrations, deregistrations,
//! expiries, health changes, alerts firing and resolving). Schedules firing and worker
//! pools resizing are told by the library where they happen; per-request lines are DEBUG.

use crate::app::App;
use crate::config::{Config, ServerKind};
use omc_orchestra::events::{types, Event, EventBus};
use omc_orchestra::redact::redact;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// The start block: each server's URL (and the dashboard's), the backend and its Redis
/// topology, the configuration file, whether the control plane needs credentials, the
/// job routes, which job types have a worker here, and trace export.
pub(crate) fn banner(app: &App, config: &Config, config_file: Option<&Path>) -> String {
    let mut out = format!("orchestra {}\n", env!("CARGO_PKG_VERSION"));
    for (kind, addr) in app.addrs() {
        let host = if addr.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            addr.ip().to_string()
        };
        let base = format!("http://{host}:{}", addr.port());
        let _ = writeln!(out, "  {:<10} {base}", kind.name());
        if *kind == ServerKind::Registry {
            let _ = writeln!(out, "  {:<10} {base}/dashboard", "dashboard");
            let _ = writeln!(out, "  {:<10} ws://{host}:{}/ws", "websocket", addr.port());
        }
    }
    let durability = &app.backends().durability;
    let backend = match &config.redis_url {
        Some(url) => format!(
            "redis {} at {} (prefix {}, durability {})",
            durability
                .redis
                .as_ref()
                .map_or("single", |p| p.topology.as_str()),
            redact(url),
            config.redis_prefix,
            config.durability
        ),
        None => "in memory: nothing is kept across a restart (--redis to keep it)".to_owned(),
    };
    let _ = writeln!(out, "  {:<10} {backend}", "backend");
    let file = config_file.map_or_else(
        || "none: defaults, flags and environment".to_owned(),
        |p| p.display().to_string(),
    );
    let _ = writeln!(out, "  {:<10} {file}", "config");
    let auth = match (&config.service_tokens, config.bind.is_loopback()) {
        (Some(_), _) => {
            "on: every call but /health, /metrics and the dashboard page needs a token".to_owned()
        }
        (None, true) => format!("off: listening on {} (loopback) only", config.bind),
        (None, false) => format!(
            "OFF on {}: anyone who reaches these ports may call them (--allow-unauthenticated)",
            config.bind
        ),
    };
    let _ = writeln!(out, "  {:<10} {auth}", "auth");
    let runs_jobs = app.addrs().iter().any(|(k, _)| *k == ServerKind::Jobs);
    if config.job_routes.is_empty() {
        let _ = writeln!(
            out,
            "  {:<10} none: jobs wait for SDK workers (POST /jobs/lease; GET /jobs/workers lists them)",
            "job routes"
        );
    } else {
        for (i, (job_type, route)) in config.job_routes.iter().enumerate() {
            let label = if i == 0 { "job routes" } else { "" };
            let _ = writeln!(
                out,
                "  {label:<10} {job_type} -> POST {}{}{}",
                route.service,
                route.path,
                if runs_jobs {
                    ""
                } else {
                    " (not run here: no jobs server)"
                }
            );
        }
        let _ = writeln!(
            out,
            "  {:<10} other job types wait for SDK workers (GET /jobs/workers lists them)",
            ""
        );
    }
    let tracing = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .ok()
        .filter(|e| !e.trim().is_empty())
        .map_or_else(
            || "off (OTEL_EXPORTER_OTLP_ENDPOINT to export spans)".to_owned(),
            |e| format!("spans exported over OTLP/HTTP to {}", redact(&e)),
        );
    let _ = write!(out, "  {:<10} {tracing}", "tracing");
    out
}

/// Tell every registry change and alert published on `bus` as it happens, until the task
/// is aborted.
pub(crate) fn spawn(bus: &dyn EventBus) -> JoinHandle<()> {
    let mut live = bus.subscribe();
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(event) => tell(&event),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "too many events at once: some were not narrated");
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

fn text<'a>(data: &'a Value, key: &str) -> &'a str {
    data[key].as_str().unwrap_or("-")
}

/// One line for `event`, when it is one an operator wants to hear about.
fn tell(event: &Event) {
    let data = &event.data;
    match event.event_type.as_str() {
        types::SERVICE_REGISTERED => {
            let instance = &data["instance"];
            let again = text(data, "reason") == "updated";
            tracing::info!(
                target: "orchestra::registry",
                service = text(data, "serviceName"),
                id = text(data, "serviceId"),
                address = %format!("{}:{}", text(instance, "host"), instance["port"]),
                version = text(instance, "version"),
                "{}",
                if again { "service registered again" } else { "service registered" }
            );
        }
        types::SERVICE_DEREGISTERED => {
            let expired = text(data, "reason") == "expired";
            tracing::info!(
                target: "orchestra::registry",
                service = text(data, "serviceName"),
                id = text(data, "serviceId"),
                "{}",
                if expired {
                    "service expired: no heartbeat within its TTL and grace, removed"
                } else {
                    "service deregistered"
                }
            );
        }
        types::SERVICE_HEALTH_CHANGED => {
            let to = text(data, "status");
            let from = text(data, "previousStatus");
            let (service, id) = (text(data, "serviceName"), text(data, "serviceId"));
            if to == "critical" {
                tracing::warn!(target: "orchestra::health", service, id, from, to, "service health changed");
            } else {
                tracing::info!(target: "orchestra::health", service, id, from, to, "service health changed");
            }
        }
        types::SYSTEM_ALERT if !data["repeat"].as_bool().unwrap_or(false) => {
            let rule = text(data, "rule");
            let severity = text(data, "severity");
            let labels = data["labels"].to_string();
            let summary = text(data, "summary");
            if text(data, "state") == "firing" {
                tracing::warn!(target: "orchestra::alerts", rule, severity, labels, summary, "alert firing");
            } else {
                tracing::info!(target: "orchestra::alerts", rule, severity, labels, "alert resolved");
            }
        }
        _ => {}
    }
}
