//! The live progress line on a terminal: elapsed time, the phase, and the responses so far by
//! class.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::lock;
use super::phases::PHASES;
use super::report::{self, Collector};

/// The live progress line (on a terminal only).
pub(super) struct Progress {
    pub(super) collector: Arc<Mutex<Collector>>,
    pub(super) phase: Arc<AtomicUsize>,
    pub(super) done: Arc<AtomicBool>,
    pub(super) start: Instant,
    pub(super) total: Duration,
}

impl Progress {
    pub(super) async fn run(self) {
        let tty = std::io::stderr().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        while !self.done.load(Ordering::Relaxed) {
            tick.tick().await;
            if !tty {
                continue;
            }
            let (sent, ok, deg, apo, err) = lock(&self.collector).totals();
            let elapsed = self.start.elapsed().min(self.total);
            let frac = elapsed.as_secs_f64() / self.total.as_secs_f64().max(0.001);
            let filled = (frac * 24.0).round() as usize;
            let k = self.phase.load(Ordering::Relaxed).min(PHASES.len() - 1);
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r[{}{}] {:>5}/{} {}/{} {:<21} sent {sent} ok {ok} degraded {deg} apology {apo} errors {err}   ",
                "█".repeat(filled.min(24)),
                "░".repeat(24 - filled.min(24)),
                report::secs(elapsed),
                report::secs(self.total),
                k + 1,
                PHASES.len(),
                PHASES[k].name,
            );
            let _ = e.flush();
        }
        if tty {
            let _ = writeln!(std::io::stderr().lock());
        }
    }
}
