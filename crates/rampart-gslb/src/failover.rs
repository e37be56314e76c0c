//! Envoy's priority-failover arithmetic, as pure functions.
//!
//! Source: Envoy's architecture overview, "Load balancing → Priority levels"
//! (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/priority>)
//! and its implementation (`LoadBalancerBase::recalculatePerPriorityState` and
//! `distributeLoad` in `source/common/upstream/load_balancer_impl.cc`):
//!
//! 1. A priority level's **health** is an integer percentage:
//!    `min(100, overprovisioning_factor × healthy_share)`, computed like Envoy with the factor
//!    in integer percent (1.4 → 140) and the product rounded **down**. With the default 1.4, a
//!    level that is 72 % healthy is still 100 % "healthy" (100.8 → 100), 71 % gives 99.
//! 2. The **normalized total availability** is `min(100, Σ health)`.
//! 3. Each level, from the highest priority down, takes
//!    `min(remaining, health × 100 / normalized_total)` percent of the load (integer division);
//!    what rounding leaves over goes to the first level with any health.
//!
//! So a level that is missing health hands exactly the missing share to the next levels, and
//! when all levels together have less than 100 % health the load is scaled up over them.
//!
//! Within a level, sites share the level's load by **effective weight**
//! `weight × min(1, overprovisioning_factor × healthy_share)`, which is Envoy's locality-weighted
//! rule ("Locality weighted load balancing": `locality_weight × locality_availability`).
//!
//! # Example: the figures from Envoy's documentation (P0 over a fully healthy P1)
//!
//! ```
//! use rampart_gslb::failover::{factor_percent, priority_health, priority_loads};
//!
//! let f = factor_percent(1.4);
//! for (p0_healthy, expected) in [(0.72, [100, 0]), (0.71, [99, 1]), (0.50, [70, 30]),
//!                                (0.25, [35, 65]), (0.0, [0, 100])] {
//!     let health = [priority_health(p0_healthy, f), priority_health(1.0, f)];
//!     assert_eq!(priority_loads(&health), expected);
//! }
//! ```

/// The overprovisioning factor in integer percent, as Envoy stores it (1.4 → 140).
///
/// Values that are not finite or below 1.0 give 100 (the builder rejects them before this).
pub fn factor_percent(factor: f64) -> u32 {
    if !factor.is_finite() || factor < 1.0 {
        return 100;
    }
    let pct = (factor * 100.0).round();
    if pct >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        pct as u32
    }
}

/// A priority level's health in integer percent: `min(100, ⌊factor_percent × healthy_share⌋)`.
///
/// `healthy_share` is clamped to `0.0..=1.0` (NaN counts as 0). A tiny tolerance (1e-9)
/// absorbs binary floating-point error, so that a share of exactly 5/7 with factor 140 gives
/// 100 rather than 99.
///
/// ```
/// use rampart_gslb::failover::priority_health;
/// assert_eq!(priority_health(0.72, 140), 100);
/// assert_eq!(priority_health(0.71, 140), 99);
/// assert_eq!(priority_health(5.0 / 7.0, 140), 100);
/// // Any healthy share keeps the level available.
/// assert_eq!(priority_health(0.003, 140), 1);
/// assert_eq!(priority_health(0.0, 140), 0);
/// ```
pub fn priority_health(healthy_share: f64, factor_percent: u32) -> u32 {
    let share = if healthy_share.is_nan() {
        0.0
    } else {
        healthy_share.clamp(0.0, 1.0)
    };
    let raw = (f64::from(factor_percent) * share + 1e-9).floor();
    if raw >= 100.0 {
        100
    } else if raw < 1.0 && share > 0.0 {
        // A level with any healthy endpoint is never "unavailable": rounding down a tiny share
        // (one healthy endpoint of a light site among heavy dead ones) must not fail requests
        // fast while something could serve them.
        1
    } else {
        raw as u32
    }
}

/// `min(1, factor × healthy_share)`: a site's availability, the multiplier of its weight
/// within its priority level (Envoy's locality availability).
pub fn availability(healthy_share: f64, factor_percent: u32) -> f64 {
    let share = if healthy_share.is_nan() {
        0.0
    } else {
        healthy_share.clamp(0.0, 1.0)
    };
    (f64::from(factor_percent) / 100.0 * share).min(1.0)
}

/// Distributes 100 % of the load over priority levels from their health percentages (highest
/// priority first), with Envoy's `distributeLoad` arithmetic. The result sums to exactly 100,
/// unless every level has health 0, in which case every load is 0.
///
/// ```
/// use rampart_gslb::failover::priority_loads;
/// assert_eq!(priority_loads(&[70, 100]), vec![70, 30]);
/// // Less than 100 % health in total: the load is scaled up over the levels.
/// assert_eq!(priority_loads(&[35, 35]), vec![50, 50]);
/// assert_eq!(priority_loads(&[0, 0]), vec![0, 0]);
/// ```
pub fn priority_loads(health: &[u32]) -> Vec<u32> {
    let mut loads = vec![0; health.len()];
    distribute(health, &mut loads);
    loads
}

/// Like [`priority_loads`], writing into `loads` (which must be as long as `health`).
pub(crate) fn distribute(health: &[u32], loads: &mut [u32]) {
    let total: u64 = health.iter().map(|&h| u64::from(h.min(100))).sum();
    let normalized = total.min(100);
    loads.iter_mut().for_each(|l| *l = 0);
    if normalized == 0 {
        return;
    }
    let mut remaining: u64 = 100;
    let mut first_available = None;
    for (i, (&h, load)) in health.iter().zip(loads.iter_mut()).enumerate() {
        let h = u64::from(h.min(100));
        if first_available.is_none() && h > 0 {
            first_available = Some(i);
        }
        let l = remaining.min(h * 100 / normalized);
        *load = l as u32;
        remaining -= l;
    }
    if remaining > 0
        && let Some(i) = first_available
    {
        loads[i] += remaining as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The figures of Envoy's "priority levels" documentation, with the healthy share given as
    /// hosts (72 of 100 and so on, like a balancer's health report).
    #[test]
    fn envoy_documented_figures() {
        let f = factor_percent(1.4);
        assert_eq!(f, 140);
        let cases = [
            (72, [100, 0]),
            (71, [99, 1]),
            (50, [70, 30]),
            (25, [35, 65]),
            (0, [0, 100]),
        ];
        for (healthy, expected) in cases {
            let share = f64::from(healthy) / 100.0;
            let health = [priority_health(share, f), priority_health(1.0, f)];
            assert_eq!(priority_loads(&health), expected, "P0 {healthy}% healthy");
        }
    }

    #[test]
    fn three_levels_spill_in_order() {
        // P0 20 % healthy (28), P1 50 % (70), P2 full (100): 28 / 70 / 2.
        let f = 140;
        let h = [
            priority_health(0.2, f),
            priority_health(0.5, f),
            priority_health(1.0, f),
        ];
        assert_eq!(h, [28, 70, 100]);
        assert_eq!(priority_loads(&h), vec![28, 70, 2]);
    }

    #[test]
    fn rounding_remainder_goes_to_first_available() {
        // 3 levels of 30 %: normalized 90 → 33 each, 1 left over to the first.
        assert_eq!(priority_loads(&[30, 30, 30]), vec![34, 33, 33]);
        assert_eq!(priority_loads(&[0, 30, 30, 30]), vec![0, 34, 33, 33]);
    }

    #[test]
    fn factor_percent_rejects_nonsense() {
        assert_eq!(factor_percent(f64::NAN), 100);
        assert_eq!(factor_percent(0.5), 100);
        assert_eq!(factor_percent(1.0), 100);
        assert_eq!(factor_percent(2.0), 200);
    }

    proptest! {
        /// Shares always sum to 100 % when anything is healthy, and to 0 otherwise.
        #[test]
        fn loads_sum_to_100(health in proptest::collection::vec(0u32..=100, 1..8)) {
            let loads = priority_loads(&health);
            let sum: u32 = loads.iter().sum();
            if health.iter().any(|&h| h > 0) {
                prop_assert_eq!(sum, 100);
            } else {
                prop_assert_eq!(sum, 0);
            }
            // A level with no health never gets load.
            for (h, l) in health.iter().zip(&loads) {
                if *h == 0 { prop_assert_eq!(*l, 0); }
            }
        }

        /// Same with health computed from healthy shares and any factor ≥ 1.
        #[test]
        fn shares_sum_to_100(
            shares in proptest::collection::vec(0.0f64..=1.0, 1..8),
            factor in 1.0f64..3.0,
        ) {
            let f = factor_percent(factor);
            let health: Vec<u32> = shares.iter().map(|&s| priority_health(s, f)).collect();
            let sum: u32 = priority_loads(&health).iter().sum();
            prop_assert!(sum == 100 || health.iter().all(|&h| h == 0));
        }

        /// Monotone in health: more health at the top level never gives it less load, and
        /// never gives any lower level more load.
        #[test]
        fn monotone_in_top_health(
            rest in proptest::collection::vec(0u32..=100, 1..6),
            a in 0u32..=100,
            b in 0u32..=100,
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let mut low = vec![lo];
            low.extend(&rest);
            let mut high = vec![hi];
            high.extend(&rest);
            let l_low = priority_loads(&low);
            let l_high = priority_loads(&high);
            prop_assert!(l_high[0] >= l_low[0]);
            // With total health ≥ 100 in both cases (no scaling), lower levels only lose load.
            if low.iter().sum::<u32>() >= 100 {
                for i in 1..low.len() {
                    prop_assert!(l_high[i] <= l_low[i], "level {} got more load", i);
                }
            }
        }

        /// Priority health is monotone in the healthy share and capped at 100.
        #[test]
        fn health_monotone_in_share(a in 0.0f64..=1.0, b in 0.0f64..=1.0, factor in 1.0f64..3.0) {
            let f = factor_percent(factor);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(priority_health(lo, f) <= priority_health(hi, f));
            prop_assert!(priority_health(hi, f) <= 100);
        }
    }
}
