use std::time::Duration;

use tokio::time::Instant;

use super::{Hold, Step};

const HOLD: Duration = Duration::from_secs(30);

fn down() -> Hold {
    Hold {
        admitted: 0.0,
        pending_since: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_rise_waits_the_whole_hold_then_is_admitted() {
    let mut h = down();
    let t0 = Instant::now();
    assert_eq!(h.observe(1.0, HOLD, true, t0), Step::Pending);
    assert_eq!(h.admitted, 0.0);
    assert_eq!(h.deadline(HOLD), Some(t0 + HOLD));
    assert_eq!(
        h.observe(1.0, HOLD, true, t0 + HOLD - Duration::from_millis(1)),
        Step::Quiet
    );
    assert_eq!(h.admitted, 0.0);
    assert_eq!(h.observe(1.0, HOLD, true, t0 + HOLD), Step::Admitted);
    assert_eq!(h.admitted, 1.0);
    assert_eq!(h.deadline(HOLD), None);
}

#[tokio::test(start_paused = true)]
async fn a_dip_during_the_hold_cancels_it_and_a_fall_is_taken_at_once() {
    let mut h = down();
    let t0 = Instant::now();
    h.observe(1.0, HOLD, true, t0);
    assert_eq!(h.observe(0.0, HOLD, true, t0 + HOLD / 2), Step::Cancelled);
    assert_eq!(h.deadline(HOLD), None);

    let mut up = Hold {
        admitted: 1.0,
        pending_since: None,
    };
    assert_eq!(up.observe(0.4, HOLD, true, t0), Step::Quiet);
    assert_eq!(up.admitted, 0.4);
}

#[tokio::test(start_paused = true)]
async fn a_rise_is_taken_at_once_when_nothing_else_serves_or_no_hold_is_set() {
    let t0 = Instant::now();
    let mut h = down();
    assert_eq!(h.observe(1.0, HOLD, false, t0), Step::Quiet);
    assert_eq!(h.admitted, 1.0);
    let mut h = down();
    assert_eq!(h.observe(0.5, Duration::ZERO, true, t0), Step::Quiet);
    assert_eq!(h.admitted, 0.5);
}
