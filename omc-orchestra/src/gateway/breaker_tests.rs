//! Breaker transitions on a manual clock.
use super::*;
use crate::{Clock, ManualClock};
use std::sync::Arc;
use std::time::Duration;

fn breakers(clock: &ManualClock) -> Breakers {
    Breakers::new(BreakerConfig::default(), Arc::new(clock.clone()))
}

fn phase(b: &Breakers, id: &str) -> BreakerPhase {
    b.snapshot()
        .into_iter()
        .find(|s| s.instance == id)
        .map_or(BreakerPhase::Closed, |s| s.phase)
}

#[test]
fn consecutive_failures_open_then_half_open_ramps_back() {
    let clock = ManualClock::starting_now();
    let b = breakers(&clock);
    for _ in 0..4 {
        b.record("svc", "a", false, 2);
    }
    assert_eq!(phase(&b, "a"), BreakerPhase::Closed);
    b.record("svc", "a", false, 2);
    assert_eq!(phase(&b, "a"), BreakerPhase::Open);
    assert!(!b.admit("svc", "a"));

    clock.advance(Duration::from_millis(5_000));
    // Half-open: 10 % at first.
    let admitted = (0..100).filter(|_| b.admit("svc", "a")).count();
    assert_eq!(admitted, 10);
    clock.advance(Duration::from_millis(5_000));
    b.record("svc", "a", true, 2);
    assert_eq!(phase(&b, "a"), BreakerPhase::HalfOpen);
    let admitted = (0..100).filter(|_| b.admit("svc", "a")).count();
    assert!(
        (50..=60).contains(&admitted),
        "about 55 % halfway, got {admitted}"
    );
    clock.advance(Duration::from_millis(5_000));
    b.record("svc", "a", true, 2);
    assert_eq!(phase(&b, "a"), BreakerPhase::Closed);
    assert!(b.admit("svc", "a"));
}

#[test]
fn half_open_failure_reopens_for_longer() {
    let clock = ManualClock::starting_now();
    let b = breakers(&clock);
    for _ in 0..5 {
        b.record("svc", "a", false, 2);
    }
    clock.advance(Duration::from_millis(5_000));
    assert!(b.admit("svc", "a"));
    b.record("svc", "a", false, 2);
    let state = &b.snapshot()[0];
    assert_eq!(state.phase, BreakerPhase::Open);
    assert_eq!(state.openings, 2);
    clock.advance(Duration::from_millis(5_000));
    assert!(!b.admit("svc", "a"), "the second opening lasts 10 s");
    clock.advance(Duration::from_millis(5_000));
    assert!(b.admit("svc", "a"));
}

#[test]
fn open_time_is_capped() {
    let clock = ManualClock::starting_now();
    let b = breakers(&clock);
    for _ in 0..5 {
        b.record("svc", "a", false, 2);
    }
    for _ in 0..10 {
        clock.advance(Duration::from_millis(60_000));
        assert!(b.admit("svc", "a"));
        b.record("svc", "a", false, 2);
    }
    let until = b.snapshot()[0].open_until_ms.unwrap();
    assert_eq!(until - clock.now_ms(), 60_000);
}

#[test]
fn failure_ratio_opens_with_enough_volume() {
    let clock = ManualClock::starting_now();
    let b = breakers(&clock);
    for i in 0..30 {
        b.record("svc", "a", i % 2 == 0, 4);
        if i < 19 {
            assert_eq!(phase(&b, "a"), BreakerPhase::Closed, "request {i}");
        }
    }
    assert_eq!(phase(&b, "a"), BreakerPhase::Open);
}

#[test]
fn ejection_is_capped_per_service() {
    let clock = ManualClock::starting_now();
    let b = breakers(&clock);
    for id in ["a", "b"] {
        for _ in 0..5 {
            b.record("svc", id, false, 2);
        }
    }
    assert_eq!(phase(&b, "a"), BreakerPhase::Open);
    assert_eq!(
        phase(&b, "b"),
        BreakerPhase::Closed,
        "50 % of 2 is one ejection"
    );
    assert!(b.admit("svc", "b"));
}

#[test]
fn a_breaker_that_only_succeeds_keeps_a_bounded_window() {
    let clock = ManualClock::starting_now();
    let b = breakers(&clock);
    for _ in 0..500 {
        b.record("svc", "a", true, 1);
        clock.advance(Duration::from_millis(700));
    }
    let buckets = b.all.lock()["a"].buckets.len();
    assert!(
        buckets <= BUCKETS as usize + 1,
        "{buckets} buckets kept after 350 s"
    );
}
