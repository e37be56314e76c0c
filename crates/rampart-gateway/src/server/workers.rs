//! Worker threads, each with its own current-thread runtime (or one multi-thread runtime).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::accept::accept_loop;
use super::shared::Shared;
use super::{Handler, Runtime, ServerConfig, bind_std};

/// Running workers (see [`spawn_workers`]).
///
/// Dropping this starts the graceful shutdown without waiting for it: the worker threads end
/// within [`ServerConfig::shutdown_grace`]. [`join`](Self::join) waits for them.
#[derive(Debug)]
pub struct Workers {
    addr: SocketAddr,
    shutdown: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; requests in flight finish within the grace period, then every
    /// connection closes and the workers end.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Blocks until every worker has ended (after [`shutdown`](Self::shutdown), or never).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// For binaries: blocks until SIGTERM or Ctrl-C (see [`shutdown_signal`](super::shutdown_signal)),
    /// then shuts down gracefully and waits for the workers.
    pub fn run_until_signal(self) -> io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(super::shutdown_signal());
        tracing::info!("shutdown signal received");
        self.shutdown();
        self.join();
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Listening sockets bound for workers, not yet served (see [`bind_workers`]): a binary can
/// learn and announce its address before anything else starts.
#[derive(Debug)]
pub struct WorkerListeners {
    addr: SocketAddr,
    runtime: Runtime,
    sockets: Vec<std::net::TcpListener>,
}

impl WorkerListeners {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts one worker per socket (see [`spawn_workers`]).
    pub fn spawn<H, F>(self, config: &ServerConfig, make_handler: F) -> io::Result<Workers>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let n = config.effective_workers();
        let shared = Shared::new(config);
        let shutdown = CancellationToken::new();
        let make_handler = Arc::new(make_handler);
        let mut workers = Workers {
            addr: self.addr,
            shutdown: shutdown.clone(),
            threads: Vec::new(),
        };
        if self.runtime == Runtime::MultiThread {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .thread_name(format!("{}-worker", config.name()))
                .enable_all()
                .build()?;
            // One socket; the runtime lives (and its connections with it) as long as the
            // accept loop, which drains gracefully before it returns.
            if let Some(listener) = self.sockets.into_iter().next() {
                let thread = std::thread::Builder::new()
                    .name(format!("{}-accept", config.name()))
                    .spawn(move || {
                        rt.block_on(run_worker(listener, make_handler(0), shared, shutdown));
                    })?;
                workers.threads.push(thread);
            }
        } else {
            for (i, listener) in self.sockets.into_iter().enumerate() {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let make_handler = make_handler.clone();
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("{}-{i}", config.name()))
                    .spawn(move || {
                        rt.block_on(async move {
                            let handler = make_handler(i);
                            run_worker(listener, handler, shared, shutdown).await;
                        });
                    })?;
                workers.threads.push(thread);
            }
        }
        tracing::info!(
            server = config.name(),
            addr = %workers.addr,
            workers = n,
            runtime = %config.runtime(),
            "listening"
        );
        Ok(workers)
    }
}

/// Binds the sockets [`spawn_workers`] would: one per worker with `SO_REUSEPORT` for
/// [`Runtime::PerCore`] (the first picks the port when `listen` has port 0, the others bind
/// the same one), one shared socket otherwise.
pub fn bind_workers(listen: SocketAddr, config: &ServerConfig) -> io::Result<WorkerListeners> {
    let n = config.effective_workers();
    let backlog = config.backlog();
    let runtime = config.runtime();
    let first = bind_std(listen, backlog, runtime == Runtime::PerCore)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![];
    match runtime {
        Runtime::MultiThread => sockets.push(first),
        Runtime::PerCore | Runtime::PerCoreShared => {
            for _ in 1..n {
                sockets.push(if runtime == Runtime::PerCore {
                    bind_std(addr, backlog, true)?
                } else {
                    first.try_clone()?
                });
            }
            sockets.insert(0, first);
        }
    }
    Ok(WorkerListeners {
        addr,
        runtime,
        sockets,
    })
}

/// Binds `listen` and starts the workers [`ServerConfig::runtime`] and
/// [`ServerConfig::workers`] describe ([`bind_workers`] then [`WorkerListeners::spawn`]).
/// `make_handler(i)` builds worker `i`'s handler inside that worker's runtime, so the tasks it
/// spawns (upstream connection pools, timers) live on the worker's thread. The connection cap
/// is shared by all workers.
pub fn spawn_workers<H, F>(
    listen: SocketAddr,
    config: &ServerConfig,
    make_handler: F,
) -> io::Result<Workers>
where
    H: Handler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    bind_workers(listen, config)?.spawn(config, make_handler)
}

async fn run_worker<H: Handler>(
    listener: std::net::TcpListener,
    handler: H,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    match TcpListener::from_std(listener) {
        Ok(listener) => accept_loop(listener, handler, shared, shutdown).await,
        Err(e) => tracing::error!(error = %e, "worker cannot listen"),
    }
}
