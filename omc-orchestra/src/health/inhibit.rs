//! Dependency-aware inhibition: while a dependency's alert fires, the `ServiceUnavailable`
//! alerts of the services that declared that dependency say so and page nobody, as an
//! Alertmanager `inhibit_rules` entry would, but from the registry's own knowledge.

use super::Labels;
use crate::redact::redact;
use std::collections::{BTreeMap, BTreeSet};

/// The label an inhibited alert carries: `{alertname}/{dependency or service}`.
pub const INHIBITED_BY: &str = "inhibited_by";

/// The rule whose alerts are inhibited (and which, for a service another one depends
/// on, inhibits).
pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";

/// Each registered service's declared `dependencies`, by service name.
pub type ServiceDependencies = BTreeMap<String, BTreeSet<String>>;

/// What inhibits the alert `rule{labels}`, among the `firing` alerts (rule and labels),
/// given each service's dependencies: `Some("DatabaseUnreachable/postgres")`, or `None`
/// when it should be sent.
///
/// Only `ServiceUnavailable` alerts are inhibited. A source is any firing alert with a
/// `dependency` label the service declared, or a `ServiceUnavailable` alert of a service
/// it declared, unless that service declared this one too: two services that depend on
/// each other and are both down would otherwise silence each other and page nobody.
pub fn inhibitor<'a>(
    rule: &str,
    labels: &Labels,
    firing: impl IntoIterator<Item = (&'a str, &'a Labels)>,
    dependencies: &ServiceDependencies,
) -> Option<String> {
    if rule != SERVICE_UNAVAILABLE {
        return None;
    }
    let service = labels.get("service")?;
    let declared = dependencies.get(service)?;
    // Dependency labels are redacted (a URL-named dependency would leak its password), so
    // the declared names are compared in the same form.
    let declared: BTreeSet<String> = declared.iter().map(|d| redact(d)).collect();
    let mut sources: Vec<String> = firing
        .into_iter()
        .filter_map(|(source, source_labels)| {
            if let Some(dependency) = source_labels.get("dependency") {
                return declared
                    .contains(dependency)
                    .then(|| format!("{source}/{dependency}"));
            }
            let other = source_labels.get("service")?;
            let mutual = dependencies
                .get(other)
                .is_some_and(|deps| deps.contains(service));
            (source == SERVICE_UNAVAILABLE
                && other != service
                && !mutual
                && declared.contains(other))
            .then(|| format!("{source}/{other}"))
        })
        .collect();
    // The same answer whatever order the alerts come in.
    sources.sort();
    sources.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn deps(pairs: &[(&str, &[&str])]) -> ServiceDependencies {
        pairs
            .iter()
            .map(|(s, d)| ((*s).to_owned(), d.iter().map(|x| (*x).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn a_firing_database_inhibits_the_services_that_declared_it() {
        let pricing = labels(&[("service", "pricing-service"), ("instance", "p1")]);
        let postgres = labels(&[("dependency", "postgres")]);
        let redis = labels(&[("dependency", "redis")]);
        let topology = deps(&[("pricing-service", &["postgres"])]);
        let firing = [("DatabaseUnreachable", &postgres)];
        assert_eq!(
            inhibitor(SERVICE_UNAVAILABLE, &pricing, firing, &topology).as_deref(),
            Some("DatabaseUnreachable/postgres")
        );
        // A dependency it did not declare inhibits nothing.
        let firing = [("DatabaseUnreachable", &redis)];
        assert_eq!(
            inhibitor(SERVICE_UNAVAILABLE, &pricing, firing, &topology),
            None
        );
        // Nor is anything but ServiceUnavailable inhibited.
        let firing = [("DatabaseUnreachable", &postgres)];
        assert_eq!(inhibitor("HighCpu", &pricing, firing, &topology), None);
        // And an unknown service declared nothing.
        let other = labels(&[("service", "auth-service")]);
        let firing = [("DatabaseUnreachable", &postgres)];
        assert_eq!(
            inhibitor(SERVICE_UNAVAILABLE, &other, firing, &topology),
            None
        );
    }

    #[test]
    fn an_unavailable_service_inhibits_its_dependents_but_not_a_mutual_pair() {
        let pricing = labels(&[("service", "pricing-service")]);
        let auth = labels(&[("service", "auth-service")]);
        let topology = deps(&[("pricing-service", &["auth-service"])]);
        let firing = [
            (SERVICE_UNAVAILABLE, &auth),
            (SERVICE_UNAVAILABLE, &pricing),
        ];
        assert_eq!(
            inhibitor(SERVICE_UNAVAILABLE, &pricing, firing, &topology).as_deref(),
            Some("ServiceUnavailable/auth-service")
        );
        assert_eq!(
            inhibitor(SERVICE_UNAVAILABLE, &auth, firing, &topology),
            None
        );
        let mutual = deps(&[
            ("pricing-service", &["auth-service"]),
            ("auth-service", &["pricing-service"]),
        ]);
        assert_eq!(
            inhibitor(SERVICE_UNAVAILABLE, &pricing, firing, &mutual),
            None
        );
    }

    #[test]
    fn a_dependency_named_by_its_url_matches_its_redacted_label() {
        let url = "postgres://app:hunter2@db:5432/erp";
        let service = labels(&[("service", "inventory")]);
        let dependency = labels(&[("dependency", &redact(url))]);
        let topology = deps(&[("inventory", &[url])]);
        let found = inhibitor(
            SERVICE_UNAVAILABLE,
            &service,
            [("DatabaseUnreachable", &dependency)],
            &topology,
        )
        .unwrap_or_default();
        assert!(found.starts_with("DatabaseUnreachable/postgres://app:"));
        assert!(!found.contains("hunter2"), "{found}");
    }

    #[tokio::test]
    async fn the_engine_labels_inhibited_alerts_and_hands_out_every_notice() {
        use crate::health::{builtin_rules, AlertEngine, AlertState};
        let clock: crate::SharedClock =
            std::sync::Arc::new(crate::ManualClock::new(chrono::Utc::now()));
        let engine = AlertEngine::new(builtin_rules(), clock);
        let mut notices = engine.subscribe(16);
        engine.set_service_dependencies(deps(&[("pricing-service", &["postgres"])]));
        let pricing = labels(&[("service", "pricing-service"), ("instance", "p1")]);
        let auth = labels(&[("service", "auth-service"), ("instance", "a1")]);
        engine
            .observe("instance_critical", pricing.clone(), 1.0)
            .await;
        engine.observe("instance_critical", auth, 1.0).await;
        engine
            .observe(
                "dependency_critical",
                labels(&[("dependency", "postgres")]),
                1.0,
            )
            .await;
        let active = engine.active();
        let by: Vec<_> = active
            .iter()
            .map(|a| (a.labels.get("service"), a.labels.get(INHIBITED_BY)))
            .collect();
        let wanted = "DatabaseUnreachable/postgres".to_owned();
        let (auth, pricing_name) = ("auth-service".to_owned(), "pricing-service".to_owned());
        assert_eq!(
            by,
            [
                (None, None),
                (Some(&auth), None),
                (Some(&pricing_name), Some(&wanted))
            ]
        );
        let mut states = Vec::new();
        while let Ok(notice) = notices.try_recv() {
            states.push((notice.rule, notice.state));
        }
        assert_eq!(states.len(), 3);
        assert!(states.iter().all(|(_, s)| *s == AlertState::Firing));
        // The notice keeps the series' own labels: a later resolve matches it.
        engine.observe("instance_critical", pricing, 0.0).await;
        let resolved = notices
            .try_recv()
            .map(|n| n.labels.contains_key(INHIBITED_BY));
        assert_eq!(resolved.ok(), Some(false));
    }
}
