//! `KeyedBreaker`: bounded memory, by a cap on keys and by evicting idle keys.
//!
//! moka's clock is `std::time::Instant` and cannot be driven from outside the crate (its mock
//! clock is `#[cfg(test)]`-private), and tokio's paused clock does not reach it. So the idle
//! eviction test sleeps for real, and asserts only what a sleep guarantees: once at least the
//! idle timeout has passed without a call, the key is gone. It never asserts that a key is
//! still there after some real time, which would depend on scheduling luck. That idle (not
//! live) expiry is configured is checked deterministically by reading moka's policy back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_breaker::keyed::MAX_IDLE_TIMEOUT;
use rampart_breaker::{BreakerState, KeyedBreaker, Policy, SlidingWindow};
use rampart_health::Outcome;

fn tripping_policy() -> Policy {
    Policy::builder()
        .sliding_window(SlidingWindow::count(2))
        .minimum_calls(1)
        .build()
        .unwrap()
}

#[test]
fn the_number_of_keys_is_capped() {
    let breakers = KeyedBreaker::<u32>::new(Policy::default(), 16, Duration::from_secs(600));
    for key in 0..1_000 {
        let _ = breakers.breaker(&key);
    }
    breakers.run_pending_tasks();
    assert!(breakers.len() <= 16, "{} breakers kept", breakers.len());
    breakers.remove(&999);
    assert!(breakers.get(&999).is_none());
}

#[test]
fn the_least_recently_used_key_is_evicted_and_the_new_one_kept() {
    let breakers = KeyedBreaker::<u32>::new(tripping_policy(), 2, Duration::from_secs(600));
    // Keys 0 and 1 are busy (a frequency-based admission policy such as moka's default
    // TinyLFU would then refuse a newcomer), and 0 is the most recent.
    let zero = breakers.breaker(&0);
    for _ in 0..20 {
        // Run moka's pending work after each access so that its (bounded) read log keeps
        // the exact order.
        let _ = breakers.breaker(&1);
        breakers.run_pending_tasks();
        let _ = breakers.breaker(&0);
        breakers.run_pending_tasks();
    }
    let two = breakers.breaker(&2);
    breakers.run_pending_tasks();
    assert_eq!(breakers.len(), 2);
    assert!(
        breakers.get(&1).is_none(),
        "the least recently used key left"
    );
    assert!(breakers.get(&0).unwrap().same_breaker(&zero));
    // The new key is kept, so its state persists from call to call and it can trip.
    two.try_acquire().unwrap().record(Outcome::Failure);
    let again = breakers.breaker(&2);
    assert!(again.same_breaker(&two));
    assert_eq!(again.state(), BreakerState::Open);
}

#[test]
fn the_cache_is_configured_with_an_idle_timeout_and_a_cap() {
    let breakers = KeyedBreaker::<u32>::new(Policy::default(), 100, Duration::from_secs(90));
    assert_eq!(breakers.max_keys(), Some(100));
    assert_eq!(breakers.idle_timeout(), Some(Duration::from_secs(90)));
}

#[test]
fn out_of_range_settings_are_clamped_instead_of_panicking() {
    let breakers = KeyedBreaker::<u32>::new(Policy::default(), 0, Duration::MAX);
    assert_eq!(breakers.max_keys(), Some(1));
    assert_eq!(breakers.idle_timeout(), Some(MAX_IDLE_TIMEOUT));
    let b = breakers.breaker(&7);
    assert!(breakers.breaker(&7).same_breaker(&b));
}

#[test]
fn an_idle_key_is_evicted_and_comes_back_closed() {
    const IDLE: Duration = Duration::from_millis(20);
    let breakers = KeyedBreaker::<&'static str>::new(tripping_policy(), 100, IDLE);
    let sick = breakers.breaker(&"sick");
    sick.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(sick.state(), BreakerState::Open);

    // Real time (see the module docs): a sleep guarantees at least this much has passed.
    std::thread::sleep(IDLE * 3);

    assert!(breakers.get(&"sick").is_none(), "expired on read");
    breakers.run_pending_tasks();
    assert_eq!(breakers.len(), 0, "and evicted: the memory is released");
    let fresh = breakers.breaker(&"sick");
    assert!(!fresh.same_breaker(&sick));
    assert_eq!(
        fresh.state(),
        BreakerState::Closed,
        "an evicted breaker forgets its state (why the idle timeout should exceed the longest open duration)"
    );
}
