//! Pickers: how one endpoint is chosen among the routable ones.
//!
//! Every picker works on a dense array of the currently routable endpoints, rebuilt only when
//! routability changes, so picking never scans for health and never allocates; the
//! candidates' load is read from the balancer's dense slab of load cells.
//!
//! - [`Picker::PeakEwma`] (default): power of two choices (Mitzenmacher, *The Power of Two
//!   Choices in Randomized Load Balancing*, 2001): two distinct random endpoints, the one with
//!   the lower load wins. The load is `(outstanding + 1) × peak-EWMA latency / weight`, the
//!   metric of Finagle's `PeakEwma` and linkerd's balancer. O(1) per pick at any pool size.
//! - [`Picker::LeastRequest`]: power of two choices on `(outstanding + 1) / weight` only.
//! - [`Picker::RoundRobin`]: a shared counter over the routable array.
//! - [`Picker::WeightedRoundRobin`]: nginx's smooth weighted round robin (O(n) per pick;
//!   meant for small pools whose weights matter more than load).
//! - [`Picker::Random`]: uniformly random.
//! - [`Picker::ConsistentHash`]: a hash ring with virtual nodes (Karger et al., *Consistent
//!   Hashing and Random Trees*, 1997) over a request key; when an endpoint leaves, only the keys
//!   it owned move. Requests without a key are spread at random.
//!
//! ```
//! use rampart_balance::Picker;
//! assert_eq!(Picker::default(), Picker::PeakEwma);
//! let _ring = Picker::ConsistentHash { virtual_nodes: 160 };
//! ```

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::table::SetView;

/// How the balancer chooses among routable endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Picker {
    /// Power of two choices over `(outstanding + 1) × peak-EWMA latency / weight` (default).
    #[default]
    PeakEwma,
    /// Power of two choices over `(outstanding + 1) / weight`.
    LeastRequest,
    /// Round robin over the routable endpoints (weights ignored).
    RoundRobin,
    /// nginx's smooth weighted round robin (weights and slow start respected).
    WeightedRoundRobin,
    /// Uniformly random.
    Random,
    /// Consistent hashing on the request key, `virtual_nodes` points per unit of weight.
    ConsistentHash {
        /// Points on the ring per endpoint (per unit of weight); 100–200 keeps the spread even.
        virtual_nodes: u32,
    },
}

/// How the peak-EWMA latency estimate behind [`Picker::PeakEwma`] starts, decays and counts
/// failures (defaults: 1 ms, 10 s, no penalty).
///
/// ```
/// use std::time::Duration;
/// use rampart_balance::LatencyEstimate;
/// let estimate = LatencyEstimate::default()
///     .initial(Duration::from_millis(5))
///     .failure_penalty(Duration::from_millis(250));
/// # let _ = estimate;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyEstimate {
    pub(crate) initial: Duration,
    pub(crate) decay: Duration,
    pub(crate) failure_penalty: Duration,
}

impl Default for LatencyEstimate {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(1),
            decay: Duration::from_secs(10),
            failure_penalty: Duration::ZERO,
        }
    }
}

impl LatencyEstimate {
    /// The estimate of an endpoint before its first response, when the pool has no
    /// measurement yet (default 1 ms; later endpoints start at the pool's mean). Positive.
    pub fn initial(mut self, rtt: Duration) -> Self {
        self.initial = rtt;
        self
    }

    /// The decay time τ (default 10 s, linkerd's); at least 1 ms.
    pub fn decay(mut self, tau: Duration) -> Self {
        self.decay = tau;
        self
    }

    /// The least latency a failed attempt (per the policy's classifier) counts as (default
    /// zero, at most 60 s). A failure always counts as twice the larger of its own latency and
    /// the current average, so an endpoint that fails fast never looks faster than its
    /// siblings; a penalty (linkerd's "failure penalty") makes a single fast failure cost at
    /// least this much.
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.failure_penalty = penalty;
        self
    }
}

impl Picker {
    pub(crate) fn needs_key(&self) -> bool {
        matches!(self, Picker::ConsistentHash { .. })
    }
}

/// Endpoint ids already tried by one request (bounded by the attempt limit).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tried {
    ids: [u64; Tried::CAP],
    len: usize,
}

impl Tried {
    pub(crate) const CAP: usize = 8;

    pub(crate) fn push(&mut self, id: u64) {
        if self.len < Self::CAP {
            self.ids[self.len] = id;
            self.len += 1;
        } else {
            // Keep the most recent ids.
            self.ids.rotate_left(1);
            self.ids[Self::CAP - 1] = id;
        }
    }

    #[inline]
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.ids[..self.len].contains(&id)
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Picks an index into `set`, avoiding endpoints in `tried`. `None` when every endpoint of the
/// set has been tried (or the set is empty).
pub(crate) fn pick<S>(
    picker: Picker,
    set: &SetView<'_, S>,
    rng: &mut fastrand::Rng,
    key: Option<u64>,
    tried: &Tried,
) -> Option<usize> {
    let n = set.len();
    if n == 0 {
        return None;
    }
    if !tried.is_empty() {
        return pick_excluding(picker, set, rng, key, tried);
    }
    if n == 1 {
        return Some(0);
    }
    let state = set.state;
    Some(match picker {
        Picker::PeakEwma => {
            let (a, b) = two_distinct(rng, n);
            if set.load(b).cost() < set.load(a).cost() {
                b
            } else {
                a
            }
        }
        Picker::LeastRequest => {
            let (a, b) = two_distinct(rng, n);
            if set.load(b).requests_cost() < set.load(a).requests_cost() {
                b
            } else {
                a
            }
        }
        Picker::RoundRobin => state.rr.fetch_add(1, Ordering::Relaxed) % n,
        Picker::Random => rng.usize(..n),
        Picker::WeightedRoundRobin => smooth_wrr(set, |_| false)?,
        Picker::ConsistentHash { .. } => match (key, &state.ring) {
            (Some(k), Some(ring)) => ring.lookup(k, |_| false)?,
            _ => rng.usize(..n),
        },
    })
}

#[inline]
fn two_distinct(rng: &mut fastrand::Rng, n: usize) -> (usize, usize) {
    let a = rng.usize(..n);
    let mut b = rng.usize(..n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

/// nginx's smooth weighted round robin: every endpoint's current weight grows by its
/// effective weight, the largest wins and pays back the total.
fn smooth_wrr<S>(set: &SetView<'_, S>, skip: impl Fn(usize) -> bool) -> Option<usize> {
    let mut current = set.state.wrr.lock().ok()?;
    if current.len() != set.len() {
        current.clear();
        current.resize(set.len(), 0.0);
    }
    let mut total = 0.0;
    let mut best: Option<usize> = None;
    for i in 0..set.len() {
        if skip(i) {
            continue;
        }
        let w = set.load(i).effective_weight();
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

/// The slow path for retries: the same policy over the endpoints not yet tried.
fn pick_excluding<S>(
    picker: Picker,
    set: &SetView<'_, S>,
    rng: &mut fastrand::Rng,
    key: Option<u64>,
    tried: &Tried,
) -> Option<usize> {
    let n = set.len();
    let excluded = |i: usize| tried.contains(set.endpoints[i].id);
    // A scan from a random offset finds an untried endpoint in at most `tried.len + 1` steps
    // when the set is larger than the tried list.
    let scan = |rng: &mut fastrand::Rng| {
        let start = rng.usize(..n);
        (0..n).map(|k| (start + k) % n).find(|&i| !excluded(i))
    };
    match picker {
        Picker::PeakEwma | Picker::LeastRequest => {
            let a = scan(rng)?;
            let b = scan(rng).unwrap_or(a);
            let cost = |i: usize| {
                if picker == Picker::PeakEwma {
                    set.load(i).cost()
                } else {
                    set.load(i).requests_cost()
                }
            };
            Some(if cost(b) < cost(a) { b } else { a })
        }
        Picker::WeightedRoundRobin => smooth_wrr(set, excluded),
        Picker::ConsistentHash { .. } => match (key, &set.state.ring) {
            (Some(k), Some(ring)) => ring.lookup(k, excluded),
            _ => scan(rng),
        },
        Picker::RoundRobin | Picker::Random => scan(rng),
    }
}
