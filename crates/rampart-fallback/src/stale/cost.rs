//! What a stored copy really costs in memory, so that the byte bound is honest.
//!
//! Every stored part is copied into allocations of its own, sized exactly (see
//! [`detach_headers`] and [`Key::detached`](super::key::Key::detached)): a slice of an
//! upstream's read buffer or of a larger body would otherwise keep the whole buffer alive.
//! The weights below then count each allocation with the allocator's own overhead, the
//! header map's table, and the cache's per-entry bookkeeping. `tests/stale_memory.rs` checks
//! them against a counting allocator.

use http::{HeaderMap, HeaderName, HeaderValue};

/// What one heap allocation of `n` bytes costs: the allocator's header and rounding
/// (glibc: 8 bytes of header, 16-byte granules, 32 bytes at least).
pub(crate) const fn heap(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        let n = (n + 8).div_ceil(16) * 16;
        if n < 32 { 32 } else { n }
    }
}

/// One header map bucket (hash, links, name and value; `http` keeps these private) and its
/// index slot, rounded up.
const BUCKET: usize = 112;
const INDEX: usize = 4;
/// One further value of a name (value and links).
const EXTRA: usize = 72;

/// The cache's bookkeeping per entry, besides our own allocations: `moka`'s hash-table
/// bucket and slot, value entry, entry info, deque node and lock, and its frequency sketch's
/// share. Measured with a counting allocator: 250 to 290 bytes per entry with `moka` 0.12
/// (its key allocation, counted with the key, included), rounded up.
pub(crate) const ENTRY_OVERHEAD: usize = 320;

/// What a header map built by [`detach_headers`] costs: its tables and each field's own
/// allocations.
pub(crate) fn headers_weight(headers: &HeaderMap) -> usize {
    // `HeaderMap::with_capacity(n + ROOM)`: a power-of-two index table with room for that at
    // a load of 3/4, and as many buckets as that table allows.
    let n = headers.len() + ROOM;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| heap(value.len()) + custom_name_len(name))
        .sum();
    // Further values of a name already present live in a list of their own.
    let extra = headers.len() - headers.keys_len();
    let extra = if extra == 0 {
        0
    } else {
        heap(EXTRA * extra.next_power_of_two().max(4))
    };
    let raw = (n + n / 3).next_power_of_two().max(8);
    let usable = raw - raw / 4;
    heap(INDEX * raw) + heap(BUCKET * usable) + extra + fields
}

/// The heap cost of a header name. Standard names (`content-type`, ...) have none, but telling
/// them apart would cost a lookup per field: every name is counted as if it had its own
/// allocation, a few dozen bytes per field on the safe side.
fn custom_name_len(name: &HeaderName) -> usize {
    heap(name.as_str().len())
}

/// Fields a stored copy gains: `Content-Length` when it is stored, and the stale marker and
/// `Age` (replaced when served), so that serving a copy neither grows nor rehashes its map.
/// Their names and values are static (no allocation of their own).
const ROOM: usize = 3;

/// A copy of `headers` whose names and values own exactly-sized allocations (see the module
/// docs), in a map sized for them (and [`ROOM`] more).
pub(crate) fn detach_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + ROOM);
    for (name, value) in headers {
        let value = HeaderValue::from_bytes(value.as_bytes()).map_or_else(
            |_| value.clone(),
            |mut v| {
                v.set_sensitive(value.is_sensitive());
                v
            },
        );
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        out.append(name, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_rounds_like_the_allocator() {
        assert_eq!(heap(0), 0);
        assert_eq!(heap(1), 32);
        assert_eq!(heap(24), 32);
        assert_eq!(heap(25), 48);
        assert_eq!(heap(1000), 1008);
    }

    #[test]
    fn detached_headers_are_equal() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("content-type", HeaderValue::from_static("text/html"));
        let d = detach_headers(&h);
        assert_eq!(d, h);
        assert!(headers_weight(&d) > 3 * BUCKET);
    }
}
