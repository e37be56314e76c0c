//! Hedged requests: after a delay, a second attempt on another endpoint; the first answer
//! wins and the other attempt is dropped.
//!
//! Hedging (Dean and Barroso, *The Tail at Scale*, 2013) cuts the latency tail that one slow
//! endpoint adds: a request still unanswered after the delay is sent once more, to an endpoint
//! chosen by the balancer's picker among the others (P2C excluding the first). The first
//! response wins; the slower attempt's future is dropped, which makes hyper close that
//! connection or, when the response had already arrived, return it to the pool: nothing
//! half-read stays pooled. The loser's time so far is fed to its endpoint's peak EWMA, so a
//! slow endpoint also loses the next comparisons.
//!
//! Only requests the policy calls hedgeable are hedged ([`HttpPolicy`](crate::HttpPolicy):
//! idempotent methods and requests with an `Idempotency-Key`, and only when the body can be
//! replayed). Hedges and retries spend from one budget, the balancer's
//! [`RetryBudget`](crate::RetryBudget) (Finagle's `maxExtraLoad`): a slow or failing fleet
//! never receives more than `ratio` extra requests plus `min_per_second`, so hedging cannot
//! double the load during an outage. Hedges never start past the request's deadline.
//!
//! ```
//! use std::time::Duration;
//! use rampart_balance::Hedge;
//! let hedge = Hedge::fixed(Duration::from_millis(50));
//! assert_eq!(hedge.delay(), Duration::from_millis(50));
//! ```
//!
//! Off by default ([`BalanceBuilder::hedge`](crate::BalanceBuilder::hedge)).

use std::time::Duration;

/// When a hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hedge {
    delay: Duration,
}

impl Hedge {
    /// A hedge after a fixed `delay` (at least 1 ms).
    pub fn fixed(delay: Duration) -> Self {
        Self {
            delay: delay.max(Duration::from_millis(1)),
        }
    }

    /// The delay before the hedge.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}
