//! Partitions: guaranteed shares, borrowing of idle shares, shedding order, bypass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_limit::algorithm::Fixed;
use rampart_limit::{Class, Limiter, Overloaded, Permit, ShedReason};

const CHECKOUT: Class = Class::Partition(0);
const PAGES: Class = Class::Partition(1);
const RECS: Class = Class::Partition(2);

fn shop(limit: usize) -> (Limiter, quanta::Clock, std::sync::Arc<quanta::Mock>) {
    let (clock, mock) = quanta::Clock::mock();
    let limiter = Limiter::builder()
        .name("shop")
        .algorithm(Fixed::new(limit).unwrap())
        .partition("checkout", 0.5)
        .partition("pages", 0.4)
        .partition("recommendations", 0.1)
        .partition_idle_after(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    (limiter, clock, mock)
}

fn take(limiter: &Limiter, class: Class, n: usize) -> (Vec<Permit>, usize) {
    let mut held = Vec::new();
    let mut shed = 0;
    for _ in 0..n {
        match limiter.try_acquire(class) {
            Ok(p) => held.push(p),
            Err(e) => {
                assert_eq!(e.reason(), ShedReason::Limit);
                shed += 1;
            }
        }
    }
    (held, shed)
}

#[test]
fn an_idle_partitions_share_can_be_borrowed_up_to_the_limit() {
    let (limiter, _, _) = shop(20);
    let (recs, shed) = take(&limiter, RECS, 25);
    assert_eq!(recs.len(), 20, "recommendations alone use the whole limit");
    assert_eq!(shed, 5, "never more than the limit");
    let snap = limiter.snapshot();
    assert_eq!(snap.in_flight, 20);
    assert_eq!(snap.partitions[2].in_flight, 20);
    assert_eq!(snap.partitions[2].shed, 5);
    assert_eq!(snap.partitions[2].guaranteed, 2);
}

#[test]
fn an_active_partition_gets_its_guarantee_back_as_borrowers_finish() {
    let (limiter, _, _) = shop(20);
    let (mut recs, _) = take(&limiter, RECS, 20);
    // Checkout arrives while recommendations hold everything: shed at the hard cap, but now
    // checkout is active and its unused guarantee (10) is reserved.
    let (none, shed) = take(&limiter, CHECKOUT, 1);
    assert!(none.is_empty() && shed == 1);
    // Borrowed slots come back and are not lent to recommendations again...
    recs.truncate(10);
    let (more, shed) = take(&limiter, RECS, 5);
    assert!(
        more.is_empty(),
        "borrowing stops while checkout's guarantee is unused"
    );
    assert_eq!(shed, 5);
    // ...so checkout reaches its full guarantee.
    let (checkout, shed) = take(&limiter, CHECKOUT, 10);
    assert_eq!((checkout.len(), shed), (10, 0));
    assert_eq!(limiter.in_flight(), 20);
}

#[test]
fn a_partition_within_its_guarantee_is_admitted_while_there_is_room() {
    let (limiter, _, _) = shop(20);
    let (_pages, _) = take(&limiter, PAGES, 8);
    let (_checkout, _) = take(&limiter, CHECKOUT, 10);
    // 18 in flight, 2 left: exactly recommendations' guarantee.
    let (recs, shed) = take(&limiter, RECS, 3);
    assert_eq!((recs.len(), shed), (2, 1));
    assert_eq!(limiter.in_flight(), 20);
}

#[test]
fn under_rising_pressure_the_smallest_share_sheds_first_and_checkout_last() {
    let (limiter, _, _) = shop(20);
    // Demand rises in all three partitions equally, one request each per round.
    let mut held = Vec::new();
    let mut first_shed: [Option<usize>; 3] = [None; 3];
    for round in 0..20 {
        for (i, class) in [CHECKOUT, PAGES, RECS].into_iter().enumerate() {
            match limiter.try_acquire(class) {
                Ok(p) => held.push(p),
                Err(_) => {
                    first_shed[i].get_or_insert(round);
                }
            }
        }
    }
    let [checkout, pages, recs] = first_shed.map(|r| r.expect("every partition sheds"));
    assert!(
        recs < pages && pages < checkout,
        "first shed rounds: recs {recs}, pages {pages}, checkout {checkout}"
    );
    let snap = limiter.snapshot();
    assert_eq!(snap.in_flight, 20);
    // Everyone gets at least its guarantee.
    for p in &snap.partitions {
        assert!(
            p.in_flight >= p.guaranteed,
            "{} has {} of {}",
            p.name,
            p.in_flight,
            p.guaranteed
        );
    }
    assert!(snap.partitions[2].shed > snap.partitions[1].shed);
    assert!(snap.partitions[1].shed > snap.partitions[0].shed);
}

#[test]
fn a_partition_idle_for_long_enough_lends_its_share_again() {
    let (limiter, _, mock) = shop(10);
    drop(take(&limiter, CHECKOUT, 1));
    let (recs, _) = take(&limiter, RECS, 10);
    assert_eq!(
        recs.len(),
        5,
        "checkout was just active: its 5 slots stay reserved"
    );
    drop(recs);
    mock.increment(Duration::from_secs(2));
    let (recs, _) = take(&limiter, RECS, 10);
    assert_eq!(recs.len(), 10, "checkout idle for 2 s: its share is lent");
}

#[test]
fn bypass_requests_are_never_limited_or_counted() {
    let (limiter, _, _) = shop(2);
    let (_held, _) = take(&limiter, CHECKOUT, 2);
    let bypass: Vec<_> = (0..100)
        .map(|_| limiter.try_acquire(Class::Bypass).unwrap())
        .collect();
    assert_eq!(limiter.in_flight(), 2);
    assert_eq!(limiter.snapshot().bypassed, 100);
    drop(bypass);
    assert_eq!(limiter.in_flight(), 2);
}

#[test]
fn shed_errors_name_partition_and_carry_the_never_reached_marker() {
    let (limiter, _, _) = shop(1);
    let _p = limiter.try_acquire(PAGES).unwrap();
    let err: rampart_health::BoxError = limiter.try_acquire(RECS).unwrap_err().into();
    let o = Overloaded::find(&*err).unwrap();
    assert_eq!(o.partition(), Some("recommendations"));
    assert_eq!(o.limiter(), "shop");
    assert!(rampart_health::is_never_reached(&*err));
    assert_eq!(
        rampart_health::retry_after(&*err),
        Some(Duration::from_secs(1))
    );
    assert_eq!(limiter.partition_class("pages"), Some(PAGES));
    assert_eq!(limiter.partition_class("nope"), None);
    // An index past the last partition means the last one.
    let _q = limiter.try_acquire(Class::Partition(0)).err();
    let e = limiter.try_acquire(Class::Partition(99)).unwrap_err();
    assert_eq!(e.partition(), Some("recommendations"));
}
