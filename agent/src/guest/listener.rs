//! The metadata service's listeners: one Unix socket per running instance, and a minimal
//! HTTP/1.x responder on it. The socket a request arrives on is what says which instance asks,
//! so a guest can never be answered with another one's data whatever it sends. The guest
//! reaches its socket through QEMU's `guestfwd` (see `proxy`).
//!
//! A guest is untrusted: it holds at most [`Limits::connections`] connections (and so threads,
//! and `metadata-proxy` processes that live longer than a refusal), and each must have sent its
//! request within [`Limits::deadline`] of connecting, however slowly it trickles.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::imds::{self, Answer, GuestView};
use super::GuestConfig;

/// Longest request head read; metadata requests are one short line and a few headers.
const MAX_HEAD: u64 = 8 * 1024;

/// What one guest may hold of the metadata service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed at once. cloud-init
    /// asks one thing at a time.
    pub connections: usize,
    /// From connecting to the whole request read, and then to the answer written.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { connections: 8, deadline: Duration::from_secs(10) }
    }
}

/// The instance's current data: updates are seen by the next request.
pub type Lookup = Arc<dyn Fn() -> Option<(uuid::Uuid, String, GuestConfig)> + Send + Sync>;

/// A listening socket, closed and removed on drop.
pub struct MetadataListener {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetadataListener {
    pub fn start(path: &Path, lookup: Lookup) -> io::Result<Self> {
        Self::start_with(path, lookup, Limits::default())
    }

    pub fn start_with(path: &Path, lookup: Lookup, limits: Limits) -> io::Result<Self> {
        // A socket left by an earlier run (or an agent that died) would refuse the bind.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let open = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new().name("metadata".into()).spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= limits.connections {
                    open.fetch_sub(1, Ordering::SeqCst);
                    refuse(&stream);
                    continue;
                }
                let (lookup, held) = (lookup.clone(), open.clone());
                let spawned = std::thread::Builder::new().name("metadata-conn".into()).spawn(move || {
                    if let Err(error) = serve(stream, &lookup, Instant::now() + limits.deadline) {
                        tracing::debug!(error = %service_kit::ErrorChain(&error), "metadata request failed");
                    }
                    held.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    open.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
        Ok(MetadataListener { path: path.to_owned(), stop, thread: Some(thread) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for MetadataListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag. If the socket is already gone, the
        // thread cannot be woken: it is left blocked rather than waited for forever.
        if UnixStream::connect(&self.path).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A guest over its connection limit: told so in one small write that cannot block for long.
fn refuse(stream: &UnixStream) {
    // What already arrived is read first: closing on unread bytes would reset the connection
    // and lose the answer. Nothing is waited for.
    if stream.set_nonblocking(true).is_ok() {
        let mut request = [0u8; 4096];
        let _ = (&mut &*stream).read(&mut request);
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let mut out = stream;
    let _ =
        out.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

/// Reads from a socket until `deadline`, whatever the pace of what arrives.
struct BeforeDeadline<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for BeforeDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the request took too long"));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

fn serve(stream: UnixStream, lookup: &Lookup, deadline: Instant) -> io::Result<()> {
    let mut reader = BufReader::new(BeforeDeadline { stream: &stream, deadline }.take(MAX_HEAD));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers are read and ignored: nothing in them may choose the instance.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let (status, answer) = respond(&request_line, lookup);
    // A guest that does not read its answer is not waited for past the deadline either.
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    stream.set_write_timeout(Some(left))?;
    let mut out = &stream;
    let body = answer.as_ref().map_or("", |a| a.body.as_str());
    let content_type = answer.as_ref().map_or("text/plain", |a| a.content_type);
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !request_line.starts_with("HEAD ") {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
}

/// The status line and body for one request line.
fn respond(request_line: &str, lookup: &Lookup) -> (&'static str, Option<Answer>) {
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return ("400 Bad Request", None);
    };
    if method != "GET" && method != "HEAD" {
        // IMDSv2's `PUT /latest/api/token` lands here; clients then fall back to v1.
        return ("405 Method Not Allowed", None);
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let Some((uuid, hostname, config)) = lookup() else { return ("404 Not Found", None) };
    match imds::answer(path, &GuestView { uuid, hostname: &hostname, config: &config }) {
        Some(answer) => ("200 OK", Some(answer)),
        None => ("404 Not Found", None),
    }
}

/// `agent metadata-proxy SOCKET`: what QEMU's `guestfwd` runs for each guest connection,
/// copying its stdin to the instance's socket and the answer back to stdout.
pub fn proxy(socket: &Path) -> io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    let mut to_socket = stream.try_clone()?;
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_socket);
        let _ = to_socket.shutdown(std::net::Shutdown::Write);
    });
    let mut from_socket = &stream;
    io::copy(&mut from_socket, &mut io::stdout().lock())?;
    // The answer is complete once the service closes; the guest may still hold stdin open.
    drop(upstream);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(socket: &Path, request: &str) -> String {
        let mut stream = UnixStream::connect(socket).unwrap();
        // A refused connection may be answered and closed before the request is read: then
        // the write fails, or the end of the answer is a reset.
        let _ = stream.write_all(request.as_bytes());
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !response.is_empty() => break,
                Err(e) => panic!("{e}"),
            }
        }
        String::from_utf8(response).unwrap()
    }

    fn lookup_for(hostname: &str) -> Lookup {
        let hostname = hostname.to_string();
        let uuid = uuid::Uuid::new_v4();
        Arc::new(move || Some((uuid, hostname.clone(), GuestConfig::default())))
    }

    #[test]
    fn each_socket_answers_with_its_own_instance_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = MetadataListener::start(&dir.path().join("a.sock"), lookup_for("alpha")).unwrap();
        let b = MetadataListener::start(&dir.path().join("b.sock"), lookup_for("beta")).unwrap();
        let request = "GET /latest/meta-data/local-hostname HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";
        let from_a = get(a.path(), request);
        assert!(from_a.starts_with("HTTP/1.1 200 OK\r\n") && from_a.ends_with("\r\n\r\nalpha"), "{from_a}");
        assert!(get(b.path(), request).ends_with("\r\n\r\nbeta"));
        // Nothing in the request can name another instance.
        let forged = "GET /latest/meta-data/local-hostname?instance=alpha HTTP/1.1\r\n\
                      X-Forwarded-For: 169.254.0.15\r\nX-Instance-Id: alpha\r\n\r\n";
        assert!(get(b.path(), forged).ends_with("\r\n\r\nbeta"));
        assert!(get(b.path(), "PUT /latest/api/token HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(b.path(), "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(b.path(), "garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        let head = get(a.path(), "HEAD /latest/meta-data/local-hostname HTTP/1.0\r\n\r\n");
        assert!(head.contains("Content-Length: 5\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        let socket = a.path().to_owned();
        drop(a);
        assert!(!socket.exists(), "the socket is removed with its listener");
    }

    #[test]
    fn a_guest_holds_a_bounded_number_of_connections_and_none_past_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { connections: 4, deadline: Duration::from_secs(1) };
        let listener =
            MetadataListener::start_with(&dir.path().join("m.sock"), lookup_for("alpha"), limits).unwrap();
        let request = "GET /latest/meta-data/local-hostname HTTP/1.1\r\n\r\n";
        // Four connections that send nothing hold every place: the next is refused at once.
        let idle: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(listener.path()).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        assert!(get(listener.path(), request).starts_with("HTTP/1.1 503"), "over the limit");
        // Past the deadline they are closed, and the places are free again.
        for mut stream in idle {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(get(listener.path(), request).ends_with("\r\n\r\nalpha"));
        // A request trickled a byte at a time is cut off at the deadline, not served forever.
        let mut slow = UnixStream::connect(listener.path()).unwrap();
        let started = Instant::now();
        let mut closed = false;
        let endless = b"GET / HTTP/1.1\r\nX-Pad: ".iter().chain(std::iter::repeat(&b'a')).take(200);
        for &byte in endless {
            std::thread::sleep(Duration::from_millis(50));
            if slow.write_all(&[byte]).is_err() {
                closed = true;
                break;
            }
        }
        assert!(closed, "still open after {:?}", started.elapsed());
    }

    #[test]
    fn an_instance_that_is_gone_gets_404() {
        let dir = tempfile::tempdir().unwrap();
        let listener = MetadataListener::start(&dir.path().join("gone.sock"), Arc::new(|| None)).unwrap();
        assert!(get(listener.path(), "GET /latest/meta-data/ HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    }
}
