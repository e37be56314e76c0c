//! The connection's IO as hyper sees it: the bytes read ahead while waiting for the first
//! request head, then the socket; every read tells the connection's [`Phase`] tracker.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where an HTTP/1 connection is between requests. The connection task (the only writer in
/// practice: hyper polls the IO, the service and the response body from it) records each
/// change; the watchdog reads it after each poll of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the next request; nothing of it received.
    Idle = 1,
    /// Part of a request head received.
    Head = 2,
    /// The handler runs and the request has a body it may still be reading.
    BusyBody = 3,
    /// The handler runs (bodiless request) or its response is being written.
    Busy = 4,
}

impl Phase {
    fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            1 => Self::Idle,
            2 => Self::Head,
            3 => Self::BusyBody,
            _ => Self::Busy,
        }
    }
}

/// The phase and a generation count packed in one word (`generation << 3 | phase`), so a
/// watchdog sees a new phase even when the connection went round the cycle within one poll;
/// and a count of reads while a request body may be arriving.
///
/// Only relaxed loads and stores: every access happens on the connection's own task.
#[derive(Debug)]
pub(crate) struct ConnState {
    word: AtomicU32,
    body_reads: AtomicU32,
    writes: AtomicU32,
    write_blocked: AtomicBool,
}

impl ConnState {
    pub(crate) fn new(phase: Phase) -> Self {
        Self {
            word: AtomicU32::new(phase as u32),
            body_reads: AtomicU32::new(0),
            writes: AtomicU32::new(0),
            write_blocked: AtomicBool::new(false),
        }
    }

    /// The packed word: compare two to know whether anything happened in between.
    pub(crate) fn word(&self) -> u32 {
        self.word.load(Ordering::Relaxed)
    }

    pub(crate) fn phase_of(word: u32) -> Phase {
        Phase::from_bits(word)
    }

    pub(crate) fn body_reads(&self) -> u32 {
        self.body_reads.load(Ordering::Relaxed)
    }

    /// Did the last write find the socket full (a response still partly unsent)?
    pub(crate) fn write_blocked(&self) -> bool {
        self.write_blocked.load(Ordering::Relaxed)
    }

    /// A count of writes the socket accepted (bytes sent): compare two to know whether a
    /// blocked response made progress in between.
    pub(crate) fn writes(&self) -> u32 {
        self.writes.load(Ordering::Relaxed)
    }

    fn on_write(&self, polled: &Poll<io::Result<usize>>) {
        self.write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.writes.store(
                self.writes.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn set(&self, phase: Phase) {
        let w = self.word.load(Ordering::Relaxed);
        self.word.store(
            ((w >> 3).wrapping_add(1) << 3) | phase as u32,
            Ordering::Relaxed,
        );
    }

    /// Bytes arrived.
    fn on_read(&self) {
        let w = self.word.load(Ordering::Relaxed);
        match Phase::from_bits(w) {
            Phase::Idle => self.set(Phase::Head),
            Phase::BusyBody => self.body_reads.store(
                self.body_reads.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            ),
            Phase::Head | Phase::Busy => {}
        }
    }
}

pin_project! {
    /// `I` with `prefix` read first; reports reads to the [`ConnState`].
    #[derive(Debug)]
    pub(crate) struct ConnIo<I> {
        #[pin]
        inner: I,
        prefix: Bytes,
        state: Arc<ConnState>,
    }
}

impl<I> ConnIo<I> {
    pub(crate) fn new(inner: I, prefix: Bytes, state: Arc<ConnState>) -> Self {
        Self {
            inner,
            prefix,
            state,
        }
    }

    pub(crate) fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: AsyncRead> AsyncRead for ConnIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Release the read-ahead buffer now, not when the connection ends.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read();
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for ConnIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        this.state.on_write(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        this.state.on_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
