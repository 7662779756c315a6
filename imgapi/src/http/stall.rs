//! Downloads whose client stopped reading are cut off. actix has no write timeout, and a body
//! is not polled while its socket is full, so a body cannot notice by itself: each connection
//! keeps a duplicate of its socket's descriptor (taken in [`on_connect`]), each download a
//! [`Progress`] that its body touches for every block it hands out, and a watchdog task per
//! download shuts the socket down (with a reset) once no block went out for the timeout. actix
//! then sees the connection end and drops it, with everything the download held.

use std::any::Any;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use actix_web::HttpRequest;

/// A duplicate of a connection's socket, dropped with the connection.
struct ConnSocket(Arc<OwnedFd>);

/// Keeps a duplicate of each accepted socket (plain or TLS) in the connection's data.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions) {
    let tcp = conn.downcast_ref::<actix_web::rt::net::TcpStream>().or_else(|| {
        conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>>()
            .map(|tls| tls.get_ref().0)
    });
    match tcp.map(|tcp| tcp.as_fd().try_clone_to_owned()) {
        Some(Ok(fd)) => {
            data.insert(ConnSocket(Arc::new(fd)));
        }
        Some(Err(error)) => {
            tracing::warn!(error = %service_kit::ErrorChain(&error), "cannot watch a connection for stalls")
        }
        None => {}
    }
}

/// When a download last handed a block to its connection.
pub struct Progress {
    started: Instant,
    last_ms: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    pub fn sent(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn done(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Starts watching the download `req` answers: its connection is cut when no slice went out
/// for `timeout`. `None` when the connection cannot be watched.
pub fn watch(req: &HttpRequest, timeout: Duration) -> Option<Arc<Progress>> {
    let socket = Arc::downgrade(&req.conn_data::<ConnSocket>()?.0);
    let progress = Arc::new(Progress {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let watched = Arc::downgrade(&progress);
    let tick = (timeout / 4).max(Duration::from_millis(100));
    actix_web::rt::spawn(async move {
        loop {
            actix_web::rt::time::sleep(tick).await;
            let Some(progress) = watched.upgrade() else { return };
            if progress.done.load(Ordering::Relaxed) {
                return;
            }
            if progress.idle() >= timeout {
                if let Some(socket) = socket.upgrade() {
                    tracing::info!(
                        idle_secs = progress.idle().as_secs(),
                        "a download's client stopped reading: connection closed"
                    );
                    cut(&socket);
                }
                return;
            }
        }
    });
    Some(progress)
}

/// Resets the connection: unsent bytes are dropped at once rather than kept in the kernel for
/// a client that does not read them.
fn cut(socket: &OwnedFd) {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_linger(Some(Duration::ZERO));
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_counts_from_the_last_slice() {
        let progress =
            Progress { started: Instant::now(), last_ms: AtomicU64::new(0), done: AtomicBool::new(false) };
        std::thread::sleep(Duration::from_millis(30));
        assert!(progress.idle() >= Duration::from_millis(30));
        progress.sent();
        assert!(progress.idle() < Duration::from_millis(30));
    }
}
