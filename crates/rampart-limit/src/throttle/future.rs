//! The response future of [`Throttle`](super::Throttle).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use rampart_health::{BoxError, Classify};

use super::ThrottleGuard;
use crate::Overloaded;

pin_project! {
    /// The future of a call through a [`Throttle`](super::Throttle): the inner call, or an
    /// immediate local rejection.
    #[derive(Debug)]
    pub struct ThrottleFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            guard: Option<ThrottleGuard>,
            classify: C,
        },
        Rejected {
            error: Option<Overloaded>,
        },
    }
}

impl<F, C> ThrottleFuture<F, C> {
    pub(crate) fn called(future: F, guard: ThrottleGuard, classify: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                guard: Some(guard),
                classify,
            },
        }
    }

    pub(crate) fn rejected(error: Overloaded) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, T, E> Future for ThrottleFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(guard) = guard.take() {
                    guard.record(classify.classify(result.as_ref()));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => BoxError::from("throttle response future polled after completion"),
            })),
        }
    }
}
