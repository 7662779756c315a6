//! The one place the agent starts host commands (zfs, bhyve, bhyvectl, qemu, ifconfig...).
//! Commands are argv vectors with absolute program paths from the config, never `sh -c`, and
//! run with `LC_ALL=C` so their output parses the same everywhere. `RecordingRunner` records
//! what would have run and replays scripted answers, for tests of argv and of logic.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A command to run: program and arguments, nothing interpreted by a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl HostCommand {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        HostCommand { program: program.into(), args: Vec::new() }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command as one line, for logs and error messages.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a finished command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// A command that could not run or did not succeed. `stderr` is kept for the log and for
/// wrappers that turn known messages into typed errors.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start `{command}`")]
    Start {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {}", stderr.trim())]
    Failed { command: String, status: String, stderr: String },
    #[error("I/O with `{command}` failed")]
    Io {
        command: String,
        #[source]
        source: io::Error,
    },
}

impl ExecError {
    /// The command's standard error, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ExecError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// A running command whose standard input the caller feeds (e.g. `zfs receive`).
pub trait PipedChild: Send {
    fn stdin(&mut self) -> &mut dyn Write;
    /// Closes standard input and waits; fails unless the command exits with 0.
    fn finish(self: Box<Self>) -> Result<Output, ExecError>;
    /// Stops the command (the input was bad): kills it and reaps it.
    fn abort(self: Box<Self>);
}

/// How a long-running process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExit {
    Code(i32),
    Signal(i32),
}

/// A long-running process the caller supervises (a VM). Dropping it neither kills nor reaps.
pub trait Process: Send {
    fn pid(&self) -> u32;
    /// Blocks until the process ends.
    fn wait(&mut self) -> Result<ProcessExit, ExecError>;
}

/// Signals the agent sends to processes it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// bhyve: press the ACPI power button.
    Term,
    Kill,
}

impl Signal {
    fn raw(self) -> i32 {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }
}

/// Runs host commands. Blocking: callers on async threads use `spawn_blocking`.
pub trait CommandRunner: Send + Sync {
    /// Runs to completion; fails unless the exit status is 0.
    fn run(&self, command: &HostCommand) -> Result<Output, ExecError>;
    /// Starts a command that reads its standard input from the caller.
    fn spawn_piped(&self, command: &HostCommand) -> Result<Box<dyn PipedChild>, ExecError>;
    /// Starts a long-running process in its own process group (a signal to the agent's
    /// terminal or process group does not reach it), stdin from /dev/null, stdout and stderr appended to
    /// `log`.
    fn spawn_process(&self, command: &HostCommand, log: &Path) -> Result<Box<dyn Process>, ExecError>;
    /// Sends `signal` to a process this agent started (by pid).
    fn signal(&self, pid: u32, signal: Signal) -> io::Result<()>;
}

/// The real runner.
#[derive(Debug, Default, Clone)]
pub struct HostRunner;

fn command_for(command: &HostCommand) -> Command {
    // The only construction of `Command` in the agent (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args).env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

fn status_text(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => format!("killed by {status}"),
    }
}

impl CommandRunner for HostRunner {
    fn run(&self, command: &HostCommand) -> Result<Output, ExecError> {
        let started = std::time::Instant::now();
        let output = command_for(command)
            .output()
            .map_err(|source| ExecError::Start { command: command.display(), source })?;
        let result = Output {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        tracing::debug!(command = %command.display(), status = %status_text(output.status),
                        ms = started.elapsed().as_millis() as u64, "host command");
        if output.status.success() {
            Ok(result)
        } else {
            Err(ExecError::Failed {
                command: command.display(),
                status: status_text(output.status),
                stderr: result.stderr,
            })
        }
    }

    fn spawn_piped(&self, command: &HostCommand) -> Result<Box<dyn PipedChild>, ExecError> {
        let mut child = command_for(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ExecError::Start { command: command.display(), source })?;
        let stdin = child.stdin.take().expect("stdin was piped");
        // Drain stdout/stderr on threads so a chatty command cannot block on a full pipe.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Ok(Box::new(HostChild { command: command.display(), child, stdin: Some(stdin), stdout, stderr }))
    }

    fn spawn_process(&self, command: &HostCommand, log: &Path) -> Result<Box<dyn Process>, ExecError> {
        let start_error = |source| ExecError::Start { command: command.display(), source };
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(start_error)?;
        let err = out.try_clone().map_err(start_error)?;
        let child =
            command_for(command).stdout(out).stderr(err).process_group(0).spawn().map_err(start_error)?;
        tracing::debug!(command = %command.display(), pid = child.id(), "process started");
        Ok(Box::new(HostProcess { command: command.display(), child }))
    }

    // The one unsafe call of the agent: kill(2) has no memory-safety preconditions, and std
    // offers only SIGKILL (`Child::kill`), while bhyve needs SIGTERM for its ACPI power button.
    #[allow(unsafe_code)]
    fn signal(&self, pid: u32, signal: Signal) -> io::Result<()> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(pid, signal.raw()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

struct HostProcess {
    command: String,
    child: Child,
}

impl Process for HostProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait(&mut self) -> Result<ProcessExit, ExecError> {
        let status =
            self.child.wait().map_err(|source| ExecError::Io { command: self.command.clone(), source })?;
        tracing::debug!(command = %self.command, status = %status_text(status), "process ended");
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => ProcessExit::Code(code),
            (None, Some(signal)) => ProcessExit::Signal(signal),
            (None, None) => ProcessExit::Signal(0),
        })
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

struct HostChild {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl PipedChild for HostChild {
    fn stdin(&mut self) -> &mut dyn Write {
        self.stdin.as_mut().expect("stdin is open until finish")
    }

    fn finish(mut self: Box<Self>) -> Result<Output, ExecError> {
        drop(self.stdin.take());
        let status =
            self.child.wait().map_err(|source| ExecError::Io { command: self.command.clone(), source })?;
        let output = Output {
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        };
        tracing::debug!(command = %self.command, status = %status_text(status), "host command");
        if status.success() {
            Ok(output)
        } else {
            Err(ExecError::Failed {
                command: self.command,
                status: status_text(status),
                stderr: output.stderr,
            })
        }
    }

    fn abort(mut self: Box<Self>) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scripted answer of the [`RecordingRunner`].
#[derive(Debug, Clone)]
pub enum Reply {
    Ok(String),
    Fail(String),
    /// For `run`: succeeds, and the most recently started live process ends with this (e.g.
    /// `bhyvectl --force-poweroff`).
    EndsProcess(ProcessExit),
    /// For `spawn_process`: the process ends at once with this.
    Exits(ProcessExit),
    /// For `spawn_process`: the process runs until signalled; SIGTERM ends it with `on_term`
    /// (`None`: the guest ignores the power button), SIGKILL with signal 9.
    Runs {
        on_term: Option<ProcessExit>,
    },
}

/// A fake runner: records every command (and the bytes piped to it) and answers from a script
/// of replies matched by argv prefix; unmatched commands succeed with empty output.
#[derive(Debug, Default, Clone)]
pub struct RecordingRunner {
    inner: Arc<Mutex<Recording>>,
}

#[derive(Debug, Default)]
struct Recording {
    calls: Vec<(String, Vec<u8>)>,
    script: VecDeque<(String, Reply)>,
    /// Fake processes by pid: how SIGTERM ends them, and their end once it is known.
    processes: Vec<FakeProcess>,
}

#[derive(Debug)]
struct FakeProcess {
    pid: u32,
    on_term: Option<ProcessExit>,
    end: Arc<(Mutex<Option<ProcessExit>>, std::sync::Condvar)>,
}

impl FakeProcess {
    fn finish(&self, exit: ProcessExit) {
        let (lock, cvar) = &*self.end;
        let mut end = service_kit::lock(lock);
        end.get_or_insert(exit);
        cvar.notify_all();
    }

    fn is_live(&self) -> bool {
        service_kit::lock(&self.end.0).is_none()
    }
}

/// Fake pids start here, far above real ones, so a stray real `kill` cannot hit anything.
const FAKE_PID_BASE: u32 = 4_000_000;

impl RecordingRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next command whose display line starts with `prefix` gets `reply`.
    pub fn expect(&self, prefix: &str, reply: Reply) {
        self.lock().script.push_back((prefix.to_string(), reply));
    }

    /// Every command run so far, as display lines.
    pub fn commands(&self) -> Vec<String> {
        self.lock().calls.iter().map(|(c, _)| c.clone()).collect()
    }

    /// Bytes piped into the `n`th command.
    pub fn stdin_of(&self, n: usize) -> Vec<u8> {
        self.lock().calls[n].1.clone()
    }

    /// Ends the fake process `pid` (what the guest did), as if the hypervisor exited so.
    pub fn end_process(&self, pid: u32, exit: ProcessExit) {
        if let Some(process) = self.lock().processes.iter().find(|p| p.pid == pid) {
            process.finish(exit);
        }
    }

    /// Pids of the fake processes that have not ended.
    pub fn live_processes(&self) -> Vec<u32> {
        self.lock().processes.iter().filter(|p| p.is_live()).map(|p| p.pid).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        service_kit::lock(&self.inner)
    }

    fn answer(&self, line: &str) -> Reply {
        let mut rec = self.lock();
        let found = rec.script.iter().position(|(prefix, _)| line.starts_with(prefix.as_str()));
        found.and_then(|i| rec.script.remove(i)).map(|(_, r)| r).unwrap_or(Reply::Ok(String::new()))
    }
}

fn reply_to_result(command: &str, reply: Reply) -> Result<Output, ExecError> {
    match reply {
        Reply::Ok(stdout) => Ok(Output { stdout, stderr: String::new() }),
        Reply::Fail(stderr) => {
            Err(ExecError::Failed { command: command.to_string(), status: "exit status 1".into(), stderr })
        }
        Reply::EndsProcess(_) | Reply::Exits(_) | Reply::Runs { .. } => Ok(Output::default()),
    }
}

struct RecordedProcess {
    pid: u32,
    end: Arc<(Mutex<Option<ProcessExit>>, std::sync::Condvar)>,
}

impl Process for RecordedProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn wait(&mut self) -> Result<ProcessExit, ExecError> {
        let (lock, cvar) = &*self.end;
        let mut end = service_kit::lock(lock);
        loop {
            if let Some(exit) = *end {
                return Ok(exit);
            }
            end = cvar.wait(end).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl CommandRunner for RecordingRunner {
    fn run(&self, command: &HostCommand) -> Result<Output, ExecError> {
        let line = command.display();
        self.lock().calls.push((line.clone(), Vec::new()));
        let reply = self.answer(&line);
        if let Reply::EndsProcess(exit) = reply {
            if let Some(process) = self.lock().processes.iter().rev().find(|p| p.is_live()) {
                process.finish(exit);
            }
        }
        reply_to_result(&line, reply)
    }

    fn spawn_process(&self, command: &HostCommand, _log: &Path) -> Result<Box<dyn Process>, ExecError> {
        let line = command.display();
        self.lock().calls.push((line.clone(), Vec::new()));
        let (end, on_term) = match self.answer(&line) {
            Reply::Fail(stderr) => {
                return Err(ExecError::Start { command: line, source: io::Error::other(stderr) })
            }
            Reply::Exits(exit) => (Some(exit), None),
            Reply::Runs { on_term } => (None, on_term),
            Reply::Ok(_) | Reply::EndsProcess(_) => (Some(ProcessExit::Code(0)), None),
        };
        let mut rec = self.lock();
        let pid = FAKE_PID_BASE + rec.processes.len() as u32;
        let end = Arc::new((Mutex::new(end), std::sync::Condvar::new()));
        rec.processes.push(FakeProcess { pid, on_term, end: end.clone() });
        Ok(Box::new(RecordedProcess { pid, end }))
    }

    fn signal(&self, pid: u32, signal: Signal) -> io::Result<()> {
        let mut rec = self.lock();
        rec.calls.push((format!("kill -{} {pid}", signal.name()), Vec::new()));
        let process = rec.processes.iter().find(|p| p.pid == pid && p.is_live());
        let Some(process) = process else { return Err(io::Error::from_raw_os_error(libc::ESRCH)) };
        match signal {
            Signal::Term => {
                if let Some(exit) = process.on_term {
                    process.finish(exit);
                }
            }
            Signal::Kill => process.finish(ProcessExit::Signal(libc::SIGKILL)),
        }
        Ok(())
    }

    fn spawn_piped(&self, command: &HostCommand) -> Result<Box<dyn PipedChild>, ExecError> {
        let line = command.display();
        let index = {
            let mut rec = self.lock();
            rec.calls.push((line.clone(), Vec::new()));
            rec.calls.len() - 1
        };
        Ok(Box::new(RecordedChild { runner: self.clone(), line, index, buffer: Vec::new() }))
    }
}

struct RecordedChild {
    runner: RecordingRunner,
    line: String,
    index: usize,
    buffer: Vec<u8>,
}

impl PipedChild for RecordedChild {
    fn stdin(&mut self) -> &mut dyn Write {
        &mut self.buffer
    }

    fn finish(self: Box<Self>) -> Result<Output, ExecError> {
        self.runner.lock().calls[self.index].1 = self.buffer;
        let reply = self.runner.answer(&self.line);
        reply_to_result(&self.line, reply)
    }

    fn abort(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_argv_without_a_shell() {
        let out = HostRunner.run(&HostCommand::new("/bin/echo").args(["a b", "$HOME", ";", "c"])).unwrap();
        assert_eq!(out.stdout, "a b $HOME ; c\n");
    }

    #[test]
    fn failures_carry_status_and_stderr() {
        let err = HostRunner.run(&HostCommand::new("/bin/ls").arg("/nonexistent-dir")).unwrap_err();
        assert!(err.stderr().is_some_and(|e| e.contains("No such file")), "{err}");
        assert!(err.to_string().contains("exit status 2"), "{err}");
        let err = HostRunner.run(&HostCommand::new("/nonexistent/zfs")).unwrap_err();
        assert!(matches!(err, ExecError::Start { .. }));
    }

    #[test]
    fn piped_children_read_what_we_write() {
        let mut child = HostRunner.spawn_piped(&HostCommand::new("/usr/bin/wc").arg("-c")).unwrap();
        child.stdin().write_all(&[7u8; 100_000]).unwrap();
        assert_eq!(child.finish().unwrap().stdout.trim(), "100000");
    }

    #[test]
    fn recording_runner_scripts_replies() {
        let runner = RecordingRunner::new();
        runner.expect("/sbin/zfs list", Reply::Ok("tank\n".into()));
        runner.expect("/sbin/zfs destroy", Reply::Fail("dataset is busy".into()));
        assert_eq!(runner.run(&HostCommand::new("/sbin/zfs").args(["list", "-H"])).unwrap().stdout, "tank\n");
        let err = runner.run(&HostCommand::new("/sbin/zfs").args(["destroy", "tank/x"])).unwrap_err();
        assert_eq!(err.stderr(), Some("dataset is busy"));
        let mut child =
            runner.spawn_piped(&HostCommand::new("/sbin/zfs").args(["receive", "tank/y"])).unwrap();
        child.stdin().write_all(b"stream").unwrap();
        child.finish().unwrap();
        assert_eq!(
            runner.commands(),
            ["/sbin/zfs list -H", "/sbin/zfs destroy tank/x", "/sbin/zfs receive tank/y"]
        );
        assert_eq!(runner.stdin_of(2), b"stream");
    }

    #[test]
    fn real_processes_are_waited_for_and_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let mut quick = HostRunner
            .spawn_process(&HostCommand::new("/bin/sh").args(["-c", "echo hi; exit 3"]), &log)
            .unwrap();
        assert_eq!(quick.wait().unwrap(), ProcessExit::Code(3));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hi\n");
        let mut slow = HostRunner.spawn_process(&HostCommand::new("/bin/sleep").arg("30"), &log).unwrap();
        HostRunner.signal(slow.pid(), Signal::Kill).unwrap();
        assert_eq!(slow.wait().unwrap(), ProcessExit::Signal(libc::SIGKILL));
    }

    #[test]
    fn recorded_processes_follow_their_script() {
        let runner = RecordingRunner::new();
        runner.expect("/usr/sbin/bhyve", Reply::Exits(ProcessExit::Code(0)));
        runner.expect("/usr/sbin/bhyve", Reply::Runs { on_term: Some(ProcessExit::Code(1)) });
        runner.expect("/usr/sbin/bhyve", Reply::Runs { on_term: None });
        runner.expect("/usr/sbin/bhyvectl --force-poweroff", Reply::EndsProcess(ProcessExit::Code(1)));
        let log = Path::new("/nonexistent");
        let bhyve = HostCommand::new("/usr/sbin/bhyve").arg("vm");
        assert_eq!(runner.spawn_process(&bhyve, log).unwrap().wait().unwrap(), ProcessExit::Code(0));
        let mut acpi = runner.spawn_process(&bhyve, log).unwrap();
        runner.signal(acpi.pid(), Signal::Term).unwrap();
        assert_eq!(acpi.wait().unwrap(), ProcessExit::Code(1));
        let mut stubborn = runner.spawn_process(&bhyve, log).unwrap();
        runner.signal(stubborn.pid(), Signal::Term).unwrap();
        assert_eq!(runner.live_processes(), [stubborn.pid()]);
        runner.run(&HostCommand::new("/usr/sbin/bhyvectl").args(["--force-poweroff", "--vm=vm"])).unwrap();
        assert_eq!(stubborn.wait().unwrap(), ProcessExit::Code(1));
        assert!(runner.signal(stubborn.pid(), Signal::Kill).is_err(), "ended processes are gone");
    }
}
