//! Polling a future without a runtime, for allocation and state-machine tests.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls `fut` once with a no-op waker.
///
/// ```
/// use std::task::Poll;
/// assert_eq!(rampart_test_support::poll::poll_once(async { 7 }), Poll::Ready(7));
/// ```
pub fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut fut = pin!(fut);
    fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// Polls `fut` with a no-op waker until it is ready, at most `max_polls` times.
pub fn poll_ready<F: Future>(fut: F, max_polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..max_polls {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
    }
    None
}
