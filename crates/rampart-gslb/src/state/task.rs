//! The background task: recomputes the split on every signal change and at failback
//! deadlines.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::time::Instant;

use super::{Control, Watched};

/// The background task: recompute on every signal change and at hold deadlines.
pub(crate) async fn run(control: Arc<Control>, mut watched: Vec<Watched>) {
    loop {
        let deadline = control.next_deadline();
        let woken = control.wake.notified();
        tokio::select! {
            closed = any_changed(&mut watched) => {
                if let Some(i) = closed {
                    watched.swap_remove(i);
                }
            }
            () = sleep_until(deadline) => {}
            () = woken => {}
        }
        control.recompute(Instant::now());
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Waits until any watched signal changes; returns the index of a closed one (its sender
/// dropped) so the caller stops watching it.
async fn any_changed(watched: &mut [Watched]) -> Option<usize> {
    if watched.is_empty() {
        return std::future::pending().await;
    }
    type Changed<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
    let mut futures: Vec<Changed<'_>> = watched
        .iter_mut()
        .map(|w| -> Changed<'_> {
            match w {
                Watched::Report(rx) => Box::pin(async move { rx.changed().await.is_ok() }),
                Watched::Probe(rx) => Box::pin(async move { rx.changed().await.is_ok() }),
            }
        })
        .collect();
    std::future::poll_fn(|cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            if let Poll::Ready(open) = f.as_mut().poll(cx) {
                return Poll::Ready(if open { None } else { Some(i) });
            }
        }
        Poll::Pending
    })
    .await
}
