//! One instance's supervisor: a thread per running instance that watches each run, restarts the
//! VM on a guest reboot (within a crash-loop limit) and records how the instance ended.

use super::*;

impl Instances {
    pub(super) fn supervise(self: &Arc<Self>, slot: Arc<Slot>, spec: VmSpec, run: Box<dyn VmRun>) {
        let instances = self.clone();
        let name = format!("supervise-{}", spec.name);
        let spawned =
            std::thread::Builder::new().name(name).spawn(move || instances.supervisor(slot, spec, run));
        if let Err(error) = spawned {
            tracing::error!(error = %service_kit::ErrorChain(&error), "cannot start a supervisor thread");
        }
    }

    /// One instance's supervisor: watches each run, restarts on a guest reboot, and records
    /// how the instance ended.
    pub(super) fn supervisor(self: Arc<Self>, slot: Arc<Slot>, spec: VmSpec, mut run: Box<dyn VmRun>) {
        let uuid = spec.uuid;
        let mut reboots: VecDeque<Instant> = VecDeque::new();
        loop {
            let generation = self.generations.fetch_add(1, Ordering::SeqCst);
            let control = run.control();
            let pending = {
                let pending = lock(&slot.request);
                *lock(&slot.run) = Some(RunHandle { control: control.clone(), generation });
                *lock(&slot.forced) = None;
                *pending
            };
            let pump_stop = Arc::new(AtomicBool::new(false));
            console::spawn_pump(slot.console.clone(), run.console(), pump_stop.clone());
            // A request that came while no run was up (between two runs) is acted on now.
            if let Some((request, force)) = pending {
                self.press(&slot, control, generation, request, force);
            }
            let end = run.wait();
            pump_stop.store(true, Ordering::SeqCst);
            *lock(&slot.run) = None;
            if self.detached.load(Ordering::SeqCst) {
                return;
            }
            let request = lock(&slot.request).take().map(|(request, _)| request);
            let Some(mut event) = exit_event(end, request == Some(Request::Stop)) else { return };
            if request == Some(Request::Reboot) && event == Event::Stopped {
                event = Event::Rebooted;
            }
            let forced = lock(&slot.forced).take();
            let mut reason = describe(end, request, forced);
            if event == Event::Rebooted {
                let now = Instant::now();
                if request != Some(Request::Reboot) {
                    reboots.push_back(now);
                }
                while reboots.front().is_some_and(|t| now.duration_since(*t) > CRASH_LOOP_WINDOW) {
                    reboots.pop_front();
                }
                if reboots.len() > CRASH_LOOP_LIMIT {
                    event = Event::Faulted;
                    reason =
                        format!("rebooted more than {CRASH_LOOP_LIMIT} times within {CRASH_LOOP_WINDOW:?}");
                } else {
                    match self.hypervisor.start(&spec) {
                        Ok(next) => {
                            let mut record = slot.snapshot();
                            record.pid = Some(next.pid());
                            record.set_state(InstanceState::Running, reason);
                            if let Err(error) = self.commit(&slot, record) {
                                tracing::warn!(%uuid, error = %service_kit::ErrorChain(&error), "cannot persist a reboot");
                            }
                            tracing::info!(%uuid, pid = next.pid(), "instance rebooted");
                            run = next;
                            continue;
                        }
                        Err(error) => {
                            // The record is read without credentials: the details (argv,
                            // stderr) go to the log only.
                            tracing::error!(%uuid, error = %service_kit::ErrorChain(&error), "cannot start again after a reboot");
                            event = Event::Faulted;
                            reason = "could not start again after a reboot (the agent's log has the details)"
                                .into();
                        }
                    }
                }
            }
            let mut record = slot.snapshot();
            let next = record.state.apply(event).unwrap_or(InstanceState::Failed);
            record.pid = None;
            record.set_state(next, reason);
            tracing::info!(%uuid, state = ?record.state, reason = %record.reason, "instance run ended");
            if let Err(error) = self.commit(&slot, record.clone()) {
                tracing::error!(%uuid, error = %service_kit::ErrorChain(&error), "cannot persist the end of a run");
                self.publish(&slot, record);
            }
            return;
        }
    }
}

/// Why a run ended, for people: who ended it (the guest, or the agent by force) and how.
fn describe(end: RunEnd, request: Option<Request>, forced: Option<Forced>) -> String {
    let what = match (forced, end) {
        (Some(Forced::AfterTimeout(timeout)), _) => {
            format!("forced off after {} s: the guest did not power off", timeout.as_secs())
        }
        (Some(Forced::OnRequest), _) => "forced off".to_string(),
        (Some(Forced::Reset), _) => "reset".to_string(),
        (Some(Forced::ButtonRefused), _) => "forced off: the VM did not take the power button".to_string(),
        (None, end) => describe_end(end, request),
    };
    match request {
        Some(Request::Stop) => format!("stopped on request ({what})"),
        Some(Request::Reboot) => format!("rebooted on request ({what})"),
        None => what,
    }
}

/// How a run ended by itself.
fn describe_end(end: RunEnd, request: Option<Request>) -> String {
    match end {
        RunEnd::Exited(0) => "guest rebooted".to_string(),
        RunEnd::Exited(1) if request.is_none() => "guest powered off by itself".to_string(),
        RunEnd::Exited(1) => "guest powered off".to_string(),
        RunEnd::Exited(2) => "guest halted".to_string(),
        RunEnd::Exited(3) => "guest triple fault (exit status 3)".to_string(),
        RunEnd::Exited(code) => format!("hypervisor error (exit status {code})"),
        RunEnd::Signaled => "hypervisor process killed".to_string(),
        RunEnd::Unknown => "VM ended while adopted by a restarted agent (exit status unknown)".to_string(),
        RunEnd::Detached => "agent let go".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_say_how_a_run_ended_and_who_ended_it() {
        assert_eq!(describe(RunEnd::Exited(1), None, None), "guest powered off by itself");
        assert_eq!(
            describe(RunEnd::Exited(1), Some(Request::Stop), None),
            "stopped on request (guest powered off)"
        );
        assert_eq!(
            describe(RunEnd::Exited(0), Some(Request::Reboot), None),
            "rebooted on request (guest rebooted)"
        );
        assert_eq!(describe(RunEnd::Exited(4), None, None), "hypervisor error (exit status 4)");
        assert_eq!(describe(RunEnd::Signaled, None, None), "hypervisor process killed");
        assert!(describe(RunEnd::Unknown, None, None).contains("restarted agent"));
        // Forced: the reason says so, whatever exit the hypervisor reports.
        let timeout = Some(Forced::AfterTimeout(Duration::from_secs(60)));
        assert_eq!(
            describe(RunEnd::Exited(1), Some(Request::Stop), timeout),
            "stopped on request (forced off after 60 s: the guest did not power off)"
        );
        assert_eq!(
            describe(RunEnd::Signaled, Some(Request::Stop), Some(Forced::OnRequest)),
            "stopped on request (forced off)"
        );
        assert_eq!(
            describe(RunEnd::Exited(0), Some(Request::Reboot), Some(Forced::Reset)),
            "rebooted on request (reset)"
        );
    }
}
