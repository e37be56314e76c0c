//! The consistent-hashing ring (Karger et al., *Consistent Hashing and Random Trees*, 1997):
//! virtual nodes per unit of weight, so that when an endpoint leaves only the keys it owned
//! move.

use std::hash::{Hash, Hasher};

/// A hash ring over a set of endpoints (indexes into that set).
#[derive(Debug, Default)]
pub(crate) struct Ring {
    points: Vec<(u64, u32)>,
}

/// SplitMix64's finaliser: spreads sequential keys over the ring.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn point_hash(name: &str, i: u32) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    i.hash(&mut h);
    mix64(h.finish())
}

impl Ring {
    /// A ring over endpoints given as `(name, weight)`, in set order.
    pub(crate) fn build<'a>(
        set: impl IntoIterator<Item = (&'a str, u32)>,
        virtual_nodes: u32,
    ) -> Self {
        let vn = virtual_nodes.max(1);
        let mut points = Vec::new();
        for (idx, (name, weight)) in set.into_iter().enumerate() {
            let n = vn.saturating_mul(weight.max(1));
            points.reserve(n as usize);
            for i in 0..n {
                points.push((point_hash(name, i), idx as u32));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The index owning `key`, optionally skipping indexes `skip` rejects (walks clockwise).
    pub(crate) fn lookup(&self, key: u64, mut skip: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let h = mix64(key);
        let start = self.points.partition_point(|(p, _)| *p < h);
        let n = self.points.len();
        for k in 0..n {
            let (_, idx) = self.points[(start + k) % n];
            if !skip(idx as usize) {
                return Some(idx as usize);
            }
        }
        None
    }
}
