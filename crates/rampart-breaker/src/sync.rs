//! The synchronisation primitives of the breaker's shared state.
//!
//! Under the custom cfg `rampart_loom` these are [loom](https://docs.rs/loom)'s model-checked
//! atomics, so `tests/loom.rs` explores every interleaving of the state machine; otherwise they
//! are `std`'s. (We never use `--cfg loom`: tokio reads that one.)

#[cfg(rampart_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(rampart_loom)]
pub(crate) use loom::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64};

#[cfg(not(rampart_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(rampart_loom))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;

/// Keeps a hot atomic on its own cache line(s), so that unrelated writes do not evict it
/// (128 bytes: adjacent-line prefetching pairs 64-byte lines on x86).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
