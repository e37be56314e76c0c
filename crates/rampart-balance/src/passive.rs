//! Passive outlier detection comes from rampart-health's `OutlierDetector`: one tracker per
//! endpoint, fed with every attempt's classified outcome.

pub(crate) use rampart_health::{OutlierDetector as Detector, OutlierTracker as Tracker};
