//! The page guard: a page's deadline, its panics and its time limit in one layer and one
//! future.
//!
//! - **Deadline.** The page's deadline is its budget from now, or earlier when the request
//!   already carries one (`x-rampart-deadline-ms` or `grpc-timeout` from the edge). The
//!   handler runs [`within`](super::within) it: every upstream call it makes carries what is
//!   left of it.
//! - **Panics.** A panic in the handler (while it is called or polled) becomes a `500`
//!   (`text/plain`, `Service panicked`, and an `ERROR` event with the panic's message, as
//!   tower-http's `CatchPanicLayer` does), which the apology around the pages then replaces.
//! - **Time limit.** A page not answered within its budget becomes an empty `503`, which a
//!   stale copy or the apology then replaces.
//!
//! The time limit costs no timer when the handler answers on its first poll: the timer is
//! registered only when the handler first has to wait, for the instant the page started
//! plus its budget, so the limit is the same as with a timer started at once.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use rampart::health::DEADLINE_HEADER;
use rampart::health::Deadline;
use rampart::health::deadline::GRPC_TIMEOUT_HEADER;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use super::upstream;

/// Guards every page: the handler runs within the page's deadline (its budget, or the earlier
/// one the request carries), a panic becomes a plain `500`, and a page not answered within its
/// budget an empty `503` (its timer registered only when the handler first waits).
#[derive(Debug, Clone, Copy)]
pub struct PageGuardLayer {
    budget: Duration,
}

impl PageGuardLayer {
    /// Pages get `budget`.
    pub fn new(budget: Duration) -> Self {
        Self { budget }
    }
}

impl<S> Layer<S> for PageGuardLayer {
    type Service = PageGuard<S>;

    fn layer(&self, inner: S) -> PageGuard<S> {
        PageGuard {
            inner,
            budget: self.budget,
        }
    }
}

/// The service of [`PageGuardLayer`].
#[derive(Debug, Clone)]
pub struct PageGuard<S> {
    inner: S,
    budget: Duration,
}

impl<S, B> Service<Request<B>> for PageGuard<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = PageGuardFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let own = Deadline::after(self.budget);
        // One pass over the few fields a request has is cheaper than the two hashed lookups
        // of `Deadline::from_headers`, which runs only when one of its headers is there.
        let carried = req
            .headers()
            .keys()
            .any(|name| name == DEADLINE_HEADER || name == GRPC_TIMEOUT_HEADER);
        let deadline = match carried {
            true => Deadline::from_headers(req.headers()).map_or(own, |d| d.min(own)),
            false => own,
        };
        let kind = match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => Kind::Running {
                future,
                timer: None,
            },
            Err(panic) => Kind::Panicked { panic: Some(panic) },
        };
        PageGuardFuture {
            kind,
            deadline,
            limit: own.instant(),
        }
    }
}

pin_project! {
    /// The future of [`PageGuard`].
    pub struct PageGuardFuture<F> {
        #[pin]
        kind: Kind<F>,
        deadline: Deadline,
        // When the page is answered with `503` (its own budget, from when it started).
        limit: Instant,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Running {
            #[pin]
            future: F,
            // Registered when the handler first has to wait (boxed: a timer is large, and
            // most pages never need one).
            timer: Option<Pin<Box<Sleep>>>,
        },
        Panicked {
            panic: Option<Box<dyn Any + Send>>,
        },
    }
}

impl<F> std::fmt::Debug for PageGuardFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageGuardFuture")
            .field("deadline", &self.deadline)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<F, E> Future for PageGuardFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Panicked { panic } => Poll::Ready(Ok(panicked(panic.take().as_deref()))),
            KindProj::Running { future, timer } => {
                let deadline = *this.deadline;
                let polled = catch_unwind(AssertUnwindSafe(|| {
                    upstream::with_page_deadline(deadline, || future.poll(cx))
                }));
                match polled {
                    Ok(Poll::Ready(out)) => return Poll::Ready(out),
                    Ok(Poll::Pending) => {}
                    Err(panic) => return Poll::Ready(Ok(panicked(Some(&*panic)))),
                }
                let limit = *this.limit;
                let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Ok(timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// The answer to a page past its time limit: an empty `503`.
fn timed_out() -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp
}

/// The answer to a page that panicked: a plain `500`, and the panic's message logged.
fn panicked(panic: Option<&(dyn Any + Send)>) -> Response<Body> {
    let message = panic.and_then(|p| {
        p.downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
    });
    match message {
        Some(m) => tracing::error!(target: "tower_http::catch_panic", "Service panicked: {m}"),
        None => tracing::error!(
            target: "tower_http::catch_panic",
            "Service panicked but `CatchPanic` was unable to downcast the panic info"
        ),
    }
    let mut resp = Response::new(Body::from("Service panicked"));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn status_and_body<S>(svc: S) -> (StatusCode, String)
    where
        S: Service<Request<Body>, Response = Response<Body>>,
        S::Error: std::fmt::Debug,
    {
        let resp = PageGuardLayer::new(Duration::from_millis(500))
            .layer(svc)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_page_answered_at_once_passes_through() {
        let svc = tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::from("page")))
        });
        assert_eq!(
            status_and_body(svc).await,
            (StatusCode::OK, "page".to_owned())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_page_is_a_503_at_its_budget() {
        let svc = tower::service_fn(|_req: Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(Response::new(Body::from("late")))
        });
        let started = Instant::now();
        let (status, body) = status_and_body(svc).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "")
        );
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_that_waits_within_its_budget_is_answered() {
        let svc = tower::service_fn(|_req: Request<Body>| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::convert::Infallible>(Response::new(Body::from("page")))
        });
        assert_eq!(
            status_and_body(svc).await,
            (StatusCode::OK, "page".to_owned())
        );
    }

    #[tokio::test]
    async fn a_panic_while_polled_is_a_plain_500() {
        let svc = tower::service_fn(|_req: Request<Body>| async {
            let fail = true;
            if fail {
                panic!("the page broke");
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        });
        assert_eq!(
            status_and_body(svc).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Service panicked".to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_panic_while_called_is_a_plain_500() {
        let svc = tower::service_fn(|_req: Request<Body>| -> std::future::Ready<
            Result<Response<Body>, std::convert::Infallible>,
        > { panic!("no page") });
        assert_eq!(
            status_and_body(svc).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Service panicked".to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_deadline_the_request_carries_bounds_the_page() {
        let svc = PageGuardLayer::new(Duration::from_millis(500)).layer(tower::service_fn(
            |_req: Request<Body>| async move {
                let remaining = upstream::current_page_deadline()
                    .map(|d| d.remaining())
                    .unwrap_or_default();
                Ok::<_, std::convert::Infallible>(Response::new(Body::from(format!(
                    "{}",
                    remaining <= Duration::from_millis(100) && !remaining.is_zero()
                ))))
            },
        ));
        let req = Request::builder()
            .header(DEADLINE_HEADER, "100")
            .body(Body::empty())
            .unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"true");
    }

    #[tokio::test]
    async fn the_handler_runs_within_the_page_deadline() {
        let svc = tower::service_fn(|_req: Request<Body>| async move {
            let seen = upstream::current_page_deadline();
            let remaining = seen.map(|d| d.remaining()).unwrap_or_default();
            Ok::<_, std::convert::Infallible>(Response::new(Body::from(format!(
                "{}",
                remaining <= Duration::from_millis(500) && !remaining.is_zero()
            ))))
        });
        assert_eq!(
            status_and_body(svc).await,
            (StatusCode::OK, "true".to_owned())
        );
    }
}
