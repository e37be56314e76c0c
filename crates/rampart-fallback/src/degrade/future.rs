//! [`DegradeFuture`]: runs a call with its deadline and answers with the fallback value when
//! it fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use rampart_health::{BoxError, is_never_reached};
use tokio::time::Sleep;

use super::strategy::FallbackValue;
use super::{DegradeInner, DegradeReason, Degraded};

pin_project! {
    #[project = StateProj]
    enum State<F, Fb, FbFut> {
        Call {
            #[pin]
            call: F,
            #[pin]
            sleep: Option<Sleep>,
            deadline: Option<Duration>,
            fallback: Option<Fb>,
        },
        Fallback {
            #[pin]
            future: FbFut,
            reason: DegradeReason,
        },
        Done,
    }
}

pin_project! {
    /// A call with a deadline and a fallback; resolves to a [`Degraded`] value, never fails.
    pub struct DegradeFuture<F, Fb>
    where
        Fb: FallbackValue,
    {
        #[pin]
        state: State<F, Fb, Fb::Future>,
        inner: Arc<DegradeInner>,
    }
}

impl<F, Fb: FallbackValue> std::fmt::Debug for DegradeFuture<F, Fb> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DegradeFuture")
            .field("dependency", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<F, Fb: FallbackValue> DegradeFuture<F, Fb> {
    pub(crate) fn new(call: F, fallback: Fb, inner: Arc<DegradeInner>) -> Self {
        Self {
            state: State::Call {
                call,
                sleep: None,
                deadline: inner.deadline(),
                fallback: Some(fallback),
            },
            inner,
        }
    }

    /// Already failed (the service's `poll_ready` did): straight to the fallback.
    pub(crate) fn failed(error: &BoxError, fallback: Fb, inner: Arc<DegradeInner>) -> Self {
        let reason = reason_of(error);
        inner.record(reason, Some(error));
        Self {
            state: State::Fallback {
                future: fallback.into_future(reason),
                reason,
            },
            inner,
        }
    }
}

fn reason_of(error: &BoxError) -> DegradeReason {
    if is_never_reached(&**error) {
        DegradeReason::Unavailable
    } else {
        DegradeReason::Failed
    }
}

impl<F, Fb, T, E> Future for DegradeFuture<F, Fb>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    Fb: FallbackValue<Output = T>,
{
    type Output = Degraded<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Degraded<T>> {
        let mut this = self.project();
        loop {
            let (reason, fallback) = match this.state.as_mut().project() {
                StateProj::Call {
                    call,
                    mut sleep,
                    deadline,
                    fallback,
                } => {
                    // The deadline starts at the first poll (futures are lazy).
                    if let Some(d) = deadline.take() {
                        sleep.set(Some(tokio::time::sleep(d)));
                    }
                    let reason = match call.poll(cx) {
                        Poll::Ready(Ok(value)) => {
                            this.inner.record_ok();
                            this.state.set(State::Done);
                            return Poll::Ready(Degraded {
                                value,
                                reason: None,
                            });
                        }
                        Poll::Ready(Err(e)) => {
                            let e: BoxError = e.into();
                            let reason = reason_of(&e);
                            this.inner.record(reason, Some(&e));
                            reason
                        }
                        Poll::Pending => {
                            let expired = sleep.as_pin_mut().is_some_and(|s| s.poll(cx).is_ready());
                            if !expired {
                                return Poll::Pending;
                            }
                            this.inner.record(DegradeReason::DeadlineExceeded, None);
                            DegradeReason::DeadlineExceeded
                        }
                    };
                    (reason, fallback.take())
                }
                StateProj::Fallback { future, reason } => {
                    let reason = *reason;
                    return match future.poll(cx) {
                        Poll::Ready(value) => {
                            this.state.set(State::Done);
                            Poll::Ready(Degraded {
                                value,
                                reason: Some(reason),
                            })
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                // Polled after completion: a contract violation; stay pending rather than panic.
                StateProj::Done => return Poll::Pending,
            };
            match fallback {
                // Dropping the call here cancels it.
                Some(fb) => this.state.set(State::Fallback {
                    future: fb.into_future(reason),
                    reason,
                }),
                None => {
                    this.state.set(State::Done);
                    return Poll::Pending;
                }
            }
        }
    }
}
