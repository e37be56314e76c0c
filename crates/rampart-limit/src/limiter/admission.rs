//! Admission: the partition rule (guarantees and borrowing), shedding, the CoDel queue's
//! dispatch, and returning a slot.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rampart_health::Outcome;
use tokio::sync::oneshot;

use super::permit::Permit;
use super::{Admission, NEVER, Shared, UNTIMED, Waiter, lock};
use crate::{Overloaded, ShedReason};

impl Shared {
    #[inline]
    pub(super) fn now_ns(&self) -> u64 {
        self.ns(self.clock.raw())
    }

    /// A raw clock reading as ns since the limiter's epoch.
    #[inline]
    pub(super) fn ns(&self, raw: u64) -> u64 {
        self.clock.delta_as_nanos(self.epoch, raw)
    }

    /// A span of clock ticks in ns (the clock's scale is linear).
    pub(super) fn ticks_as_ns(&self, ticks: u64) -> u64 {
        self.clock.delta_as_nanos(0, ticks)
    }

    /// Takes a slot for partition `i` if the admission rule allows it; `raw` is the clock
    /// now (the call's start).
    #[inline]
    pub(super) fn try_admit(self: &Arc<Self>, i: usize, raw: u64) -> Option<Permit> {
        let p = &self.partitions[i];
        let limit = self.hot.limit.load(Ordering::Relaxed);
        let cap = if self.single {
            limit
        } else {
            let now = self.ns(raw);
            p.last_arrival.store(now, Ordering::Relaxed);
            if p.in_flight.load(Ordering::Relaxed) < p.guaranteed.load(Ordering::Relaxed) {
                limit
            } else {
                limit.saturating_sub(self.reserve(i, now))
            }
        };
        let mut cur = self.hot.in_flight.load(Ordering::Relaxed);
        loop {
            if cur >= cap {
                return None;
            }
            match self.hot.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        // With one partition its in-flight count is the total, and admissions are derived
        // from the windows (see `Limiter::admitted_single`): no shared write here.
        if !self.single {
            p.in_flight.fetch_add(1, Ordering::Relaxed);
            p.admitted.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(feature = "metrics")]
        p.metrics.admitted.increment(1);
        Some(Permit {
            shared: Some(Arc::clone(self)),
            partition: i as u32,
            start: raw,
            in_flight: cur + 1,
        })
    }

    /// Unused guarantees of the other active partitions.
    pub(super) fn reserve(&self, i: usize, now: u64) -> usize {
        let mut reserve = 0usize;
        for (j, q) in self.partitions.iter().enumerate() {
            if j == i {
                continue;
            }
            let busy = q.in_flight.load(Ordering::Relaxed);
            let last = q.last_arrival.load(Ordering::Relaxed);
            let active =
                busy > 0 || (last != NEVER && now.saturating_sub(last) < self.idle_after_ns);
            if active {
                reserve += q.guaranteed.load(Ordering::Relaxed).saturating_sub(busy);
            }
        }
        reserve
    }

    pub(super) fn overloaded(&self, i: usize, reason: ShedReason) -> Overloaded {
        Overloaded::new(
            Arc::clone(&self.name),
            Some(Arc::clone(&self.partitions[i].name)),
            reason,
            self.retry_after,
        )
    }

    /// Counts a shed request of partition `i` and builds its error.
    pub(super) fn shed(&self, i: usize, reason: ShedReason, now: u64) -> Overloaded {
        let p = &self.partitions[i];
        p.shed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        p.metrics.shed(reason);
        match self.shed_gate.pass(now) {
            Some(suppressed) => tracing::warn!(
                target: "rampart_limit",
                limiter = %self.name,
                partition = %p.name,
                reason = reason.as_str(),
                limit = self.hot.limit.load(Ordering::Relaxed),
                in_flight = self.hot.in_flight.load(Ordering::Relaxed),
                more_since_last_warning = suppressed,
                "request shed"
            ),
            None => tracing::trace!(
                target: "rampart_limit",
                limiter = %self.name,
                partition = %p.name,
                reason = reason.as_str(),
                "request shed"
            ),
        }
        self.overloaded(i, reason)
    }

    #[inline]
    pub(super) fn admit_or_queue(self: &Arc<Self>, i: usize) -> Admission {
        let Some(queue) = &self.queue else {
            // One partition needs the clock only to time the call, and a busy window times a
            // sample of its calls (see `Shard::wants_timing`); partitions need it for their
            // idle detection.
            let raw = if !self.single || self.window.shard().wants_timing(self.window_samples) {
                self.clock.raw()
            } else {
                UNTIMED
            };
            return match self.try_admit(i, raw) {
                Some(p) => Admission::Admitted(p),
                None => Admission::Shed(self.shed(i, ShedReason::Limit, self.now_ns())),
            };
        };
        self.admit_or_enqueue(queue, i, self.clock.raw())
    }

    /// [`admit_or_queue`](Self::admit_or_queue) with a queue.
    #[inline(never)]
    fn admit_or_enqueue(self: &Arc<Self>, queue: &super::Queue, i: usize, raw: u64) -> Admission {
        let now = self.ns(raw);
        // No barging: while others wait, a newcomer joins the queue.
        if queue.len.load(Ordering::Acquire) == 0 {
            if let Some(p) = self.try_admit(i, raw) {
                return Admission::Admitted(p);
            }
        } else if !self.single {
            self.partitions[i]
                .last_arrival
                .store(now, Ordering::Relaxed);
        }
        let rx = {
            let mut state = lock(&queue.state);
            let t = tokio::time::Instant::now();
            if state.len >= queue.config.max_len {
                let standing =
                    t.saturating_duration_since(state.last_empty) >= queue.config.interval;
                // LIFO mode: the oldest waiter of the lowest partition makes room.
                let evicted = if standing {
                    state
                        .lines
                        .iter_mut()
                        .enumerate()
                        .rev()
                        .find_map(|(j, l)| l.pop_front().map(|_| j))
                } else {
                    None
                };
                let Some(evicted) = evicted else {
                    drop(state);
                    return Admission::Shed(self.shed(i, ShedReason::QueueFull, now));
                };
                // The evicted waiter's receiver reports the drop; it is counted here.
                state.len -= 1;
                let _ = self.shed(evicted, ShedReason::QueueFull, now);
            }
            if state.len == 0 {
                // The queue was empty until now.
                state.last_empty = t;
            }
            let (tx, rx) = oneshot::channel();
            state.lines[i].push_back(Waiter { since: t, tx });
            state.len += 1;
            queue.len.store(state.len, Ordering::Release);
            #[cfg(feature = "metrics")]
            self.metrics.queue_length.set(state.len as f64);
            rx
        };
        // A slot may have freed between the failed admission and the enqueue.
        self.dispatch();
        Admission::Queued(rx)
    }

    /// Hands free slots to waiting requests, and drops the ones CoDel gives up on.
    pub(super) fn dispatch(self: &Arc<Self>) {
        let Some(queue) = &self.queue else { return };
        if queue.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut dropped: Vec<usize> = Vec::new();
        {
            let mut state = lock(&queue.state);
            let t = tokio::time::Instant::now();
            let raw = self.clock.raw();
            loop {
                if state.len == 0 {
                    state.last_empty = t;
                    break;
                }
                let standing =
                    t.saturating_duration_since(state.last_empty) >= queue.config.interval;
                let max_wait = if standing {
                    queue.config.target
                } else {
                    queue.config.interval
                };
                // Drop what waited too long (oldest first) and what nobody waits for.
                let mut removed = 0;
                for (j, line) in state.lines.iter_mut().enumerate() {
                    while let Some(w) = line.front() {
                        if w.tx.is_closed() {
                            line.pop_front();
                            removed += 1;
                        } else if t.saturating_duration_since(w.since) > max_wait {
                            line.pop_front();
                            removed += 1;
                            dropped.push(j);
                        } else {
                            break;
                        }
                    }
                }
                state.len -= removed;
                if state.len == 0 {
                    continue;
                }
                // Serve the highest-priority partition that may take a slot.
                let mut served = false;
                for j in 0..state.lines.len() {
                    if state.lines[j].is_empty() {
                        continue;
                    }
                    let Some(permit) = self.try_admit(j, raw) else {
                        continue;
                    };
                    let waiter = if standing {
                        state.lines[j].pop_back()
                    } else {
                        state.lines[j].pop_front()
                    };
                    state.len -= 1;
                    match waiter {
                        Some(w) => {
                            if let Err(permit) = w.tx.send(permit) {
                                // The waiter left: return the slot without dispatching again
                                // (we hold the queue lock) and keep going.
                                permit.release_quietly();
                            }
                        }
                        None => permit.release_quietly(),
                    }
                    served = true;
                    break;
                }
                if !served {
                    break;
                }
            }
            queue.len.store(state.len, Ordering::Release);
            #[cfg(feature = "metrics")]
            self.metrics.queue_length.set(state.len as f64);
        }
        let now = self.now_ns();
        for j in dropped {
            // Their receivers see the sender dropped and report `Overloaded`.
            let _ = self.shed(j, ShedReason::QueueTimeout, now);
        }
    }

    /// Returns a slot; records the call's sample when it has a verdict.
    #[inline]
    pub(super) fn release(
        self: &Arc<Self>,
        permit: &Permit,
        outcome: Option<Outcome>,
        dispatch: bool,
    ) {
        if !self.single {
            self.partitions[permit.partition as usize]
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
        }
        self.hot.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut limit_rose = false;
        if let Some(outcome) = outcome
            && outcome != Outcome::Ignored
        {
            // In clock ticks (as quanta's `delta_as_nanos`, a reading behind the start counts
            // as 0); the window scales them when it closes.
            if permit.start == UNTIMED {
                self.record_untimed(permit.in_flight, outcome.is_failure());
            } else {
                let end = self.clock.raw();
                let rtt = end.saturating_sub(permit.start);
                let now = end.saturating_sub(self.epoch);
                limit_rose = self.record(rtt, permit.in_flight, outcome.is_failure(), now);
            }
        } else if self.single {
            self.window
                .shard()
                .unmeasured
                .fetch_add(1, Ordering::Relaxed);
        }
        if dispatch && (limit_rose || self.queue.is_some()) {
            self.dispatch();
        }
    }
}
