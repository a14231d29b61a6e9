//! Alert rules on a [`ManualClock`]: `for`, hysteresis, dedupe, repeat, publishing.

use omc_orchestra::events::{types, EventBus, EventQuery, MemoryEventBus};
use omc_orchestra::health::{
    builtin_rules, AlertEngine, AlertRule, AlertState, Comparison, Labels, Severity,
    MAX_RULE_SECONDS,
};
use omc_orchestra::{Error, ManualClock};
use std::sync::Arc;
use std::time::Duration;

/// CPU above 90 for a minute fires; below 80 resolves.
fn cpu_rule() -> AlertRule {
    AlertRule::new("HighCpu", "cpu", Comparison::Above, 90.0, Severity::Warning)
        .clear_at(80.0)
        .for_secs(60)
}

fn engine(rule: AlertRule) -> (AlertEngine, ManualClock) {
    let clock = ManualClock::starting_now();
    (AlertEngine::new(vec![rule], Arc::new(clock.clone())), clock)
}

/// Observe `values` ten seconds apart; every notice they caused, as states.
async fn feed(engine: &AlertEngine, clock: &ManualClock, values: &[f64]) -> Vec<AlertState> {
    let mut states = Vec::new();
    for &value in values {
        for notice in engine.observe("cpu", Labels::new(), value).await {
            states.push(notice.state);
        }
        clock.advance(Duration::from_secs(10));
        states.extend(engine.evaluate().await.into_iter().map(|n| n.state));
    }
    states
}

#[tokio::test]
async fn above_threshold_for_less_than_for_never_fires() {
    let (engine, clock) = engine(cpu_rule());
    // 50 s above, then a dip below the threshold resets the pending timer.
    let states = feed(
        &engine,
        &clock,
        &[95.0, 95.0, 95.0, 95.0, 95.0, 85.0, 95.0, 95.0],
    )
    .await;
    assert!(states.is_empty(), "{states:?}");
    assert_eq!(engine.active()[0].state, AlertState::Pending);
}

#[tokio::test]
async fn above_for_longer_fires_once_and_below_clear_resolves_once() {
    let (engine, clock) = engine(cpu_rule());
    let fired = feed(&engine, &clock, &[95.0; 12]).await;
    assert_eq!(fired, [AlertState::Firing]);
    let resolved = feed(&engine, &clock, &[70.0, 60.0, 75.0]).await;
    assert_eq!(resolved, [AlertState::Resolved]);
    assert!(engine.active().is_empty());
    let history = engine.history(10);
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].value, 70.0);
    assert_eq!(history[1].firing_since, history[0].at);
}

#[tokio::test]
async fn oscillating_inside_the_hysteresis_band_does_not_flap() {
    let (engine, clock) = engine(cpu_rule());
    assert_eq!(
        feed(&engine, &clock, &[95.0; 8]).await,
        [AlertState::Firing]
    );
    let wobble = [85.0, 92.0, 81.0, 91.0, 89.0, 95.0, 80.0, 90.5];
    assert!(feed(&engine, &clock, &wobble).await.is_empty());
    assert_eq!(engine.active()[0].state, AlertState::Firing);
}

#[tokio::test]
async fn a_firing_alert_repeats_only_on_its_interval() {
    let (engine, clock) = engine(cpu_rule().repeat_secs(60));
    let states = feed(&engine, &clock, &[95.0; 20]).await;
    // Fires at 60 s, repeats at 120 s and 180 s within 200 s.
    assert_eq!(states.len(), 3, "{states:?}");
    let history = engine.history(10);
    assert_eq!(
        history.iter().map(|n| n.repeat).collect::<Vec<_>>(),
        [false, true, true]
    );
}

#[tokio::test]
async fn each_series_alerts_on_its_own_and_notices_are_published() {
    let clock = ManualClock::starting_now();
    let shared = Arc::new(clock.clone());
    let bus = Arc::new(MemoryEventBus::new(shared.clone()));
    let engine = AlertEngine::new(builtin_rules(), shared).with_events(bus.clone(), "registry");
    let root = Labels::from([("mount".to_owned(), "/".to_owned())]);
    let data = Labels::from([("mount".to_owned(), "/data".to_owned())]);
    engine.observe("disk_free_percent", root.clone(), 3.0).await;
    engine
        .observe("disk_free_percent", data.clone(), 40.0)
        .await;
    clock.advance(Duration::from_secs(61));
    engine.observe("disk_free_percent", root.clone(), 3.0).await;
    engine.observe("disk_free_percent", data, 40.0).await;
    let active = engine.active();
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].rule.as_str(), &active[0].labels),
        ("LowDisk", &root)
    );
    // 6 % is inside the band (clear at 8 %): still firing; 9 % resolves.
    engine.observe("disk_free_percent", root.clone(), 6.0).await;
    engine.observe("disk_free_percent", root, 9.0).await;
    let events = bus
        .history(&EventQuery {
            event_type: Some(types::SYSTEM_ALERT.into()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let states: Vec<_> = events.iter().map(|e| e.data["state"].clone()).collect();
    assert_eq!(states, ["firing", "resolved"]);
    assert_eq!(events[0].source, "registry");
    assert_eq!(events[0].data["rule"], "LowDisk");
}

#[tokio::test]
async fn job_failures_fed_through_observe_alert() {
    let clock = ManualClock::starting_now();
    let engine = AlertEngine::new(builtin_rules(), Arc::new(clock));
    let labels = Labels::from([("type".to_owned(), "uppf-claim".to_owned())]);
    for failures in 1..=4 {
        let notices = engine
            .observe(
                "job_consecutive_failures",
                labels.clone(),
                f64::from(failures),
            )
            .await;
        assert!(notices.is_empty());
    }
    let notices = engine
        .observe("job_consecutive_failures", labels.clone(), 5.0)
        .await;
    assert_eq!(notices[0].rule, "JobTypeFailing");
    let notices = engine
        .observe("job_consecutive_failures", labels, 0.0)
        .await;
    assert_eq!(notices[0].state, AlertState::Resolved);
}

#[tokio::test]
async fn a_group_lagging_for_five_minutes_alerts_on_its_own() {
    let clock = ManualClock::starting_now();
    let engine = AlertEngine::new(builtin_rules(), Arc::new(clock.clone()));
    let group = |name: &str| Labels::from([("group".to_owned(), name.to_owned())]);
    let mut fired = Vec::new();
    // A minute apart: `reports` stays past 1000 for five minutes; `billing` dips below
    // the clear threshold in between, which starts its five minutes again.
    for billing in [5000.0, 5000.0, 20.0, 5000.0, 5000.0] {
        fired.extend(
            engine
                .observe("event_group_lag", group("reports"), 1500.0)
                .await,
        );
        fired.extend(
            engine
                .observe("event_group_lag", group("billing"), billing)
                .await,
        );
        clock.advance(Duration::from_secs(61));
    }
    fired.extend(
        engine
            .observe("event_group_lag", group("reports"), 1500.0)
            .await,
    );
    let states: Vec<_> = fired
        .iter()
        .map(|n| (n.rule.as_str(), n.labels["group"].as_str(), n.state))
        .collect();
    assert_eq!(
        states,
        [("EventConsumerLagging", "reports", AlertState::Firing)]
    );
    let resolved = engine
        .observe("event_group_lag", group("reports"), 50.0)
        .await;
    assert_eq!(resolved[0].state, AlertState::Resolved);
}

#[test]
fn a_clear_threshold_on_the_wrong_side_is_named() {
    let rule = cpu_rule().clear_at(95.0);
    match rule.validate() {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "clear"),
        other => panic!("expected an invalid clear threshold, got {other:?}"),
    }
    let (engine, _) = engine(rule);
    assert!(engine.rules().is_empty(), "an invalid rule is skipped");
}

fn invalid_field(rule: &AlertRule) -> String {
    match rule.validate() {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected an invalid rule, got {other:?}"),
    }
}

#[tokio::test]
async fn huge_for_and_repeat_durations_are_named_and_skipped() {
    let huge = 9_000_000_000_000_000_000;
    assert_eq!(invalid_field(&cpu_rule().for_secs(huge)), "forSeconds");
    assert_eq!(invalid_field(&cpu_rule().for_secs(u64::MAX)), "forSeconds");
    assert_eq!(
        invalid_field(&cpu_rule().repeat_secs(huge)),
        "repeatSeconds"
    );
    assert_eq!(
        invalid_field(&cpu_rule().repeat_secs(MAX_RULE_SECONDS + 1)),
        "repeatSeconds"
    );
    cpu_rule()
        .for_secs(MAX_RULE_SECONDS)
        .repeat_secs(MAX_RULE_SECONDS)
        .validate()
        .unwrap();

    // As a configuration file gives it.
    let rule: AlertRule = serde_json::from_value(serde_json::json!({
        "name": "Slow", "metric": "cpu", "comparison": "above", "threshold": 90.0,
        "severity": "warning", "forSeconds": huge, "repeatSeconds": huge
    }))
    .unwrap();
    assert_eq!(invalid_field(&rule), "forSeconds");

    // An engine skips such a rule and evaluates the others without overflowing.
    let clock = ManualClock::starting_now();
    let engine = AlertEngine::new(
        vec![
            cpu_rule().for_secs(huge),
            cpu_rule().repeat_secs(MAX_RULE_SECONDS),
        ],
        Arc::new(clock.clone()),
    );
    assert_eq!(engine.rules().len(), 1);
    let fired = feed(&engine, &clock, &[95.0; 8]).await;
    assert_eq!(fired, [AlertState::Firing]);
    clock.advance(Duration::from_secs(MAX_RULE_SECONDS));
    let repeated = engine.evaluate().await;
    assert!(repeated.iter().all(|n| n.repeat), "{repeated:?}");
    assert_eq!(repeated.len(), 1);
}

/// The engine's own timer fires an alert whose `for` passed after the last observation:
/// nothing but `spawn` evaluates here.
#[tokio::test]
async fn the_spawned_loop_fires_an_alert_between_observations() {
    let (engine, clock) = engine(cpu_rule());
    let engine = Arc::new(engine);
    let mut notices = engine.subscribe(8);
    assert!(engine.observe("cpu", Labels::new(), 95.0).await.is_empty());
    clock.advance(Duration::from_secs(61));
    let task = engine.clone().spawn(Duration::from_millis(10));
    // A hang guard, not a speed check: the first tick comes at once.
    let notice = tokio::time::timeout(Duration::from_secs(30), notices.recv())
        .await
        .expect("the loop evaluated")
        .expect("a notice");
    task.abort();
    assert_eq!(notice.state, AlertState::Firing);
    assert_eq!(notice.rule, "HighCpu");
    assert_eq!(engine.active()[0].state, AlertState::Firing);
}

/// The lag watch observes each consumer group's lag from the bus's stats and hands the
/// stats on, so a lagging group fires its alert.
#[tokio::test]
async fn the_lag_watch_fires_for_a_lagging_group_and_hands_the_stats_on() {
    use omc_orchestra::events::{ConsumerOptions, NewEvent};
    use omc_orchestra::health::{spawn_event_lag, EVENT_LAG_METRIC};
    let clock = ManualClock::starting_now();
    let shared: omc_orchestra::SharedClock = Arc::new(clock.clone());
    let bus: Arc<dyn EventBus> = Arc::new(MemoryEventBus::new(shared.clone()));
    let rule = AlertRule::new(
        "Lagging",
        EVENT_LAG_METRIC,
        Comparison::Above,
        2.0,
        Severity::Warning,
    );
    let alerts = Arc::new(AlertEngine::new(vec![rule], shared));
    let mut notices = alerts.subscribe(8);
    let _audit = bus
        .consumer(ConsumerOptions::new("audit", "a1"))
        .await
        .unwrap();
    for n in 0..5 {
        let event = NewEvent::new("PRICE_UPDATED", "pricing", serde_json::json!({ "n": n }));
        bus.publish(event).await.unwrap();
    }
    let (seen, mut read) = tokio::sync::mpsc::unbounded_channel();
    let watch = spawn_event_lag(bus, alerts.clone(), Duration::from_millis(10), move |s| {
        let _ = seen.send(
            s.groups
                .iter()
                .map(|g| (g.group.clone(), g.lag))
                .collect::<Vec<_>>(),
        );
    });
    // Hang guards, not speed checks: the first reading comes at once.
    let groups = tokio::time::timeout(Duration::from_secs(30), read.recv())
        .await
        .expect("the watch read the stats")
        .expect("stats");
    assert_eq!(groups, [("audit".to_owned(), 5)]);
    let notice = tokio::time::timeout(Duration::from_secs(30), notices.recv())
        .await
        .expect("the lag was observed")
        .expect("a notice");
    watch.abort();
    assert_eq!(notice.state, AlertState::Firing);
    assert_eq!(
        notice.labels.get("group").map(String::as_str),
        Some("audit")
    );
}
