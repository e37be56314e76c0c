//! Tri-state health, published through a cheap subscription.
//!
//! A [`HealthPublisher`] owns the current [`Health`] of one thing (an endpoint, a site); any
//! number of [`HealthWatch`]es read it without locks on the read side worth mentioning and can
//! wait for changes instead of polling (a `tokio::sync::watch` underneath).
//!
//! # Example
//!
//! ```
//! use rampart_health::{Health, HealthPublisher};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let publisher = HealthPublisher::new();
//! let mut watch = publisher.subscribe();
//! assert_eq!(watch.get(), Health::Unknown);
//! publisher.set(Health::Healthy);
//! assert_eq!(watch.changed().await, Some(Health::Healthy));
//! # }
//! ```

use std::fmt;

use tokio::sync::watch;

/// The health of an endpoint or a site.
///
/// `Unknown` until the first probe answers. Whether `Unknown` takes traffic is the caller's
/// policy (Rampart's default: yes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Health {
    /// No verdict yet.
    #[default]
    Unknown,
    /// Passing its checks.
    Healthy,
    /// Failing its checks.
    Unhealthy,
}

impl Health {
    /// Whether this health admits traffic, given the policy for `Unknown`.
    ///
    /// ```
    /// use rampart_health::Health;
    /// assert!(Health::Unknown.is_routable(true));
    /// assert!(!Health::Unknown.is_routable(false));
    /// assert!(!Health::Unhealthy.is_routable(true));
    /// ```
    #[inline]
    pub fn is_routable(self, unknown_is_routable: bool) -> bool {
        match self {
            Health::Healthy => true,
            Health::Unknown => unknown_is_routable,
            Health::Unhealthy => false,
        }
    }

    /// A lowercase name: `unknown`, `healthy` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The writing side of a health value. Cloning shares the same value.
#[derive(Debug, Clone)]
pub struct HealthPublisher {
    tx: std::sync::Arc<watch::Sender<Health>>,
}

impl Default for HealthPublisher {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthPublisher {
    /// Starts at [`Health::Unknown`].
    pub fn new() -> Self {
        Self::with_initial(Health::Unknown)
    }

    /// Starts at `initial`.
    pub fn with_initial(initial: Health) -> Self {
        let (tx, _) = watch::channel(initial);
        Self {
            tx: std::sync::Arc::new(tx),
        }
    }

    /// Sets the health; watchers are woken only when it actually changes. Returns the previous
    /// value.
    pub fn set(&self, health: Health) -> Health {
        let mut previous = health;
        self.tx.send_if_modified(|current| {
            previous = *current;
            if *current == health {
                false
            } else {
                *current = health;
                true
            }
        });
        previous
    }

    /// The current health.
    pub fn get(&self) -> Health {
        *self.tx.borrow()
    }

    /// A new reader.
    pub fn subscribe(&self) -> HealthWatch {
        HealthWatch {
            rx: self.tx.subscribe(),
        }
    }
}

/// The reading side of a health value: cheap to clone, wakes on change.
#[derive(Debug, Clone)]
pub struct HealthWatch {
    rx: watch::Receiver<Health>,
}

impl HealthWatch {
    /// A watch that stays at `health` forever (no publisher).
    pub fn constant(health: Health) -> Self {
        let (_tx, rx) = watch::channel(health);
        Self { rx }
    }

    /// The current health.
    #[inline]
    pub fn get(&self) -> Health {
        *self.rx.borrow()
    }

    /// Waits for the next change and returns the new value; `None` once the publisher is gone.
    pub async fn changed(&mut self) -> Option<Health> {
        self.rx.changed().await.ok()?;
        Some(*self.rx.borrow_and_update())
    }

    /// The underlying `tokio::sync::watch` receiver.
    pub fn into_inner(self) -> watch::Receiver<Health> {
        self.rx
    }
}

impl From<watch::Receiver<Health>> for HealthWatch {
    fn from(rx: watch::Receiver<Health>) -> Self {
        Self { rx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_changes_only() {
        let p = HealthPublisher::new();
        let mut w = p.subscribe();
        assert_eq!(p.set(Health::Unknown), Health::Unknown);
        assert!(!w.rx.has_changed().unwrap());
        assert_eq!(p.set(Health::Unhealthy), Health::Unknown);
        assert_eq!(w.changed().await, Some(Health::Unhealthy));
        drop(p);
        assert_eq!(w.changed().await, None);
        assert_eq!(w.get(), Health::Unhealthy);
    }

    #[test]
    fn constant_watch() {
        assert_eq!(
            HealthWatch::constant(Health::Healthy).get(),
            Health::Healthy
        );
    }
}
