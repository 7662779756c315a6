//! Serial consoles of instances: a [`Console`] keeps a VM's console output (a rotated log file
//! and a bounded ring in memory), streams it to any number of readers at once and forwards
//! their input; [`spawn_pump`] connects a console to the hypervisor's endpoint and keeps it
//! connected across restarts of the VM.
//!
//! The console exists for the whole life of the instance, not only while someone watches:
//! output written before anyone attached stays readable (the ring, and the log across agent
//! restarts), and a second reader simply subscribes instead of fighting the first one for
//! the hypervisor's single connection ("port busy").

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use service_kit::lock;
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::hypervisor::ConsoleEndpoint;

/// How many chunks (one chunk is one read from the hypervisor, at most [`READ_CHUNK`] bytes)
/// may wait for a reader before it counts as too slow and is dropped.
pub const DEFAULT_SUBSCRIBER_QUEUE: usize = 256;

/// The last chunk a reader gets when it is dropped for being too slow.
const TOO_SLOW_NOTICE: &[u8] = b"\r\n[console: reader too slow, output dropped]\r\n";

/// The pump's pause between attempts to connect.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// How long a socket read may block before the pump looks at its stop flag again.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// How long input may wait for a guest that does not read it, so that a writer does not hang.
const INPUT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the console is not connected to a running VM")]
    NotConnected,
    #[error("cannot write to the console")]
    Io(#[from] io::Error),
}

/// The console of one instance. Shared as `Arc<Console>` between its pump, the API handlers
/// reading it and the supervisor.
pub struct Console {
    /// Also serialises pushers: it is held until the ring and the readers have the bytes too,
    /// so that the log, the ring and every reader see chunks in the same order.
    log: Mutex<LogFile>,
    output: Mutex<Output>,
    /// Separate from `output`, so that input waiting for the guest never delays output.
    input: Mutex<Option<Box<dyn Write + Send>>>,
}

impl Console {
    /// Opens (or creates) the log at `log_path` for appending, and fills the ring with the
    /// newest `ring_capacity` bytes already logged (from `<log>.1` too when the log is
    /// shorter), so output from before an agent restart stays readable. The log is rotated
    /// to `<log>.1` when it would grow beyond `log_max_bytes`.
    pub fn open(log_path: &Path, ring_capacity: usize, log_max_bytes: u64) -> io::Result<Arc<Console>> {
        let newest = read_tail(log_path, ring_capacity)?;
        let mut ring = Ring::new(ring_capacity);
        if newest.len() < ring_capacity {
            ring.push(&read_tail(&rotated_path(log_path), ring_capacity - newest.len())?);
        }
        ring.push(&newest);
        let log = LogFile::open(log_path, log_max_bytes)?;
        Ok(Arc::new(Console {
            log: Mutex::new(log),
            output: Mutex::new(Output { ring, subscribers: Vec::new(), closed: false }),
            input: Mutex::new(None),
        }))
    }

    /// Records output of the VM: in the ring (dropping its oldest bytes), in the log, and in
    /// the queue of every reader. Never blocks on a reader, and a failing log only costs a
    /// warning: the ring and the readers still get the bytes.
    pub fn push_output(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut log = lock(&self.log);
        log.append(bytes);
        let mut output = lock(&self.output);
        output.ring.push(bytes);
        output.broadcast(Bytes::copy_from_slice(bytes));
    }

    /// The newest output, at most the ring's capacity.
    pub fn snapshot(&self) -> Vec<u8> {
        lock(&self.output).ring.contents()
    }

    /// The newest output and a subscription to what follows, with [`DEFAULT_SUBSCRIBER_QUEUE`].
    pub fn subscribe(&self) -> (Vec<u8>, Subscription) {
        self.subscribe_bounded(DEFAULT_SUBSCRIBER_QUEUE)
    }

    /// The newest output and a subscription to what follows, taken under one lock: the
    /// snapshot followed by the stream is the output with no byte missing or repeated. The
    /// subscription is dropped when output comes while `max_queued_chunks` chunks already
    /// wait for its reader.
    pub fn subscribe_bounded(&self, max_queued_chunks: usize) -> (Vec<u8>, Subscription) {
        // One slot more than allowed, kept free for the notice of a reader being dropped.
        let (sender, receiver) = mpsc::channel(max_queued_chunks.max(1) + 1);
        let mut output = lock(&self.output);
        if !output.closed {
            output.subscribers.push(sender);
        }
        (output.ring.contents(), Subscription { receiver })
    }

    /// How many readers are subscribed (those that went away are not counted).
    pub fn subscriber_count(&self) -> usize {
        let mut output = lock(&self.output);
        output.subscribers.retain(|subscriber| !subscriber.is_closed());
        output.subscribers.len()
    }

    /// Ends every subscription, now and for later subscribers (the instance is gone). Output
    /// pushed afterwards still goes to the ring and the log.
    pub fn close(&self) {
        let mut output = lock(&self.output);
        output.closed = true;
        output.subscribers.clear();
    }

    /// Where [`Console::write_input`] goes from now on: the VM's side of the connection.
    pub fn attach_input(&self, writer: Box<dyn Write + Send>) {
        *lock(&self.input) = Some(writer);
    }

    pub fn detach_input(&self) {
        *lock(&self.input) = None;
    }

    /// Sends input (keystrokes) to the VM. Blocking: a socket endpoint may block up to a
    /// second while the guest does not read, a device until its tty accepts the bytes; async
    /// callers should use `spawn_blocking`.
    pub fn write_input(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        let mut input = lock(&self.input);
        let writer = input.as_mut().ok_or(ConsoleError::NotConnected)?;
        writer.write_all(bytes)?;
        writer.flush()?;
        Ok(())
    }
}

/// A live reader of a console: a stream of output chunks. It ends when the console is closed,
/// or after a last chunk saying so when the reader fell too far behind.
pub struct Subscription {
    receiver: mpsc::Receiver<Bytes>,
}

impl Stream for Subscription {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.receiver.poll_recv(cx)
    }
}

struct Output {
    ring: Ring,
    subscribers: Vec<mpsc::Sender<Bytes>>,
    closed: bool,
}

impl Output {
    fn broadcast(&mut self, chunk: Bytes) {
        self.subscribers.retain(|subscriber| {
            if subscriber.is_closed() {
                return false;
            }
            // Only pushers send, under the lock, so the free slots cannot shrink between the
            // check and the send: the last slot is always there for the notice.
            if subscriber.capacity() > 1 {
                return subscriber.try_send(chunk.clone()).is_ok();
            }
            let _ = subscriber.try_send(Bytes::from_static(TOO_SLOW_NOTICE));
            tracing::debug!("console reader too slow; dropped");
            false
        });
    }
}

/// The newest `capacity` bytes of output.
struct Ring {
    bytes: VecDeque<u8>,
    capacity: usize,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        // Grows as output comes, rather than reserving the whole capacity for a quiet VM.
        Ring { bytes: VecDeque::new(), capacity }
    }

    fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        self.bytes.drain(..overflow);
        self.bytes.extend(data);
    }

    fn contents(&self) -> Vec<u8> {
        let (front, back) = self.bytes.as_slices();
        [front, back].concat()
    }
}

/// The console log: appended to, and renamed to `<log>.1` when full, so it takes at most
/// about twice `max_bytes` of disk (plus one chunk: a chunk is never split).
struct LogFile {
    path: PathBuf,
    /// `None` after the file could not be reopened; retried at the next append.
    file: Option<File>,
    len: u64,
    max_bytes: u64,
    /// Set by a failure, cleared by a success: one warning per outage, not one per chunk.
    failing: bool,
}

impl LogFile {
    fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = open_for_append(path)?;
        let len = file.metadata()?.len();
        Ok(LogFile { path: path.to_owned(), file: Some(file), len, max_bytes, failing: false })
    }

    fn append(&mut self, bytes: &[u8]) {
        match self.try_append(bytes) {
            Ok(()) => self.failing = false,
            Err(error) => {
                if !self.failing {
                    tracing::warn!(log = %self.path.display(), error = %service_kit::ErrorChain(&error), "cannot write the console log");
                }
                self.failing = true;
            }
        }
    }

    fn try_append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.len > 0 && self.len + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = open_for_append(&self.path)?;
                self.len = file.metadata()?.len();
                self.file.insert(file)
            }
        };
        // Counted even if the write fails part-way: an early rotation is harmless.
        self.len += bytes.len() as u64;
        file.write_all(bytes)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let renamed = fs::rename(&self.path, rotated_path(&self.path));
        // If the old log cannot be moved aside, it is truncated: losing old output beats
        // filling the disk.
        let file = OpenOptions::new().create(true).write(true).truncate(renamed.is_err()).open(&self.path)?;
        drop(file);
        self.len = 0;
        renamed
    }
}

fn open_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn rotated_path(log_path: &Path) -> PathBuf {
    let mut path = log_path.as_os_str().to_owned();
    path.push(".1");
    PathBuf::from(path)
}

/// The last `max` bytes of a file; nothing if it does not exist.
fn read_tail(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max as u64)))?;
    let mut tail = Vec::new();
    file.take(max as u64).read_to_end(&mut tail)?;
    Ok(tail)
}

/// Starts a thread that keeps `console` connected to `endpoint` until `stop` is set: it
/// connects (retrying every 100 ms while the endpoint does not exist yet or refuses, as
/// while the hypervisor starts), attaches the connection as the console's input, and copies
/// everything the VM writes into the console. When the connection ends (the run ended; the
/// VM may be restarted) it detaches the input and connects again.
///
/// A socket is read with a timeout, so the thread sees `stop` within a fraction of a second.
/// A device is read blocking (std offers no timeout on a tty without unsafe code): there the
/// thread notices `stop` only at the VM's next output or when the device closes, so do not
/// wait for it to end while its VM runs.
pub fn spawn_pump(console: Arc<Console>, endpoint: ConsoleEndpoint, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    thread::Builder::new()
        .name("console-pump".into())
        .spawn(move || run_pump(&console, &endpoint, &stop))
        .expect("cannot start a console pump thread")
}

fn run_pump(console: &Console, endpoint: &ConsoleEndpoint, stop: &AtomicBool) {
    while let Some(mut connection) = connect(endpoint, stop) {
        tracing::debug!(?endpoint, "console connected");
        match connection.input_writer() {
            Ok(writer) => console.attach_input(writer),
            Err(error) => {
                tracing::warn!(?endpoint, error = %service_kit::ErrorChain(&error), "console input unavailable")
            }
        }
        copy_output(console, &mut connection, stop);
        console.detach_input();
        // A pause, so that an endpoint that accepts and hangs up at once is not a busy loop.
        thread::sleep(RETRY_INTERVAL);
    }
}

/// The next connection to the endpoint, or `None` once `stop` is set.
fn connect(endpoint: &ConsoleEndpoint, stop: &AtomicBool) -> Option<Connection> {
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        match Connection::open(endpoint) {
            Ok(connection) => return Some(connection),
            // Not there yet, or the run has ended and the next one has not created it yet.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {}
            Err(error) => {
                if !warned {
                    tracing::warn!(?endpoint, error = %service_kit::ErrorChain(&error), "cannot connect to the console; retrying");
                    warned = true;
                }
            }
        }
        thread::sleep(RETRY_INTERVAL);
    }
    None
}

fn copy_output(console: &Console, connection: &mut Connection, stop: &AtomicBool) {
    let mut buffer = [0; READ_CHUNK];
    while !stop.load(Ordering::Relaxed) {
        match connection.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => console.push_output(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => {
                tracing::debug!(error = %service_kit::ErrorChain(&error), "console connection lost");
                return;
            }
        }
    }
}

enum Connection {
    Socket(UnixStream),
    Device(File),
}

/// Puts a console tty (the nmdm side the agent holds) in raw mode: as opened it would echo
/// the guest's output back to the guest as input, and buffer by line.
fn make_raw(device: &File) -> io::Result<()> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let mut termios = tcgetattr(device).map_err(io::Error::from)?;
    cfmakeraw(&mut termios);
    tcsetattr(device, SetArg::TCSANOW, &termios).map_err(io::Error::from)
}

impl Connection {
    fn open(endpoint: &ConsoleEndpoint) -> io::Result<Connection> {
        match endpoint {
            ConsoleEndpoint::UnixSocket(path) => {
                let socket = UnixStream::connect(path)?;
                socket.set_read_timeout(Some(READ_TIMEOUT))?;
                Ok(Connection::Socket(socket))
            }
            ConsoleEndpoint::Device(path) => {
                // O_NOCTTY: the agent must not become the session leader of the VM's tty.
                let device =
                    OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(path)?;
                make_raw(&device)?;
                Ok(Connection::Device(device))
            }
        }
    }

    fn input_writer(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Connection::Socket(socket) => {
                let writer = socket.try_clone()?;
                writer.set_write_timeout(Some(INPUT_WRITE_TIMEOUT))?;
                Box::new(writer)
            }
            Connection::Device(device) => Box::new(device.try_clone()?),
        })
    }
}

impl Read for Connection {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Socket(socket) => socket.read(buffer),
            Connection::Device(device) => device.read(buffer),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc as std_mpsc;
    use std::time::Instant;

    use futures_util::StreamExt;

    use super::*;

    const MIB: usize = 1 << 20;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Everything the stream yields until it ends.
    fn drain(subscription: Subscription) -> Vec<u8> {
        runtime().block_on(subscription.collect::<Vec<Bytes>>()).concat()
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|window| window == needle)
    }

    #[test]
    fn ring_keeps_only_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let console = Console::open(&log, 8, 1 << 20).unwrap();
        console.push_output(b"abc");
        console.push_output(b"defgh");
        assert_eq!(console.snapshot(), b"abcdefgh");
        console.push_output(b"ij");
        assert_eq!(console.snapshot(), b"cdefghij");
        console.push_output(b"0123456789xyz");
        assert_eq!(console.snapshot(), b"56789xyz");
        // The log keeps everything.
        assert_eq!(fs::read(&log).unwrap(), b"abcdefghij0123456789xyz");
    }

    #[test]
    fn an_existing_log_fills_the_ring_and_is_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        fs::write(&log, b"before the restart\n").unwrap();

        let console = Console::open(&log, 8, 1 << 20).unwrap();
        assert_eq!(console.snapshot(), b"restart\n");
        let (snapshot, _subscription) = console.subscribe();
        assert_eq!(snapshot, b"restart\n");
        console.push_output(b"after\n");
        drop(console);

        assert_eq!(fs::read(&log).unwrap(), b"before the restart\nafter\n");
        let console = Console::open(&log, 1000, 1 << 20).unwrap();
        assert_eq!(console.snapshot(), b"before the restart\nafter\n");
    }

    #[test]
    fn the_log_is_rotated_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let rotated = dir.path().join("console.log.1");
        let mut everything = Vec::new();
        let console = Console::open(&log, 150, 100).unwrap();
        for i in 0..100 {
            let line = format!("line {i:03}\n"); // 9 bytes
            console.push_output(line.as_bytes());
            everything.extend_from_slice(line.as_bytes());
            assert!(fs::metadata(&log).unwrap().len() <= 100);
            assert!(fs::metadata(&rotated).map_or(0, |m| m.len()) <= 100);
        }
        // The two files hold the newest output, in order.
        let on_disk = [fs::read(&rotated).unwrap(), fs::read(&log).unwrap()].concat();
        assert!(on_disk.len() > 100);
        assert!(everything.ends_with(&on_disk));
        drop(console);

        // After a restart, the ring is filled from both files (they hold less than 150 bytes
        // here), or from the newest bytes only.
        assert!(fs::metadata(&log).unwrap().len() < 20);
        let console = Console::open(&log, 150, 100).unwrap();
        assert_eq!(console.snapshot(), on_disk);
        drop(console);
        let console = Console::open(&log, 20, 100).unwrap();
        assert_eq!(console.snapshot(), &everything[everything.len() - 20..]);
    }

    #[test]
    fn every_subscriber_sees_every_byte_once_while_output_is_pushed() {
        const READERS: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let console = Console::open(&dir.path().join("console.log"), 16 * MIB, 64 * MIB as u64).unwrap();
        let subscribed = Arc::new(AtomicBool::new(false));
        let pusher = {
            let (console, subscribed) = (console.clone(), subscribed.clone());
            thread::spawn(move || {
                // Pushes until every reader has subscribed, then some more: they all subscribe
                // while output flows, and all have something to stream.
                let (mut line, mut extra) = (0, 0);
                while extra < 1000 {
                    console.push_output(format!("line {line}\n").as_bytes());
                    line += 1;
                    if subscribed.load(Ordering::Relaxed) {
                        extra += 1;
                    }
                    if line % 64 == 0 {
                        thread::sleep(Duration::from_micros(100));
                    }
                }
                line
            })
        };
        wait_until("output flows", || console.snapshot().len() > 1000);
        // Many readers, at different moments: a race between the snapshot and the
        // subscription has many chances to show.
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                thread::yield_now();
                console.subscribe_bounded(MIB)
            })
            .collect();
        assert_eq!(console.subscriber_count(), READERS);
        subscribed.store(true, Ordering::Relaxed);
        let lines = pusher.join().unwrap();
        console.close();

        let everything: Vec<u8> = (0..lines).flat_map(|line| format!("line {line}\n").into_bytes()).collect();
        for (snapshot, subscription) in readers {
            let streamed = drain(subscription);
            assert!(!streamed.is_empty());
            assert!([snapshot, streamed].concat() == everything, "a gap or a duplicate");
        }
    }

    #[test]
    fn a_slow_subscriber_is_dropped_without_blocking_output() {
        let dir = tempfile::tempdir().unwrap();
        let console = Console::open(&dir.path().join("console.log"), 1024, 1 << 20).unwrap();
        let (_, slow) = console.subscribe_bounded(4);
        let (_, patient) = console.subscribe();
        assert_eq!(console.subscriber_count(), 2);

        let (done, finished) = std_mpsc::channel();
        let pusher = {
            let console = console.clone();
            thread::spawn(move || {
                for i in 0..10 {
                    console.push_output(format!("{i}").as_bytes());
                }
                done.send(()).unwrap();
            })
        };
        finished.recv_timeout(Duration::from_secs(5)).expect("the pusher is blocked");
        pusher.join().unwrap();
        assert_eq!(console.subscriber_count(), 1);

        // The slow reader gets what was queued, then the notice, then the end; the other one
        // got everything and is still subscribed.
        let mut expected = b"0123".to_vec();
        expected.extend_from_slice(TOO_SLOW_NOTICE);
        assert_eq!(drain(slow), expected);
        console.close();
        assert_eq!(drain(patient), b"0123456789");
    }

    #[test]
    fn close_ends_every_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let console = Console::open(&dir.path().join("console.log"), 1024, 1 << 20).unwrap();
        let (_, subscription) = console.subscribe();
        console.push_output(b"bye\n");
        console.close();
        assert_eq!(console.subscriber_count(), 0);
        assert_eq!(drain(subscription), b"bye\n");

        // Later subscribers still get the ring, and a stream that ends at once.
        console.push_output(b"more\n");
        let (snapshot, late) = console.subscribe();
        assert_eq!(snapshot, b"bye\nmore\n");
        assert_eq!(console.subscriber_count(), 0);
        assert_eq!(drain(late), b"");
    }

    #[test]
    fn input_goes_to_the_attached_writer_only() {
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buffer);
                Ok(buffer.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        let dir = tempfile::tempdir().unwrap();
        let console = Console::open(&dir.path().join("console.log"), 1024, 1 << 20).unwrap();
        assert!(matches!(console.write_input(b"lost"), Err(ConsoleError::NotConnected)));
        let written = Shared::default();
        console.attach_input(Box::new(written.clone()));
        console.write_input(b"root\n").unwrap();
        console.detach_input();
        assert!(matches!(console.write_input(b"lost"), Err(ConsoleError::NotConnected)));
        assert_eq!(*written.0.lock().unwrap(), b"root\n");
    }

    fn accept_within(listener: &UnixListener, timeout: Duration) -> UnixStream {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    return stream;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("no connection from the pump: {e}"),
            }
        }
    }

    fn read_exactly(stream: &mut UnixStream, len: usize) -> Vec<u8> {
        let mut buffer = vec![0; len];
        stream.read_exact(&mut buffer).unwrap();
        buffer
    }

    fn wait_for_output(console: &Console, expected: &[u8]) {
        wait_until(&format!("the console shows {:?}", String::from_utf8_lossy(expected)), || {
            contains(&console.snapshot(), expected)
        });
    }

    #[test]
    fn the_pump_waits_for_the_socket_relays_both_ways_and_reconnects() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("console.sock");
        let console = Console::open(&dir.path().join("console.log"), 1024, 1 << 20).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let pump = spawn_pump(console.clone(), ConsoleEndpoint::UnixSocket(socket.clone()), stop.clone());

        // The hypervisor creates its socket a moment after the pump started.
        thread::sleep(Duration::from_millis(300));
        assert!(!pump.is_finished());
        let listener = UnixListener::bind(&socket).unwrap();

        let mut vm = accept_within(&listener, Duration::from_secs(5));
        vm.write_all(b"first boot\r\n").unwrap();
        wait_for_output(&console, b"first boot\r\n");
        console.write_input(b"root\n").unwrap();
        assert_eq!(read_exactly(&mut vm, 5), b"root\n");

        // The VM restarts: a new connection, and the pump follows.
        drop(vm);
        let mut vm = accept_within(&listener, Duration::from_secs(5));
        vm.write_all(b"second boot\r\n").unwrap();
        wait_for_output(&console, b"second boot\r\n");
        console.write_input(b"again\n").unwrap();
        assert_eq!(read_exactly(&mut vm, 6), b"again\n");
        assert_eq!(console.snapshot(), b"first boot\r\nsecond boot\r\n");

        stop.store(true, Ordering::Relaxed);
        let stopped_at = Instant::now();
        wait_until("the pump stops", || pump.is_finished());
        assert!(stopped_at.elapsed() < Duration::from_secs(1));
        pump.join().unwrap();
        assert!(matches!(console.write_input(b"x"), Err(ConsoleError::NotConnected)));
    }

    #[test]
    fn the_pump_stops_while_waiting_for_an_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let console = Console::open(&dir.path().join("console.log"), 1024, 1 << 20).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let endpoint = ConsoleEndpoint::UnixSocket(dir.path().join("never.sock"));
        let pump = spawn_pump(console, endpoint, stop.clone());
        thread::sleep(Duration::from_millis(250));
        assert!(!pump.is_finished());
        stop.store(true, Ordering::Relaxed);
        let stopped_at = Instant::now();
        wait_until("the pump stops", || pump.is_finished());
        assert!(stopped_at.elapsed() < Duration::from_secs(1));
        pump.join().unwrap();
    }
}
