//! Per-endpoint state: what the picker reads (atomics only) and what the snapshot shows.
//!
//! Every endpoint keeps its outstanding-request count and its peak-EWMA latency in atomics,
//! so the picker reads them without a lock and without a clock: the cost of an endpoint is
//! `(outstanding + 1) × ewma / effective_weight`, the load metric of Finagle's and linkerd's
//! peak-EWMA balancers. The EWMA is updated when a response completes (the only place a clock
//! is read) and decayed by the balancer's maintenance task while the endpoint is idle.
//!
//! The served endpoint is recorded in HTTP response extensions as a [`ServedBy`]:
//!
//! ```
//! use rampart_balance::ServedBy;
//! let served = ServedBy::new("http://10.0.0.7:8080".into());
//! assert_eq!(served.endpoint(), "http://10.0.0.7:8080");
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use rampart_health::Health;

/// The endpoint that served a response, recorded in HTTP response extensions by
/// [`HttpPolicy`](crate::HttpPolicy).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServedBy {
    endpoint: Arc<str>,
}

impl ServedBy {
    /// The endpoint named `endpoint` (its base URI or discovery key).
    pub fn new(endpoint: Arc<str>) -> Self {
        Self { endpoint }
    }

    /// The endpoint's name.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint's name, shared.
    pub fn endpoint_arc(&self) -> &Arc<str> {
        &self.endpoint
    }
}

impl fmt::Display for ServedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint)
    }
}

pub(crate) fn health_to_u8(h: Health) -> u8 {
    match h {
        Health::Unknown => 0,
        Health::Healthy => 1,
        Health::Unhealthy => 2,
    }
}

pub(crate) fn health_from_u8(v: u8) -> Health {
    match v {
        1 => Health::Healthy,
        2 => Health::Unhealthy,
        _ => Health::Unknown,
    }
}

/// One endpoint as the balancer holds it.
///
/// `repr(C, align(64))` with the fields the request path touches first: the picker's loads of
/// two candidates and the chosen endpoint's counters hit one cache line per endpoint, so large
/// pools stay in cache.
#[repr(C, align(64))]
pub(crate) struct Endpoint<S> {
    pub(crate) outstanding: AtomicU64,
    /// Peak-EWMA latency in nanoseconds, as `f64` bits.
    ewma_bits: AtomicU64,
    /// `weight × slow-start factor`, as `f64` bits (never 0).
    effective_weight_bits: AtomicU64,
    /// Raw clock reading of the last EWMA update.
    last_update: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) id: u64,
    health: AtomicU8,
    pub(crate) ejected: AtomicBool,
    pub(crate) draining: AtomicBool,
    /// A failure was fed to the outlier tracker since its last success.
    pub(crate) failing: AtomicBool,
    // ---- cold ----
    pub(crate) failures: AtomicU64,
    /// Static weight (1 by default).
    pub(crate) weight: u32,
    pub(crate) name: Arc<str>,
    pub(crate) served_by: ServedBy,
    pub(crate) service: S,
    /// Passive outlier tracking (absent when outlier detection is off).
    pub(crate) tracker: Option<crate::passive::Tracker>,
}

impl<S> fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S> Endpoint<S> {
    pub(crate) fn new(
        id: u64,
        name: Arc<str>,
        service: S,
        weight: u32,
        initial_ewma: Duration,
        health: Health,
        tracker: Option<crate::passive::Tracker>,
    ) -> Self {
        Self {
            id,
            served_by: ServedBy::new(name.clone()),
            name,
            service,
            weight: weight.max(1),
            outstanding: AtomicU64::new(0),
            ewma_bits: AtomicU64::new((initial_ewma.as_nanos() as f64).to_bits()),
            last_update: AtomicU64::new(0),
            effective_weight_bits: AtomicU64::new(f64::from(weight.max(1)).to_bits()),
            health: AtomicU8::new(health_to_u8(health)),
            ejected: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            tracker,
        }
    }

    #[inline]
    pub(crate) fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_bits.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn effective_weight(&self) -> f64 {
        f64::from_bits(self.effective_weight_bits.load(Ordering::Relaxed))
    }

    pub(crate) fn set_effective_weight(&self, w: f64) {
        let w = if w.is_finite() && w > 0.0 { w } else { 1e-3 };
        self.effective_weight_bits
            .store(w.to_bits(), Ordering::Relaxed);
    }

    /// The P2C load: `(outstanding + 1) × ewma / effective weight`.
    #[inline]
    pub(crate) fn cost(&self) -> f64 {
        let out = self.outstanding.load(Ordering::Relaxed) as f64;
        (out + 1.0) * self.ewma_ns() / self.effective_weight()
    }

    pub(crate) fn health(&self) -> Health {
        health_from_u8(self.health.load(Ordering::Acquire))
    }

    /// Sets the health; returns the previous value.
    pub(crate) fn set_health(&self, h: Health) -> Health {
        health_from_u8(self.health.swap(health_to_u8(h), Ordering::AcqRel))
    }

    pub(crate) fn is_routable(&self, unknown_is_routable: bool) -> bool {
        self.health().is_routable(unknown_is_routable)
            && !self.ejected.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
    }

    /// Folds one latency sample into the peak EWMA (Finagle's `PeakEwma`): a sample above
    /// the average replaces it at once (peak sensitivity); a lower one is averaged in with a
    /// weight that decays with the time since the last update, `exp(-Δt / τ)`.
    pub(crate) fn observe_latency(&self, rtt_ns: f64, now_raw: u64, elapsed_ns: f64, tau_ns: f64) {
        let prev = self.ewma_ns();
        let next = if rtt_ns > prev {
            rtt_ns
        } else {
            let x = elapsed_ns / tau_ns;
            // exp(-x); under load updates are close together and x is tiny, where the
            // second-order Taylor term is exact to 1e-7.
            let w = if x < 0.01 {
                1.0 - x + 0.5 * x * x
            } else {
                (-x).exp()
            };
            prev * w + rtt_ns * (1.0 - w)
        };
        self.ewma_bits.store(next.to_bits(), Ordering::Relaxed);
        self.last_update.store(now_raw, Ordering::Relaxed);
    }

    pub(crate) fn last_update_raw(&self) -> u64 {
        self.last_update.load(Ordering::Relaxed)
    }

    /// Forgets the latency history: the EWMA restarts at `ns`.
    pub(crate) fn reset_ewma(&self, ns: f64) {
        self.ewma_bits.store(ns.to_bits(), Ordering::Relaxed);
    }

    /// Idle decay toward zero: `ewma × factor`.
    pub(crate) fn decay(&self, factor: f64) {
        let prev = self.ewma_ns();
        self.ewma_bits
            .store((prev * factor).to_bits(), Ordering::Relaxed);
    }
}

/// Holds one outstanding request on an endpoint (an index into a routing table, so the
/// endpoint's own reference count is not touched); dropping it releases the count.
pub(crate) struct InFlight<S> {
    table: Arc<crate::balance::shared::Table<S>>,
    index: u32,
    panic_set: bool,
}

impl<S> InFlight<S> {
    #[inline]
    pub(crate) fn start(
        table: Arc<crate::balance::shared::Table<S>>,
        index: usize,
        panic_set: bool,
    ) -> Self {
        let this = Self {
            table,
            index: index as u32,
            panic_set,
        };
        let ep = this.endpoint();
        ep.outstanding.fetch_add(1, Ordering::Relaxed);
        ep.requests.fetch_add(1, Ordering::Relaxed);
        this
    }

    #[inline]
    pub(crate) fn endpoint(&self) -> &Endpoint<S> {
        &self.table.set_of(self.panic_set)[self.index as usize]
    }
}

impl<S> Drop for InFlight<S> {
    #[inline]
    fn drop(&mut self) {
        self.endpoint().outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S> fmt::Debug for InFlight<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InFlight")
            .field(&self.endpoint().name)
            .finish()
    }
}
