//! A server on a thread of its own, with its own actix system: what tests start (and what an
//! embedding program could), exactly as `main` runs it. Dropping it stops the server (without waiting for open connections)
//! and joins the thread.

use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use actix_web::dev::{Server, ServerHandle};

use crate::metrics::Metrics;

/// A bound, not yet serving, server: what a service's `bind` hands over, with what to do once
/// it has stopped (stop background work, let go of VMs...).
pub struct Bound {
    pub server: Server,
    /// The addresses it answers on (port 0 in the config: the one the system chose).
    pub addrs: Vec<SocketAddr>,
    pub after_stop: Box<dyn FnOnce()>,
}

impl Bound {
    /// Serves until the server is stopped (a signal, or its handle), then runs `after_stop`.
    pub async fn run(self) -> io::Result<()> {
        let result = self.server.await;
        (self.after_stop)();
        result
    }
}

/// Binds a service's API on `addr`: request ids, HTTP metrics recorded into `metrics` (which
/// the handlers reach as `web::Data<Metrics>`, to answer `GET /metrics`), `state` for the
/// handlers, the routes of `configure`; `after_stop` runs once the server has stopped.
pub fn bind_api<T: Send + Sync + 'static>(
    addr: SocketAddr,
    state: actix_web::web::Data<T>,
    metrics: Arc<Metrics>,
    configure: fn(&mut actix_web::web::ServiceConfig),
    after_stop: Box<dyn FnOnce() + Send>,
) -> io::Result<Bound> {
    let metrics = actix_web::web::Data::from(metrics);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(actix_web::middleware::from_fn(crate::request_id::middleware))
            // Outermost: the latency includes the other middleware.
            .wrap(actix_web::middleware::from_fn(crate::metrics::middleware))
            .app_data(metrics.clone())
            .app_data(state.clone())
            .configure(configure)
    })
    .bind(addr)?;
    let addrs = server.addrs();
    Ok(Bound { server: server.run(), addrs, after_stop })
}

/// A running server; see the module docs.
pub struct ServerThread {
    pub addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerThread {
    /// Runs `bind` on a new thread inside a new actix system and serves what it bound. A
    /// failed `bind` is returned as it is; a panic in it is resumed here.
    pub fn start<E: Send + 'static>(
        bind: impl FnOnce() -> Result<Bound, E> + Send + 'static,
    ) -> Result<Self, E> {
        Self::start_async(move || async move { bind() })
    }

    /// [`ServerThread::start`] for a `bind` that awaits (a database connection, say).
    pub fn start_async<E, F>(bind: impl FnOnce() -> F + Send + 'static) -> Result<Self, E>
    where
        E: Send + 'static,
        F: std::future::Future<Output = Result<Bound, E>> + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match bind().await {
                    Ok(bound) => {
                        let _ = tx.send(Ok((bound.addrs[0], bound.server.handle())));
                        bound.run().await
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        Ok(())
                    }
                }
            })
        });
        match rx.recv() {
            Ok(Ok((addr, handle))) => Ok(ServerThread { addr, handle, thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The thread ended without a word: it panicked.
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(_) => unreachable!("the server thread always reports before it ends"),
            },
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // `stop` is async and this may run outside any runtime: give it a small one.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(handle.stop(false));
            }
        })
        .join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
