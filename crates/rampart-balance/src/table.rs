//! The routing table: the endpoints of a pool as the request path sees them.
//!
//! A [`Member`] is one endpoint as the balancer holds it (its service, identity, health,
//! ejection, drain and back-off flags); its hot load state lives in the balancer's
//! [`Slab`]. A [`Table`] is an immutable snapshot of the routable members (and, for panic mode,
//! of every member not draining), with their slab slots in dense arrays and the per-set
//! picker state; the balancer swaps it whenever routability changes, so picking takes no lock.
//! [`InFlight`] holds one outstanding request on a member of a table.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rampart_health::{Health, OutlierTracker};

use crate::endpoint::ServedBy;
use crate::load::{CHUNK, Chunk, LoadCell, Slab, cell};
use crate::ring::Ring;

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
/// One endpoint as the balancer holds it (a member of its pool). Its hot load state lives in the balancer's
/// [`Slab`]; the rest is read only when routability changes, on failures, and by snapshots.
pub(crate) struct Member<S> {
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
    pub(crate) tracker: Option<OutlierTracker>,
}

impl<S> fmt::Debug for Member<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S> Drop for Member<S> {
    fn drop(&mut self) {
        if let Some(slab) = self.slab.upgrade() {
            slab.free(self.slot);
        }
    }
}

impl<S> Member<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        slab: &Arc<Slab>,
        id: u64,
        name: Arc<str>,
        service: S,
        weight: u32,
        initial_ewma: Duration,
        health: Health,
        tracker: Option<OutlierTracker>,
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

/// Per-set picker state that lives with the routing table.
#[derive(Debug, Default)]
pub(crate) struct PickState {
    /// Shared by every table of one balancer, so a rebuild does not restart the cycle.
    pub(crate) rr: Arc<AtomicUsize>,
    pub(crate) wrr: Mutex<Vec<f64>>,
    pub(crate) ring: Option<Ring>,
}

/// An immutable routing table.
///
/// Besides the endpoints of each set, it keeps their slab slots in dense arrays and a copy of
/// the slab's chunk list, so the picker reads candidates' load cells without touching the
/// endpoints' own allocations.
pub(crate) struct Table<S> {
    pub(crate) routable: Vec<Arc<Member<S>>>,
    pub(crate) all: Vec<Arc<Member<S>>>,
    pub(crate) routable_slots: Vec<u32>,
    pub(crate) all_slots: Vec<u32>,
    pub(crate) chunks: Vec<Arc<Chunk>>,
    pub(crate) panic: bool,
    pub(crate) total: usize,
    pub(crate) routable_state: PickState,
    pub(crate) all_state: PickState,
}

/// One set of a table as the picker sees it.
pub(crate) struct SetView<'a, S> {
    pub(crate) endpoints: &'a [Arc<Member<S>>],
    slots: &'a [u32],
    chunks: &'a [Arc<Chunk>],
    pub(crate) state: &'a PickState,
}

impl<S> SetView<'_, S> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// The load cell of the `i`-th endpoint of the set.
    #[inline(always)]
    pub(crate) fn load(&self, i: usize) -> &LoadCell {
        cell(self.chunks, self.slots[i])
    }
}

impl<S> Table<S> {
    pub(crate) fn empty() -> Self {
        Self {
            routable: Vec::new(),
            all: Vec::new(),
            routable_slots: Vec::new(),
            all_slots: Vec::new(),
            chunks: Vec::new(),
            panic: false,
            total: 0,
            routable_state: PickState::default(),
            all_state: PickState::default(),
        }
    }

    /// The set to pick from: the routable endpoints, or in panic mode every endpoint that is
    /// not draining.
    #[inline]
    pub(crate) fn set_of(&self, panic: bool) -> &[Arc<Member<S>>] {
        if panic { &self.all } else { &self.routable }
    }

    /// The slab slot of the `index`-th endpoint of a set.
    #[inline(always)]
    pub(crate) fn slot_of(&self, panic: bool, index: usize) -> u32 {
        let slots = if panic {
            &self.all_slots
        } else {
            &self.routable_slots
        };
        slots[index]
    }

    /// The load cell in `slot` (a slot of one of this table's endpoints).
    #[inline(always)]
    pub(crate) fn load_at(&self, slot: u32) -> &LoadCell {
        cell(&self.chunks, slot)
    }

    #[inline]
    pub(crate) fn set(&self) -> SetView<'_, S> {
        if self.panic {
            SetView {
                endpoints: &self.all,
                slots: &self.all_slots,
                chunks: &self.chunks,
                state: &self.all_state,
            }
        } else {
            SetView {
                endpoints: &self.routable,
                slots: &self.routable_slots,
                chunks: &self.chunks,
                state: &self.routable_state,
            }
        }
    }
}

/// Holds one outstanding request on an endpoint (an index into a routing table, so the
/// endpoint's own reference count is not touched); dropping it releases the count.
pub(crate) struct InFlight<S> {
    table: Arc<Table<S>>,
    index: u32,
    /// The endpoint's slab slot (looked up once).
    slot: u32,
    panic_set: bool,
}

impl<S> InFlight<S> {
    #[inline]
    pub(crate) fn start(table: Arc<Table<S>>, index: usize, panic_set: bool) -> Self {
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
    pub(crate) fn endpoint(&self) -> &Member<S> {
        self.member()
    }

    /// The endpoint, shared (for a record that outlives the attempt).
    #[inline]
    pub(crate) fn member(&self) -> &Arc<Member<S>> {
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
