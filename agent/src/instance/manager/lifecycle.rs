//! Starting, stopping, rebooting and destroying instances: the buttons of a run, pressed once,
//! and the stop timeout that forces a guest off.

use super::*;

impl Instances {
    /// Starts a stopped or failed instance. Blocking; returns once the VM process runs.
    pub fn start(self: &Arc<Self>, uuid: &Uuid) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let mut record = slot.snapshot();
        let next = record.state.apply(Event::Start)?;
        let spec = self.spec(&record)?;
        self.write_seed(&record, &spec)?;
        self.bring_up_networks(&record)?;
        *lock(&slot.request) = None;
        let run = self.hypervisor.start(&spec)?;
        record.pid = Some(run.pid());
        record.set_state(next, "started");
        if let Err(error) = self.commit(&slot, record.clone()) {
            // Not persisted means not started: a restarted agent would not know the VM.
            let _ = run.control().force_poweroff();
            std::thread::spawn(move || run.wait());
            return Err(error);
        }
        tracing::info!(%uuid, pid = run.pid(), "instance started");
        self.supervise(slot.clone(), spec, run);
        Ok(record)
    }

    /// Asks a running instance to power off (ACPI), forcing it after the stop timeout; `force`
    /// powers it off at once. Returns without waiting (see [`Instances::wait_while_running`]).
    pub fn stop(self: &Arc<Self>, uuid: &Uuid, force: bool) -> Result<InstanceRecord, InstanceError> {
        self.request(uuid, Request::Stop, force)
    }

    /// Reboots a running instance: ACPI poweroff and start again (`force`: a hard reset).
    pub fn reboot(self: &Arc<Self>, uuid: &Uuid, force: bool) -> Result<InstanceRecord, InstanceError> {
        self.request(uuid, Request::Reboot, force)
    }

    pub(super) fn request(
        self: &Arc<Self>,
        uuid: &Uuid,
        request: Request,
        force: bool,
    ) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let record = slot.snapshot();
        // Both are changes of a running instance: the table decides (stop is the test).
        record.state.apply(Event::Stopped)?;
        // The request is recorded and the run looked up under the request lock, which the
        // supervisor also holds while it registers a run: exactly one of the two presses the
        // button (pressed twice, the second press finds the guest on its way out and forces it).
        let run = {
            let mut pending = lock(&slot.request);
            *pending = Some((request, force));
            lock(&slot.run).as_ref().map(|r| (r.control.clone(), r.generation))
        };
        // No run: the supervisor is between two runs and acts on the request itself.
        if let Some((control, generation)) = run {
            self.press(&slot, control, generation, request, force);
        }
        Ok(record)
    }

    /// Presses the button for `request` on the run `generation`, and arms the stop timeout.
    pub(super) fn press(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        control: Arc<dyn VmControl>,
        generation: u64,
        request: Request,
        force: bool,
    ) {
        let uuid = slot.snapshot().uuid;
        let pressed = match (request, force) {
            (Request::Reboot, true) => {
                *lock(&slot.forced) = Some(Forced::Reset);
                control.reset()
            }
            (_, true) => {
                *lock(&slot.forced) = Some(Forced::OnRequest);
                control.force_poweroff()
            }
            (_, false) => control.request_poweroff(),
        };
        if let Err(error) = pressed {
            tracing::warn!(%uuid, error = %service_kit::ErrorChain(&error), "the VM did not take the request; forcing it off");
            *lock(&slot.forced) = Some(Forced::ButtonRefused);
            if let Err(error) = control.force_poweroff() {
                tracing::warn!(%uuid, error = %service_kit::ErrorChain(&error), "cannot force the VM off");
            }
            return;
        }
        if force {
            return;
        }
        let timeout = self.settings.stop_timeout;
        let slot = slot.clone();
        std::thread::spawn(move || {
            let same_run = |slot: &Slot| lock(&slot.run).as_ref().is_some_and(|r| r.generation == generation);
            // Woken by every change of the record: a run that ends (or reboots) ends the wait.
            let record = lock(&slot.record);
            let (record, _) = slot
                .changed
                .wait_timeout_while(record, timeout, |_| same_run(&slot))
                .unwrap_or_else(|e| e.into_inner());
            drop(record);
            if same_run(&slot) {
                tracing::warn!(%uuid, ?timeout, "the guest did not power off in time; forcing it");
                *lock(&slot.forced) = Some(Forced::AfterTimeout(timeout));
                if let Err(error) = control.force_poweroff() {
                    tracing::warn!(%uuid, error = %service_kit::ErrorChain(&error), "cannot force the VM off");
                }
            }
        });
    }

    /// Blocks until the instance is no longer `running` or `timeout` passes; returns it.
    pub fn wait_while_running(
        &self,
        uuid: &Uuid,
        timeout: Duration,
    ) -> Result<InstanceRecord, InstanceError> {
        self.wait_while(uuid, timeout, |r| r.state == InstanceState::Running)
    }

    /// Blocks while `waiting` holds for the instance's record, for at most `timeout`; the
    /// record then.
    fn wait_while(
        &self,
        uuid: &Uuid,
        timeout: Duration,
        mut waiting: impl FnMut(&InstanceRecord) -> bool,
    ) -> Result<InstanceRecord, InstanceError> {
        let slot = self.slot(uuid)?;
        let record = lock(&slot.record);
        let (record, _) = slot
            .changed
            .wait_timeout_while(record, timeout, |r| waiting(r))
            .unwrap_or_else(|e| e.into_inner());
        Ok(record.clone())
    }

    /// How long a stop may take, forced poweroff included.
    pub fn stop_deadline(&self) -> Duration {
        self.settings.stop_timeout + FORCE_GRACE + Duration::from_secs(5)
    }

    /// How long a guest gets to power off after the power button before it is forced off.
    pub fn stop_timeout(&self) -> Duration {
        self.settings.stop_timeout
    }

    /// Blocks until the run `pid` of the instance has been replaced by a new run (a reboot
    /// done), or the instance is no longer running (the reboot failed), or `timeout` passes;
    /// returns the instance as it then is.
    pub fn wait_for_reboot(
        &self,
        uuid: &Uuid,
        pid: Option<u32>,
        timeout: Duration,
    ) -> Result<InstanceRecord, InstanceError> {
        self.wait_while(uuid, timeout, |r| r.state == InstanceState::Running && r.pid == pid)
    }

    /// Destroys a stopped or failed instance: its disk, record and console log.
    pub fn destroy(&self, uuid: &Uuid) -> Result<(), InstanceError> {
        let slot = self.slot(uuid)?;
        let _op = lock(&slot.op);
        let mut record = slot.snapshot();
        let next = record.state.apply(Event::Destroy)?;
        self.disks.destroy(uuid)?;
        record.set_state(next, "destroyed");
        lock(&self.table).remove(uuid);
        self.publish(&slot, record.clone());
        slot.console.close();
        lock(&slot.metadata).take();
        let _ = fs::remove_file(self.settings.state_dir.join(format!("{uuid}.log")));
        let _ = fs::remove_file(self.settings.state_dir.join(format!("{uuid}.log.1")));
        let _ = fs::remove_dir_all(self.settings.run_dir.join(uuid.to_string()));
        self.remember_destroyed(&record);
        tracing::info!(%uuid, "instance destroyed");
        Ok(())
    }
}
