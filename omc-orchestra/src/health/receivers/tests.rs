use super::options::{alertmanager_endpoint, webhook_endpoint};
use super::*;
use crate::health::inhibit::SERVICE_UNAVAILABLE;
use chrono::TimeZone;
use std::collections::BTreeMap;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0)
        .single()
        .unwrap_or_default()
}

fn notice(rule: &str, labels: &[(&str, &str)], state: AlertState, at: i64) -> AlertNotice {
    AlertNotice {
        rule: rule.into(),
        state,
        severity: Severity::Critical,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        value: 1.0,
        threshold: 0.5,
        summary: "it broke".into(),
        firing_since: t(0),
        at: t(at),
        repeat: false,
    }
}

fn dispatch() -> Dispatch {
    Dispatch::new(&ReceiverOptions {
        resend_every: Duration::from_secs(60),
        group_wait: Duration::from_secs(10),
        repeat_every: Duration::from_secs(3600),
        ..ReceiverOptions::default()
    })
}

const PRICING: &[(&str, &str)] = &[("service", "pricing-service"), ("instance", "p1")];
const POSTGRES: &[(&str, &str)] = &[("dependency", "postgres")];

#[test]
fn firing_waits_is_resent_to_alertmanager_and_resolves_once() {
    let mut dispatch = dispatch();
    let none = ServiceDependencies::new();
    dispatch.absorb(notice(SERVICE_UNAVAILABLE, PRICING, AlertState::Firing, 0));
    assert_eq!(dispatch.due(t(5), &none), Due::default(), "group_wait");
    let first = dispatch.due(t(10), &none);
    assert_eq!(first.alertmanager.len(), 1);
    assert_eq!(first.webhooks.len(), 1);
    let alert = &first.alertmanager[0];
    assert_eq!(alert.labels["alertname"], SERVICE_UNAVAILABLE);
    assert_eq!(alert.labels["severity"], "critical");
    assert_eq!(alert.labels["service"], "pricing-service");
    assert_eq!(alert.labels["instance"], "p1");
    assert_eq!(alert.annotations["summary"], "it broke");
    assert_eq!(alert.starts_at, t(0));
    assert_eq!(alert.ends_at, t(10 + 240), "valid for 4 resend intervals");
    assert!(!alert.resolved);
    assert_eq!(dispatch.due(t(30), &none), Due::default());
    let again = dispatch.due(t(70), &none);
    assert_eq!(again.alertmanager.len(), 1, "resent while firing");
    assert!(
        again.webhooks.is_empty(),
        "webhooks only hear again after repeat_every"
    );

    dispatch.absorb(notice(
        SERVICE_UNAVAILABLE,
        PRICING,
        AlertState::Resolved,
        80,
    ));
    let resolved = dispatch.due(t(81), &none);
    assert_eq!(resolved.alertmanager.len(), 1);
    assert_eq!(resolved.webhooks.len(), 1);
    assert!(resolved.alertmanager[0].resolved);
    assert_eq!(resolved.alertmanager[0].ends_at, t(80));
    assert_eq!(dispatch.due(t(200), &none), Due::default(), "resolved once");
}

#[test]
fn an_alert_resolved_before_it_was_sent_is_never_sent() {
    let mut dispatch = dispatch();
    let none = ServiceDependencies::new();
    dispatch.absorb(notice(SERVICE_UNAVAILABLE, PRICING, AlertState::Firing, 0));
    dispatch.absorb(notice(
        SERVICE_UNAVAILABLE,
        PRICING,
        AlertState::Resolved,
        3,
    ));
    assert_eq!(dispatch.due(t(20), &none), Due::default());
}

#[test]
fn a_dependents_alert_is_inhibited_while_its_dependency_fires() {
    let mut dispatch = dispatch();
    let deps =
        ServiceDependencies::from([("pricing-service".to_owned(), ["postgres".to_owned()].into())]);
    // The service's alert fires first; the database's in the same round, just after.
    dispatch.absorb(notice(SERVICE_UNAVAILABLE, PRICING, AlertState::Firing, 0));
    dispatch.absorb(notice(
        "DatabaseUnreachable",
        POSTGRES,
        AlertState::Firing,
        1,
    ));
    let due = dispatch.due(t(11), &deps);
    let names: Vec<_> = due
        .alertmanager
        .iter()
        .chain(&due.webhooks)
        .map(|a| a.labels["alertname"].as_str())
        .collect();
    assert_eq!(names, ["DatabaseUnreachable", "DatabaseUnreachable"]);
    // Once the database is back, the service's own failure pages.
    dispatch.absorb(notice(
        "DatabaseUnreachable",
        POSTGRES,
        AlertState::Resolved,
        20,
    ));
    let due = dispatch.due(t(21), &deps);
    let alertmanager: Vec<_> = due
        .alertmanager
        .iter()
        .map(|a| (a.labels["alertname"].as_str(), a.resolved))
        .collect();
    assert_eq!(
        alertmanager,
        [("DatabaseUnreachable", true), (SERVICE_UNAVAILABLE, false)]
    );
}

#[test]
fn webhook_headers_are_checked_and_never_printed() {
    let hook = WebhookReceiver {
        url: "http://hooks.example/alerts".into(),
        name: None,
        headers: BTreeMap::from([("Authorization".into(), "Bearer s3cret".into())]),
    };
    assert!(!format!("{hook:?}").contains("s3cret"));
    let endpoint = webhook_endpoint(&hook).map_err(|e| e.to_string());
    let sensitive = endpoint.map(|e| e.headers["authorization"].is_sensitive());
    assert_eq!(sensitive, Ok(true));
    let bad = WebhookReceiver {
        headers: BTreeMap::from([("X-Key".into(), "line\nbreak s3cret".into())]),
        ..hook.clone()
    };
    let err = webhook_endpoint(&bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("x-key") && !err.contains("s3cret"), "{err}");
    let not_http = WebhookReceiver {
        url: "ftp://u:pw@x/y".into(),
        ..hook
    };
    let err = webhook_endpoint(&not_http)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("alert_receivers.url") && !err.contains("pw@"),
        "{err}"
    );
}

#[test]
fn an_alertmanager_url_gets_the_v2_path_once() {
    for base in [
        "http://am:9093",
        "http://am:9093/",
        "http://am:9093/api/v2/alerts",
    ] {
        let url = alertmanager_endpoint(base).map(|e| e.url.to_string());
        assert_eq!(url.as_deref().ok(), Some("http://am:9093/api/v2/alerts"));
    }
    assert!(alertmanager_endpoint("not a url").is_err());
}

#[test]
fn an_alert_the_engine_no_longer_fires_resolves_even_without_its_notice() {
    let mut dispatch = dispatch();
    let none = ServiceDependencies::new();
    let firing = notice(SERVICE_UNAVAILABLE, PRICING, AlertState::Firing, 0);
    let key = (firing.rule.clone(), firing.labels.clone());
    dispatch.absorb(firing);
    dispatch.reconcile(&BTreeSet::from([key]), t(10));
    assert_eq!(dispatch.due(t(10), &none).alertmanager.len(), 1);
    // The resolve notice was lost; the engine's list no longer has the alert.
    dispatch.reconcile(&BTreeSet::new(), t(20));
    let due = dispatch.due(t(20), &none);
    assert!(due
        .alertmanager
        .iter()
        .all(|a| a.resolved && a.ends_at == t(20)));
    assert_eq!((due.alertmanager.len(), due.webhooks.len()), (1, 1));
}
