//! The `shop-killed` phase: shop A is SIGKILLed at a moment it holds a recorded, unanswered
//! order whose customer is still waiting, checked on the frozen process, and restarted within
//! the phase (with one shared order store it stays dead and shop B confirms its orders).
//! After the run, what became of the orders caught in shop A is followed up.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::phases::{Replica, fault_body};
use super::report::OrderFacts;
use super::stage::Stage;
use super::store::{SharedDb, in_both, unanswered_orders};
use super::topology::Topology;
use super::{KillFacts, held, load};

/// Shop A's checkouts that it recorded and has not answered, and whose customer is still
/// waiting (the load's in-flight keys).
async fn caught_checkouts(
    topo: &Topology,
    inflight: &load::InFlight,
    shared: Option<&SharedDb>,
) -> Vec<String> {
    let recorded_after = crate::unix_now_ms() - checkout_budget_ms() + 250;
    let found = if let Some(db) = shared {
        db.unanswered(recorded_after).await.unwrap_or_default()
    } else {
        let Some(db) = topo.shop_outbox(0) else {
            return Vec::new();
        };
        tokio::task::spawn_blocking(move || unanswered_orders(&db, recorded_after))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    found.into_iter().filter(|k| inflight.contains(k)).collect()
}

/// How long a shop's `POST /checkout` waits for checkout before answering "pending" (half
/// the page deadline; the chaos shops keep the default).
fn checkout_budget_ms() -> i64 {
    (crate::config::ShopConfig::default().page_deadline / 2).as_millis() as i64
}

/// Kills shop A with SIGKILL in the middle of a checkout, from 30 % of the phase on.
///
/// What is guaranteed when [`KillFacts::caught_orders`] is non-zero: at the SIGKILL, shop A
/// had written each of those orders durably to its outbox, had not answered its customer and
/// could not any more. The runner checks this on a frozen process: when shop A's outbox (read
/// without disturbing it) shows a candidate whose customer is waiting, it stops shop A with
/// SIGSTOP, waits until every thread is stopped, reads the outbox again (pending, no finished
/// forwarding attempt, recorded within the checkout budget) and intersects it with the
/// checkouts its customers are still waiting for; if that is not empty, the frozen shop is
/// SIGKILLed, otherwise resumed with SIGCONT and the search goes on.
///
/// Such a moment is made, not waited for (see [`held`]): checkout holds every order it is sent
/// while the runner looks, and the runner places its own checkout straight at shop A, which
/// then sits recorded and unanswered in shop A for the shop's whole checkout budget. Once shop
/// A is killed the hold is lifted (checkout is back to the phase's `slow`). Should 85 % of the
/// phase pass without a catch, it kills anyway and reports `caught_orders: 0`.
pub(super) async fn kill_mid_checkout(
    topo: &mut Topology,
    inflight: &load::InFlight,
    phase_start: Instant,
    phase_len: Duration,
    kill: &mut KillFacts,
    shared: Option<&SharedDb>,
) -> Result<(), String> {
    tokio::time::sleep_until(phase_start + phase_len.mul_f64(0.3)).await;
    let latest = phase_start + phase_len.mul_f64(0.85);
    // The phase follows `everything-down`: wait until shop A forwards checkouts again (its
    // checkout breaker closed, a healthy replica), or the held order would be answered `202`
    // at once, never reaching checkout.
    while Instant::now() < latest && !topo.shop_checkout_ready(0).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    topo.fault(fault_body(&("checkout", "*", Replica::All, "hold")))
        .await?;
    let shop_a = topo.shop_url(0)?;
    let mut rng = fastrand::Rng::with_seed(phase_start.elapsed().as_nanos() as u64);
    let mut held: Vec<held::Held> = Vec::new();
    let mut caught_any = false;
    while Instant::now() < latest {
        if held.last().is_none_or(|h| h.0.is_finished()) && topo.shop_checkout_ready(0).await {
            // The previous one was answered (its budget ran out before the runner looked).
            kill.held_checkouts += 1;
            held.push(held::send(&shop_a, inflight, &mut rng));
        }
        if !caught_checkouts(topo, inflight, shared).await.is_empty() {
            kill.freezes += 1;
            if topo.freeze_shop(0).await? {
                let caught = caught_checkouts(topo, inflight, shared).await;
                if !caught.is_empty() {
                    kill.checkouts_in_flight = inflight.len() as u64;
                    kill.caught_orders = caught.len() as u64;
                    kill.caught_keys = caught;
                    caught_any = true;
                    break;
                }
                topo.thaw_shop(0)?;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if !caught_any {
        kill.checkouts_in_flight = inflight.len() as u64;
    }
    topo.kill_shop(0);
    // Lift the hold: the orders held in shop B are released (a 503, so they stay pending and
    // are replayed) and checkout is healthy again.
    topo.fault(fault_body(&("checkout", "*", Replica::All, "none")))
        .await?;
    // The held checkouts end with shop A's connections; wait for them briefly.
    for mut h in held {
        let outcome = tokio::time::timeout(Duration::from_secs(2), &mut h.0).await;
        kill.held_outcomes.push(match outcome {
            Ok(Ok(o)) => o,
            _ => "no answer".to_owned(),
        });
    }
    Ok(())
}

/// The `shop-killed` phase from its 30 % on: shop A killed mid-checkout, then restarted 20 %
/// of a phase later (within the phase) unless the shops share one order store. Returns the
/// chart's events; `start` is the start of the load.
pub(super) async fn shop_killed(
    stage: &mut Stage,
    inflight: &load::InFlight,
    start: Instant,
    phase_start: Instant,
    phase_len: Duration,
    kill: &mut KillFacts,
) -> Result<Vec<(f64, String)>, String> {
    kill_mid_checkout(
        &mut stage.topo,
        inflight,
        phase_start,
        phase_len,
        kill,
        stage.shared.as_ref(),
    )
    .await?;
    kill.killed_at_s = start.elapsed().as_secs_f64();
    if stage.shared.is_some() {
        // One shared order store: shop A stays dead, shop B confirms its orders.
        return Ok(vec![(
            kill.killed_at_s,
            "SIGKILL shop A (not restarted)".to_owned(),
        )]);
    }
    let mut events = vec![(kill.killed_at_s, "SIGKILL shop A".to_owned())];
    // Restart 20 % of a phase later, but within the phase.
    let phase_end = phase_start + phase_len;
    let restart_at =
        (Instant::now() + phase_len.mul_f64(0.2)).min(phase_end - Duration::from_millis(100));
    tokio::time::sleep_until(restart_at).await;
    kill.restarted_at_s = start.elapsed().as_secs_f64();
    let took = stage.topo.restart_shop(0).await?;
    kill.ready_after_s = took.as_secs_f64();
    events.push((kill.restarted_at_s, "restart shop A".to_owned()));
    Ok(events)
}

/// With one shared order store, how many of the orders caught in shop A shop B confirmed
/// (read while the store's server runs); `None` with one outbox per shop.
pub(super) async fn caught_confirmed_by_b(
    shared: Option<&SharedDb>,
    kill: &KillFacts,
) -> Option<Result<u64, String>> {
    match shared {
        Some(db) => Some(db.confirmed_by_others(&kill.caught_keys).await),
        None => None,
    }
}

/// What became of the orders caught in shop A: in both shops' outboxes under `dir` (read
/// once the shops are stopped) or confirmed by shop B (`by_b`, with one shared order store),
/// and confirmed exactly once (`confirmed`: rows per key in the checkout database).
pub(super) async fn follow_caught(
    kill: &mut KillFacts,
    orders: &mut OrderFacts,
    confirmed: &HashMap<String, u64>,
    dir: &Path,
    by_b: Option<Result<u64, String>>,
) {
    let outboxes = [dir.join("shop-a/outbox.db"), dir.join("shop-b/outbox.db")];
    let caught = kill.caught_keys.clone();
    let both = tokio::task::spawn_blocking(move || in_both(&outboxes, &caught))
        .await
        .ok()
        .and_then(Result::ok);
    orders.in_both_outboxes = both.map(|b| b.0);
    kill.caught_retried_on_other_shop = both.map(|b| b.1);
    if let Some(by_b) = by_b {
        // One shared outbox: "retried on the other shop" is "confirmed by the other shop".
        orders.in_both_outboxes = None;
        kill.caught_retried_on_other_shop = by_b.ok();
    }
    kill.caught_confirmed_once = kill
        .caught_keys
        .iter()
        .filter(|k| confirmed.get(k.as_str()) == Some(&1))
        .count() as u64;
}
