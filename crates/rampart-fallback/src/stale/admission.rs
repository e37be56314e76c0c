//! Admission to the stale cache: which copies may enter, and which need no new copy.
//!
//! - A doorkeeper refuses one-hit wonders once the cache is nearly full (frequency-aware
//!   admission, before `moka`'s TinyLFU weighs a candidate against its victims).
//! - Recently stored requests stream through without a lookup: a copy is stored at most once
//!   per `refresh_after`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use super::{Key, StaleShared};

impl StaleShared {
    /// Frequency-aware admission: while the cache has room below seven eighths of its bound,
    /// anything storable enters; past that, a copy would displace others, and enters only
    /// when its key is already stored (a refresh) or was seen before (its second request
    /// within the doorkeeper's memory). One-hit wonders, such as a flood of made-up query
    /// strings, are refused instead of evicting the pages read often; `moka`'s TinyLFU policy
    /// then weighs a second-hit candidate against its victims by how often each was used.
    pub(super) fn admits(&self, key: &Key, weight: usize) -> bool {
        let limit = self.config.max_bytes - self.config.max_bytes / 8;
        if self.cache.weighted_size().saturating_add(weight as u64) <= limit
            || self.doorkeeper.seen_else_mark(key)
            || self.cache.contains_key(key)
        {
            return true;
        }
        self.counters.not_admitted.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(
            target: "rampart_fallback",
            path = key.path(),
            "not admitted to the stale cache on a first request (the cache is nearly full)"
        );
        false
    }
}

/// Slots of [`RecentStores`] (a power of two).
const RECENT_SLOTS: usize = 1024;

/// When each recently stored request (key and `Vary` values) was stored, so that a success
/// within `refresh_after` of it streams through without a cache lookup.
///
/// A direct-mapped table of `AtomicU64`: the high 32 bits are a tag from the request's
/// fingerprint (never 0), the low 32 the store time in milliseconds since `base` (wrapping).
/// Two requests sharing a slot overwrite each other, which only means an extra store; a
/// wrong "recent" needs a 32-bit tag collision in the same slot, and then only delays a
/// refresh by at most `refresh_after`. No lock, no allocation per request.
pub(super) struct RecentStores {
    base: Instant,
    refresh_ms: u32,
    hasher: foldhash::fast::RandomState,
    pub(super) slots: Box<[AtomicU64]>,
}

impl RecentStores {
    pub(super) fn new(refresh_after: Duration) -> Self {
        let slots = if refresh_after.is_zero() {
            0
        } else {
            RECENT_SLOTS
        };
        Self {
            base: Instant::now(),
            // Capped well below the 32-bit wrap (about 49 days).
            refresh_ms: u32::try_from(refresh_after.as_millis())
                .unwrap_or(u32::MAX)
                .min(u32::MAX / 2),
            hasher: foldhash::fast::RandomState::default(),
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(super) fn fingerprint(&self, key: &Key, vary: &[Option<HeaderValue>]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut state = self.hasher.build_hasher();
        key.hash_compact(&mut state);
        for value in vary {
            match value {
                Some(v) => {
                    state.write_usize(v.len());
                    state.write(v.as_bytes());
                }
                None => state.write_usize(usize::MAX),
            }
        }
        state.finish()
    }

    fn millis(&self, at: Instant) -> u32 {
        // Wrapping on purpose: only differences of recent times are compared.
        at.saturating_duration_since(self.base).as_millis() as u32
    }

    fn slot(&self, fingerprint: u64) -> Option<(&AtomicU64, u64)> {
        let tag = (fingerprint >> 32) | 1;
        let slot = self.slots.get(fingerprint as usize & (RECENT_SLOTS - 1))?;
        Some((slot, tag))
    }

    /// `true` when this fingerprint was stored less than `refresh_after` before `now`.
    pub(super) fn is_recent(&self, fingerprint: u64, now: Instant) -> bool {
        let Some((slot, tag)) = self.slot(fingerprint) else {
            return false;
        };
        let v = slot.load(Ordering::Relaxed);
        v >> 32 == tag && self.millis(now).wrapping_sub(v as u32) < self.refresh_ms
    }

    pub(super) fn mark(&self, fingerprint: u64, at: Instant) {
        if let Some((slot, tag)) = self.slot(fingerprint) {
            slot.store(tag << 32 | u64::from(self.millis(at)), Ordering::Relaxed);
        }
    }

    pub(super) fn clear(&self) {
        for s in &*self.slots {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// Slots of [`Doorkeeper`] (a power of two).
const DOORKEEPER_SLOTS: usize = 8192;

/// The keys refused admission once, so that their second request is admitted.
///
/// A direct-mapped table of key fingerprints (64 KiB): a newer key in the same slot replaces
/// an older one, so under a flood of new keys a key must come back before its slot is
/// reused, after about 8,192 newer first requests on average; a page that is read often
/// comes back in time. Consulted only when the cache is nearly full and a copy would be
/// stored. No lock, no allocation.
pub(super) struct Doorkeeper {
    hasher: foldhash::fast::RandomState,
    pub(super) slots: Box<[AtomicU64]>,
}

impl Doorkeeper {
    pub(super) fn new() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            slots: (0..DOORKEEPER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// `true` when `key` was marked before; else marks it.
    pub(super) fn seen_else_mark(&self, key: &Key) -> bool {
        use std::hash::BuildHasher;
        let fp = self.hasher.hash_one(key) | 1;
        let Some(slot) = self.slots.get(fp as usize >> 1 & (DOORKEEPER_SLOTS - 1)) else {
            return false;
        };
        if slot.load(Ordering::Relaxed) == fp {
            return true;
        }
        slot.store(fp, Ordering::Relaxed);
        false
    }

    pub(super) fn clear(&self) {
        for s in &*self.slots {
            s.store(0, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Doorkeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorkeeper")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl fmt::Debug for RecentStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecentStores")
            .field("refresh_ms", &self.refresh_ms)
            .field("slots", &self.slots.len())
            .finish()
    }
}
