//! The metadata service's listeners: one Unix socket per running instance, and a minimal
//! HTTP/1.x responder on it. The socket a request arrives on is what says which instance asks,
//! so a guest can never be answered with another one's data whatever it sends. The guest
//! reaches its socket through QEMU's `guestfwd` (see `proxy`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::imds::{self, Answer, GuestView};
use super::GuestConfig;

/// Longest request head read; metadata requests are one short line and a few headers.
const MAX_HEAD: u64 = 8 * 1024;
/// A guest that sends nothing is dropped after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

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
        // A socket left by an earlier run (or an agent that died) would refuse the bind.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("metadata".into()).spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let lookup = lookup.clone();
                let _ = std::thread::Builder::new().name("metadata-conn".into()).spawn(move || {
                    if let Err(error) = serve(stream, &lookup) {
                        tracing::debug!(error = %service_kit::ErrorChain(&error), "metadata request failed");
                    }
                });
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

fn serve(stream: UnixStream, lookup: &Lookup) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new((&stream).take(MAX_HEAD));
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
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
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
    fn an_instance_that_is_gone_gets_404() {
        let dir = tempfile::tempdir().unwrap();
        let listener = MetadataListener::start(&dir.path().join("gone.sock"), Arc::new(|| None)).unwrap();
        assert!(get(listener.path(), "GET /latest/meta-data/ HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    }
}
