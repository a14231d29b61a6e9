//! `get_system_dashboard`: what a dashboard shows at a glance.

use crate::ws::WsState;
use omc_orchestra::events::{types, EventQuery};
use omc_orchestra::health::{summarize, SummarySources};
use serde_json::{json, Value};

/// Requests served so far: (all, 4xx, 5xx), from the server's own metrics.
fn request_counts(state: &WsState) -> (u64, u64, u64) {
    let (mut total, mut client, mut server) = (0, 0, 0);
    for family in state.metrics.registry().gather() {
        if !family.name().ends_with("http_requests_total") {
            continue;
        }
        for metric in family.get_metric() {
            let count = metric.get_counter().get_value() as u64;
            let status = metric
                .get_label()
                .iter()
                .find(|l| l.name() == "status")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            total += count;
            match status.as_bytes().first() {
                Some(b'4') => client += count,
                Some(b'5') => server += count,
                _ => {}
            }
        }
    }
    (total, client, server)
}

/// Service counts from the registry, recent alerts, event counts, and request and error
/// rates of this server since it started.
pub(crate) async fn system_dashboard(state: &WsState) -> omc_orchestra::Result<Value> {
    let summary = summarize(state.registry.as_ref(), SummarySources::default()).await?;
    let services = summary.services;
    let alerts = state
        .bus
        .history(&EventQuery {
            event_type: Some(types::SYSTEM_ALERT.into()),
            limit: Some(10),
            ..Default::default()
        })
        .await?;
    let stats = state.bus.stats().await?;
    let (requests, client_errors, server_errors) = request_counts(state);
    let uptime = state.started.elapsed().as_secs_f64().max(1.0);
    Ok(json!({
        "services": {
            "total": services.total,
            "healthy": services.passing,
            "warning": services.warning,
            "unhealthy": services.critical,
            "names": summary.service_names,
        },
        "recentAlerts": alerts,
        "events": stats.total,
        "requests": {
            "total": requests,
            "clientErrors": client_errors,
            "serverErrors": server_errors,
            "perSecond": requests as f64 / uptime,
            "errorRate": if requests == 0 { 0.0 } else { server_errors as f64 / requests as f64 },
        },
        "connections": state.hub.connections(),
        "at": chrono::Utc::now(),
    }))
}
