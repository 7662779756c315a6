//! A QMP (QEMU Machine Protocol) client over a Unix socket: one connection per VM, held by
//! the agent for the VM's whole run, because QEMU serves one QMP client at a time. A reader
//! thread keeps the `SHUTDOWN` reason (how the run ended: QEMU's exit status cannot tell a
//! reboot from a poweroff under `-no-reboot`) and hands command answers to their callers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One line QEMU sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Greeting,
    Return { id: Option<u64>, value: Value },
    Error { id: Option<u64>, class: String, desc: String },
    Event { name: String, data: Value },
}

/// Parses one line of QMP output.
pub fn parse_message(line: &str) -> Result<Message, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    let id = value.get("id").and_then(Value::as_u64);
    if value.get("QMP").is_some() {
        Ok(Message::Greeting)
    } else if let Some(ret) = value.get("return") {
        Ok(Message::Return { id, value: ret.clone() })
    } else if let Some(error) = value.get("error") {
        let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(Message::Error { id, class: text("class"), desc: text("desc") })
    } else if let Some(name) = value.get("event").and_then(Value::as_str) {
        Ok(Message::Event { name: name.to_string(), data: value.get("data").cloned().unwrap_or(Value::Null) })
    } else {
        Err(format!("unknown QMP message: {line}"))
    }
}

#[derive(Debug, Default)]
struct State {
    /// Capabilities negotiated: commands may be sent.
    ready: bool,
    /// The connection ended (QEMU exited, or `close` was called).
    closed: bool,
    /// `close` was called: the agent let go of the VM, QEMU did not end.
    detached: bool,
    /// The `reason` of the last `SHUTDOWN` event.
    shutdown_reason: Option<String>,
    answers: HashMap<u64, Result<Value, String>>,
    next_id: u64,
}

/// A QMP connection to one VM.
pub struct Qmp {
    socket: PathBuf,
    writer: Mutex<Option<UnixStream>>,
    state: Mutex<State>,
    changed: Condvar,
}

/// How long a command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl Qmp {
    /// Connects in the background: a thread retries every 50 ms until the socket accepts
    /// (QEMU creates it a moment after starting) or `give_up` says so, negotiates
    /// capabilities, then reads events until QEMU closes the connection.
    pub fn connect(socket: &Path, give_up: impl Fn() -> bool + Send + 'static) -> Arc<Qmp> {
        let qmp = Arc::new(Qmp {
            socket: socket.to_path_buf(),
            writer: Mutex::new(None),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let reader = qmp.clone();
        std::thread::spawn(move || reader.run(give_up));
        qmp
    }

    /// Connects once, now; `None` if nothing listens on the socket (the VM is not running).
    pub fn connect_existing(socket: &Path) -> Option<Arc<Qmp>> {
        UnixStream::connect(socket).ok()?;
        // That probe connection is closed again at once; QEMU then takes the real one.
        Some(Qmp::connect(socket, || false))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        service_kit::lock(&self.state)
    }

    fn run(&self, give_up: impl Fn() -> bool) {
        let stream = loop {
            if self.lock().detached {
                return self.finish();
            }
            match UnixStream::connect(&self.socket) {
                Ok(stream) => break stream,
                Err(_) if !give_up() => std::thread::sleep(Duration::from_millis(50)),
                Err(error) => {
                    tracing::warn!(socket = %self.socket.display(), error = %service_kit::ErrorChain(&error), "cannot connect to QMP");
                    return self.finish();
                }
            }
        };
        let Ok(write_half) = stream.try_clone() else { return self.finish() };
        *service_kit::lock(&self.writer) = Some(write_half);
        // A detach that came while connecting found no stream to shut down: do it here.
        if self.lock().detached {
            let _ = stream.shutdown(Shutdown::Both);
            return self.finish();
        }
        let mut lines = BufReader::new(stream).lines();
        let mut negotiated = false;
        while let Some(Ok(line)) = lines.next() {
            match parse_message(&line) {
                Ok(Message::Greeting) => {
                    negotiated = self.write(&json!({"execute": "qmp_capabilities", "id": 0})).is_ok();
                }
                Ok(Message::Return { id: Some(0), .. }) if negotiated => {
                    self.lock().ready = true;
                    self.changed.notify_all();
                }
                Ok(Message::Return { id: Some(id), value }) => self.answer(id, Ok(value)),
                Ok(Message::Error { id: Some(id), class, desc }) => {
                    self.answer(id, Err(format!("{class}: {desc}")))
                }
                Ok(Message::Event { name, data }) => {
                    tracing::debug!(event = %name, %data, "QMP event");
                    if name == "SHUTDOWN" {
                        let reason = data.get("reason").and_then(Value::as_str).map(str::to_string);
                        self.lock().shutdown_reason = reason;
                    }
                }
                Ok(other) => tracing::debug!(?other, "unexpected QMP message"),
                Err(error) => tracing::warn!(%error, "bad QMP line"),
            }
        }
        self.finish();
    }

    fn finish(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn answer(&self, id: u64, answer: Result<Value, String>) {
        self.lock().answers.insert(id, answer);
        self.changed.notify_all();
    }

    fn write(&self, message: &Value) -> std::io::Result<()> {
        let mut writer = service_kit::lock(&self.writer);
        let stream = writer.as_mut().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
        let mut line = message.to_string();
        line.push('\n');
        stream.write_all(line.as_bytes())
    }

    /// Runs a command and returns its answer.
    pub fn execute(&self, command: &str) -> Result<Value, String> {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let id = {
            let mut state = self.wait_until(deadline, |s| s.ready || s.closed);
            if !state.ready || state.closed {
                return Err(format!("QMP is not connected ({})", self.socket.display()));
            }
            state.next_id += 1;
            state.next_id
        };
        self.write(&json!({"execute": command, "id": id}))
            .map_err(|e| format!("cannot send {command}: {e}"))?;
        let mut state = self.wait_until(deadline, |s| s.answers.contains_key(&id) || s.closed);
        match state.answers.remove(&id) {
            Some(answer) => answer,
            None if state.closed => Err(format!("QEMU closed QMP before answering {command}")),
            None => Err(format!("no answer to {command} within {COMMAND_TIMEOUT:?}")),
        }
    }

    fn wait_until(&self, deadline: Instant, done: impl Fn(&State) -> bool) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        state
    }

    /// Blocks until the connection ends, or `timeout` passes (`None`: forever). Returns
    /// whether it ended.
    pub fn wait_closed(&self, timeout: Option<Duration>) -> bool {
        match timeout {
            Some(timeout) => self.wait_until(Instant::now() + timeout, |s| s.closed).closed,
            None => {
                let mut state = self.lock();
                while !state.closed {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                true
            }
        }
    }

    /// The reason of the `SHUTDOWN` event QEMU sent, if any.
    pub fn shutdown_reason(&self) -> Option<String> {
        self.lock().shutdown_reason.clone()
    }

    /// Lets go of the VM without touching it (the agent is stopping): the connection closes,
    /// so that the next agent process can connect.
    pub fn detach(&self) {
        self.lock().detached = true;
        if let Some(stream) = service_kit::lock(&self.writer).as_ref() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.changed.notify_all();
    }

    /// Whether [`Qmp::detach`] was called.
    pub fn is_detached(&self) -> bool {
        self.lock().detached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn parses_what_qemu_sends() {
        // Captured from QEMU 10.0.2.
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1"}, "capabilities": ["oob"]}}"#;
        assert_eq!(parse_message(greeting).unwrap(), Message::Greeting);
        assert_eq!(
            parse_message(r#"{"return": {}, "id": 3}"#).unwrap(),
            Message::Return { id: Some(3), value: json!({}) }
        );
        let shutdown = r#"{"timestamp": {"seconds": 1763820000, "microseconds": 1}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#;
        assert_eq!(
            parse_message(shutdown).unwrap(),
            Message::Event {
                name: "SHUTDOWN".into(),
                data: json!({"guest": true, "reason": "guest-shutdown"})
            }
        );
        let error = r#"{"id": 2, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#;
        assert!(
            matches!(parse_message(error).unwrap(), Message::Error { id: Some(2), class, .. } if class == "CommandNotFound")
        );
        assert!(parse_message("{\"what\": 1}").is_err());
        assert!(parse_message("garbage").is_err());
    }

    /// A fake QEMU: greets, answers capabilities and commands, and sends SHUTDOWN on
    /// `system_powerdown`, then closes.
    fn fake_qemu(listener: UnixListener) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut seen = Vec::new();
            writeln!(out, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            for line in BufReader::new(stream).lines() {
                let line = line.unwrap();
                let request: Value = serde_json::from_str(&line).unwrap();
                let command = request["execute"].as_str().unwrap().to_string();
                let id = &request["id"];
                seen.push(command.clone());
                match command.as_str() {
                    "nope" => writeln!(out, r#"{{"id": {id}, "error": {{"class": "CommandNotFound", "desc": "x"}}}}"#),
                    "system_powerdown" => {
                        writeln!(out, r#"{{"return": {{}}, "id": {id}}}"#).unwrap();
                        writeln!(out, r#"{{"event": "SHUTDOWN", "data": {{"guest": true, "reason": "guest-shutdown"}}}}"#).unwrap();
                        break;
                    }
                    _ => writeln!(out, r#"{{"return": {{"status": "running"}}, "id": {id}}}"#),
                }
                .unwrap();
            }
            seen
        })
    }

    #[test]
    fn commands_answers_and_the_shutdown_reason() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        // The client starts before the socket exists, as it does right after spawning QEMU.
        let qmp = Qmp::connect(&socket, || false);
        std::thread::sleep(Duration::from_millis(120));
        let fake = fake_qemu(UnixListener::bind(&socket).unwrap());
        assert_eq!(qmp.execute("query-status").unwrap(), json!({"status": "running"}));
        assert!(qmp.execute("nope").unwrap_err().contains("CommandNotFound"));
        assert!(!qmp.wait_closed(Some(Duration::from_millis(10))));
        qmp.execute("system_powerdown").unwrap();
        assert!(qmp.wait_closed(Some(Duration::from_secs(5))));
        assert_eq!(qmp.shutdown_reason().as_deref(), Some("guest-shutdown"));
        assert_eq!(fake.join().unwrap(), ["qmp_capabilities", "query-status", "nope", "system_powerdown"]);
        assert!(qmp.execute("query-status").is_err(), "closed connections refuse commands");
    }

    #[test]
    fn giving_up_and_detaching() {
        let dir = tempfile::tempdir().unwrap();
        let qmp = Qmp::connect(&dir.path().join("none.sock"), || true);
        assert!(qmp.wait_closed(Some(Duration::from_secs(5))));
        assert!(Qmp::connect_existing(&dir.path().join("none.sock")).is_none());

        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let qmp = Qmp::connect(&socket, || false);
        let (stream, _) = listener.accept().unwrap();
        qmp.detach();
        assert!(qmp.wait_closed(Some(Duration::from_secs(5))));
        assert!(qmp.is_detached());
        drop(stream);
    }
}
