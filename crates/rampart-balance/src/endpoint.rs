//! Per-endpoint state: what the picker reads (atomics only) and what the snapshot shows.
//!
//! Every endpoint keeps its outstanding-request count and its peak-EWMA latency in atomics,
//! so the picker reads them without a lock and without a clock: the cost of an endpoint is
//! `(outstanding + 1) × ewma / effective_weight`, the load metric of Finagle's and linkerd's
//! peak-EWMA balancers. The EWMA is updated when a response completes (the only place a clock
//! is read) and decayed by the balancer's maintenance task while the endpoint is idle.
//!
//! These atomics live in one dense slab per balancer (32 bytes per endpoint), not in each
//! endpoint's allocation: at 10 000 endpoints the picker's two random reads then hit a
//! 320 KB array that stays in cache instead of two cache lines somewhere in a few MB.
//!
//! The served endpoint is recorded in HTTP response extensions as a [`ServedBy`]:
//!
//! ```
//! use rampart_balance::ServedBy;
//! let served = ServedBy::new("http://10.0.0.7:8080".into());
//! assert_eq!(served.endpoint(), "http://10.0.0.7:8080");
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
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

/// Cells per slab chunk.
const CHUNK: usize = 256;

/// `failing` flag in [`LoadCell::outstanding`] (the count uses the low 31 bits).
const FAILING: u32 = 1 << 31;

/// The per-endpoint load state the request path touches, packed into 32 bytes so that the
/// cells of a 10 000-endpoint pool (320 KB) stay in a core's L2 cache: outstanding requests
/// and the "failing" flag, the peak-EWMA latency, the effective weight, the time of the last
/// latency sample and the request count.
#[derive(Debug)]
#[repr(C, align(32))]
pub(crate) struct LoadCell {
    /// Outstanding requests (low 31 bits) and [`FAILING`].
    outstanding: AtomicU32,
    /// Peak-EWMA latency in nanoseconds, as `f32` bits (24 bits of precision are plenty for
    /// comparing latencies).
    ewma_bits: AtomicU32,
    /// `weight × slow-start factor`, as `f64` bits (never 0).
    effective_weight_bits: AtomicU64,
    /// Raw clock reading of the last EWMA update.
    last_update: AtomicU64,
    requests: AtomicU64,
}

impl LoadCell {
    fn empty() -> Self {
        Self {
            outstanding: AtomicU32::new(0),
            ewma_bits: AtomicU32::new(0),
            effective_weight_bits: AtomicU64::new(1f64.to_bits()),
            last_update: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn reset(&self, ewma_ns: f64, weight: f64) {
        self.outstanding.store(0, Ordering::Relaxed);
        self.reset_ewma(ewma_ns);
        self.effective_weight_bits
            .store(weight.to_bits(), Ordering::Relaxed);
        self.last_update.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
    }

    /// One request starts on this endpoint.
    #[inline]
    pub(crate) fn start(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// One request finished.
    #[inline]
    pub(crate) fn finish(&self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed) & !FAILING
    }

    #[inline]
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A failure was fed to the outlier tracker since its last success.
    #[inline]
    pub(crate) fn failing(&self) -> bool {
        self.outstanding.load(Ordering::Relaxed) & FAILING != 0
    }

    #[inline]
    pub(crate) fn set_failing(&self, failing: bool) {
        if failing {
            self.outstanding.fetch_or(FAILING, Ordering::Relaxed);
        } else {
            self.outstanding.fetch_and(!FAILING, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn ewma_ns(&self) -> f64 {
        f64::from(f32::from_bits(self.ewma_bits.load(Ordering::Relaxed)))
    }

    #[inline]
    pub(crate) fn effective_weight(&self) -> f64 {
        f64::from_bits(self.effective_weight_bits.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn set_effective_weight(&self, w: f64) {
        let w = if w.is_finite() && w > 0.0 { w } else { 1e-3 };
        self.effective_weight_bits
            .store(w.to_bits(), Ordering::Relaxed);
    }

    /// The P2C load: `(outstanding + 1) × ewma / effective weight`.
    #[inline]
    pub(crate) fn cost(&self) -> f64 {
        (f64::from(self.outstanding()) + 1.0) * self.ewma_ns() / self.effective_weight()
    }

    /// The least-request load: `(outstanding + 1) / effective weight`.
    #[inline]
    pub(crate) fn requests_cost(&self) -> f64 {
        (f64::from(self.outstanding()) + 1.0) / self.effective_weight()
    }

    /// Folds one latency sample into the peak EWMA (Finagle's `PeakEwma`): a sample above
    /// the average replaces it at once (peak sensitivity); a lower one is averaged in with a
    /// weight that decays with the time since the last update, `exp(-Δt / τ)`.
    #[inline]
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
        self.store_ewma(next);
        self.last_update.store(now_raw, Ordering::Relaxed);
    }

    #[inline]
    fn store_ewma(&self, ns: f64) {
        #[allow(clippy::cast_possible_truncation)]
        let v = ns as f32;
        self.ewma_bits.store(v.to_bits(), Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn last_update_raw(&self) -> u64 {
        self.last_update.load(Ordering::Relaxed)
    }

    /// Forgets the latency history: the EWMA restarts at `ns`.
    #[inline]
    pub(crate) fn reset_ewma(&self, ns: f64) {
        self.store_ewma(ns);
    }

    /// Idle decay toward zero: `ewma × factor`.
    #[inline]
    pub(crate) fn decay(&self, factor: f64) {
        self.store_ewma(self.ewma_ns() * factor);
    }
}

/// A fixed block of cells; blocks never move, so a cell's address is stable for the life of
/// its endpoint. (A fixed size, so indexing by `slot % CHUNK` needs no bounds check.)
pub(crate) type Chunk = [LoadCell; CHUNK];

#[derive(Debug, Default)]
struct SlabInner {
    chunks: Vec<Arc<Chunk>>,
    free: Vec<u32>,
    next: u32,
}

/// Every endpoint's [`LoadCell`] of one balancer, in dense chunks, addressed by a stable slot
/// number. A routing table keeps the slot numbers of its endpoints in a dense array and a
/// copy of the chunk list, so a pick reads a 4-byte slot and a 32-byte cell instead of
/// following each candidate's pointer into its own allocation. A slot is given back when
/// its endpoint is dropped (no table or in-flight request refers to it any more) and reused
/// by the next endpoint.
#[derive(Debug, Default)]
pub(crate) struct Slab {
    inner: Mutex<SlabInner>,
}

impl Slab {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlabInner> {
        // Every update is a plain push/pop: a poisoned slab is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh cell: its slot and its chunk.
    fn alloc(&self, ewma_ns: f64, weight: f64) -> (u32, Arc<Chunk>) {
        let mut inner = self.lock();
        let slot = match inner.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = inner.next;
                inner.next += 1;
                if slot as usize / CHUNK == inner.chunks.len() {
                    let chunk: Arc<Chunk> = Arc::new(std::array::from_fn(|_| LoadCell::empty()));
                    inner.chunks.push(chunk);
                }
                slot
            }
        };
        let chunk = inner.chunks[slot as usize / CHUNK].clone();
        chunk[slot as usize % CHUNK].reset(ewma_ns, weight);
        (slot, chunk)
    }

    fn free(&self, slot: u32) {
        self.lock().free.push(slot);
    }

    /// The current chunk list (for a routing table).
    pub(crate) fn chunks(&self) -> Vec<Arc<Chunk>> {
        self.lock().chunks.clone()
    }
}

/// The cell of `slot` in `chunks`.
#[inline(always)]
pub(crate) fn cell(chunks: &[Arc<Chunk>], slot: u32) -> &LoadCell {
    &chunks[slot as usize / CHUNK][slot as usize % CHUNK]
}

/// One endpoint as the balancer holds it. Its hot load state lives in the balancer's
/// [`Slab`]; the rest is read only when routability changes, on failures, and by snapshots.
pub(crate) struct Endpoint<S> {
    pub(crate) id: u64,
    slot: u32,
    chunk: Arc<Chunk>,
    slab: Weak<Slab>,
    health: AtomicU8,
    pub(crate) ejected: AtomicBool,
    pub(crate) draining: AtomicBool,
    pub(crate) failures: AtomicU64,
    /// Backpressure: the end of the back-off the endpoint asked for (`Retry-After`,
    /// `grpc-retry-pushback-ms`), in nanoseconds since the balancer's epoch; 0 when it is
    /// not backing off. While set, the endpoint is out of the routing table but still healthy.
    pub(crate) backoff_until: AtomicU64,
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

impl<S> Drop for Endpoint<S> {
    fn drop(&mut self) {
        if let Some(slab) = self.slab.upgrade() {
            slab.free(self.slot);
        }
    }
}

impl<S> Endpoint<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        slab: &Arc<Slab>,
        id: u64,
        name: Arc<str>,
        service: S,
        weight: u32,
        initial_ewma: Duration,
        health: Health,
        tracker: Option<crate::passive::Tracker>,
    ) -> Self {
        let weight = weight.max(1);
        let (slot, chunk) = slab.alloc(initial_ewma.as_nanos() as f64, f64::from(weight));
        Self {
            id,
            slot,
            chunk,
            slab: Arc::downgrade(slab),
            served_by: ServedBy::new(name.clone()),
            name,
            service,
            weight,
            health: AtomicU8::new(health_to_u8(health)),
            ejected: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            backoff_until: AtomicU64::new(0),
            tracker,
        }
    }

    /// The endpoint's slot in the balancer's [`Slab`].
    #[inline]
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// The endpoint's load state (through its own chunk pointer: for cold paths; the
    /// request path goes through the routing table's dense arrays).
    #[inline]
    pub(crate) fn load(&self) -> &LoadCell {
        &self.chunk[self.slot as usize % CHUNK]
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
            && !self.backing_off()
    }

    /// Routable but for a back-off.
    pub(crate) fn routable_but_for_backoff(&self, unknown_is_routable: bool) -> bool {
        self.health().is_routable(unknown_is_routable)
            && !self.ejected.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
    }

    /// Asked for a back-off that has not been lifted yet.
    pub(crate) fn backing_off(&self) -> bool {
        self.backoff_until.load(Ordering::Acquire) != 0
    }
}

/// Holds one outstanding request on an endpoint (an index into a routing table, so the
/// endpoint's own reference count is not touched); dropping it releases the count.
pub(crate) struct InFlight<S> {
    table: Arc<crate::balance::shared::Table<S>>,
    index: u32,
    /// The endpoint's slab slot (looked up once).
    slot: u32,
    panic_set: bool,
}

impl<S> InFlight<S> {
    #[inline]
    pub(crate) fn start(
        table: Arc<crate::balance::shared::Table<S>>,
        index: usize,
        panic_set: bool,
    ) -> Self {
        let slot = table.slot_of(panic_set, index);
        let this = Self {
            table,
            index: index as u32,
            slot,
            panic_set,
        };
        this.load().start();
        this
    }

    #[inline]
    pub(crate) fn endpoint(&self) -> &Endpoint<S> {
        &self.table.set_of(self.panic_set)[self.index as usize]
    }

    /// The endpoint's load cell, through the table's chunk list.
    #[inline(always)]
    pub(crate) fn load(&self) -> &LoadCell {
        self.table.load_at(self.slot)
    }
}

impl<S> Drop for InFlight<S> {
    #[inline]
    fn drop(&mut self) {
        self.load().finish();
    }
}

impl<S> fmt::Debug for InFlight<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InFlight")
            .field(&self.endpoint().name)
            .finish()
    }
}
