//! The arithmetic of statistical ejection, as pure functions (Envoy's success-rate and
//! failure-percentage outlier detection), so that it can be checked on its own.
//!
//! ```
//! use rampart_health::outlier::stats::success_rate_outliers;
//!
//! // Four endpoints near 99 %, one at 60 %: only the last is below mean − 1.9 × stdev.
//! let rates = [99.0, 98.5, 99.2, 99.1, 60.0];
//! assert_eq!(success_rate_outliers(&rates, 1.9), vec![false, false, false, false, true]);
//! // Identical rates never eject anyone, however low they are.
//! assert_eq!(success_rate_outliers(&[40.0; 5], 1.9), vec![false; 5]);
//! ```

/// Success rates closer than this to the threshold are not outliers: it absorbs the rounding
/// of the mean and deviation, so identical rates are never told apart.
const EPSILON: f64 = 1e-9;

/// The mean and the population standard deviation of `values` (`(0, 0)` when empty).
pub fn mean_and_stdev(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

/// The success rate (in percent) below which an endpoint is an outlier:
/// `mean − stdev × stdev_factor` of `rates`.
pub fn success_rate_threshold(rates: &[f64], stdev_factor: f64) -> f64 {
    let (mean, stdev) = mean_and_stdev(rates);
    mean - stdev * stdev_factor
}

/// For each rate (in percent), whether it is a success-rate outlier among `rates`.
pub fn success_rate_outliers(rates: &[f64], stdev_factor: f64) -> Vec<bool> {
    let threshold = success_rate_threshold(rates, stdev_factor);
    rates.iter().map(|&r| r < threshold - EPSILON).collect()
}

/// Whether `failures` of `total` calls reach `threshold_percent`, with at least
/// `minimum_requests` calls (Envoy's failure-percentage rule for one endpoint).
///
/// ```
/// use rampart_health::outlier::stats::failure_percentage_exceeded;
/// assert!(failure_percentage_exceeded(50, 100, 50.0, 20));
/// assert!(!failure_percentage_exceeded(49, 100, 50.0, 20));
/// assert!(!failure_percentage_exceeded(10, 10, 50.0, 20)); // too few calls
/// ```
pub fn failure_percentage_exceeded(
    failures: u64,
    total: u64,
    threshold_percent: f64,
    minimum_requests: u32,
) -> bool {
    failures > 0
        && total >= u64::from(minimum_requests)
        && failures as f64 * 100.0 >= threshold_percent * total as f64
}
