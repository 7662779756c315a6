//! The instance manager and its supervisor on the bhyve backend, with recorded runs: every
//! command goes to a `RecordingRunner`, whose fake bhyve processes end the way a test says
//! (bhyve's exit codes 0 reboot, 1 poweroff, 2 halt, 3 triple fault, 4 error, a signal), or
//! when the agent presses a button. bhyve cannot run on Linux; this is its behaviour, exactly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::host::bhyve::BhyvePaths;
use agent::host::qemu_img::QemuImg;
use agent::host::runner::{ProcessExit, RecordingRunner, Reply};
use agent::hypervisor::bhyve::Bhyve;
use agent::instance::disks::{FileDisks, InstanceDisks};
use agent::instance::manager::{CreateRequest, InstanceError, Instances, Settings};
use agent::instance::record::{InstanceRecord, NicRequest};
use agent::instance::state::{InstanceState, Refused};
use agent::network::freebsd::FreeBsdBridges;
use agent::network::{SwitchConfig, Switches};
use agent::storage::files::FilesStorage;
use agent::storage::{ImageMeta, ImageStorage};
use uuid::Uuid;

use crate::common::wait_until;

const BHYVE: &str = "/usr/sbin/bhyve ";
const BHYVECTL: &str = "/usr/sbin/bhyvectl";
/// How long a guest gets to obey the power button (short: one test waits it out).
const STOP_TIMEOUT: Duration = Duration::from_millis(300);

struct Host {
    dir: tempfile::TempDir,
    runner: RecordingRunner,
    image: Uuid,
    instances: Arc<Instances>,
}

fn paths(dir: &Path) -> BhyvePaths {
    BhyvePaths { vmm_dir: dir.join("vmm"), nmdm_prefix: dir.join("nmdm"), ..BhyvePaths::default() }
}

fn open(dir: &Path, runner: &RecordingRunner) -> Arc<Instances> {
    let images: Arc<dyn ImageStorage> = Arc::new(FilesStorage::new(&dir.join("images")).unwrap());
    let disks: Arc<dyn InstanceDisks> = Arc::new(
        FileDisks::new(
            &dir.join("instances"),
            QemuImg::new(Arc::new(runner.clone()), Path::new("/x")),
            false,
        )
        .unwrap(),
    );
    let bhyve = Bhyve::new(Arc::new(runner.clone()), paths(dir))
        .with_adopted_poll_interval(Duration::from_millis(20));
    let settings = Settings {
        iso_dir: dir.join("isos"),
        run_dir: dir.join("run"),
        state_dir: dir.join("instances"),
        stop_timeout: STOP_TIMEOUT,
        console_ring_bytes: 4096,
        console_log_max_bytes: 1 << 20,
    };
    // One config switch, `public`, on an existing uplink em0.
    let switches = [("public".to_string(), SwitchConfig { bridge: None, uplink: Some("em0".into()) })].into();
    let network = FreeBsdBridges::new(Arc::new(runner.clone()), BhyvePaths::default().ifconfig);
    let switches = Switches::open(Arc::new(network), &switches, &dir.join("instances")).unwrap();
    Instances::open(disks, Arc::new(bhyve), images, Arc::new(switches), settings).unwrap()
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("vmm")).unwrap();
        let images = FilesStorage::new(&dir.path().join("images")).unwrap();
        let image = Uuid::new_v4();
        let mut writer = images
            .begin(ImageMeta {
                uuid: image,
                name: "freebsd".into(),
                version: "14.1".into(),
                os: "other".into(),
                image_type: "zvol".into(),
                origin: None,
                sha1: "0".repeat(40),
                size: 1,
                compression: "none".into(),
                image_size_mib: Some(2),
                source: "http://127.0.0.1".into(),
            })
            .unwrap();
        writer.write_all(&[1u8; 2 << 20]).unwrap();
        writer.commit().unwrap();
        let runner = RecordingRunner::new();
        let instances = open(dir.path(), &runner);
        Host { dir, runner, image, instances }
    }

    fn create(&self, start: bool) -> InstanceRecord {
        self.create_with_nics(start, vec![]).unwrap()
    }

    fn create_with_nics(&self, start: bool, nics: Vec<NicRequest>) -> Result<InstanceRecord, InstanceError> {
        self.instances.create(CreateRequest {
            uuid: None,
            image: Some(self.image),
            alias: Some("vm".into()),
            vcpus: 2,
            memory_mib: 1024,
            disk_mib: Some(4),
            nics,
            firmware: None,
            guest: Default::default(),
            cdrom: None,
            boot_from_cdrom: false,
            start,
        })
    }

    /// The next bhyve process runs until signalled; SIGTERM (the power button) powers it off.
    fn next_bhyve_obeys_acpi(&self) {
        self.runner.expect(BHYVE, Reply::Runs { on_term: Some(ProcessExit::Code(1)) });
    }

    fn wait_for(&self, uuid: &Uuid, what: &str, done: impl Fn(&InstanceRecord) -> bool) -> InstanceRecord {
        wait_until(what, Duration::from_secs(10), || {
            let record = self.instances.get(uuid).unwrap();
            if done(&record) {
                Ok(record)
            } else {
                Err(format!("{record:?}"))
            }
        })
    }

    fn bhyve_starts(&self) -> usize {
        self.runner.commands().iter().filter(|c| c.starts_with(BHYVE)).count()
    }

    fn vmm_entry(&self, record: &InstanceRecord) -> PathBuf {
        self.dir.path().join("vmm").join(&record.vm_name)
    }
}

#[test]
fn the_argv_of_a_start_and_the_destroy_after_every_run() {
    let host = Host::new();
    host.next_bhyve_obeys_acpi();
    let record = host.create(true);
    assert_eq!(record.state, InstanceState::Running);
    let disk = host.dir.path().join("instances").join(record.uuid.to_string()).join("disk0.raw");
    let seed = host.dir.path().join("run").join(record.uuid.to_string()).join("cidata.img");
    let bhyve = host.runner.commands().into_iter().find(|c| c.starts_with(BHYVE)).unwrap();
    let name = &record.vm_name;
    let nmdm = host.dir.path().join("nmdm");
    assert_eq!(
        bhyve,
        format!(
            "/usr/sbin/bhyve -c 2 -m 1024M -H -A -P -w -u -U {} -s 0,hostbridge -s 31,lpc -l com1,{}{name}A \
             -l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI_CSM.fd -s 4:0,virtio-blk,{} \
             -s 5:0,virtio-blk,{},ro {name}",
            record.uuid,
            nmdm.display(),
            disk.display(),
            seed.display()
        )
    );
    // The NoCloud seed is written before the start, read-only for the guest.
    let mut seed_disk = std::fs::File::open(&seed).unwrap();
    let fat = fatfs::FileSystem::new(&mut seed_disk, fatfs::FsOptions::new()).unwrap();
    let mut meta = String::new();
    std::io::Read::read_to_string(&mut fat.root_dir().open_file("meta-data").unwrap(), &mut meta).unwrap();
    assert!(
        meta.contains(&format!("instance-id: \"{}\"", record.uuid))
            && meta.contains("local-hostname: \"vm\"")
    );
    host.instances.stop(&record.uuid, false).unwrap();
    let stopped = host.wait_for(&record.uuid, "stopped", |r| r.state == InstanceState::Stopped);
    assert_eq!(stopped.reason, "stopped on request (guest powered off)");
    let commands = host.runner.commands();
    let n = commands.len();
    assert_eq!(commands[n - 2], format!("kill -TERM {}", record.pid.unwrap()), "{commands:#?}");
    assert_eq!(commands[n - 1], format!("{BHYVECTL} --vm={name} --destroy"));
}

#[test]
fn every_exit_code_leads_where_the_table_says() {
    let host = Host::new();
    let record = host.create(false);
    let uuid = record.uuid;
    for (exit, state, reason) in [
        (ProcessExit::Code(1), InstanceState::Stopped, "guest powered off by itself"),
        (ProcessExit::Code(2), InstanceState::Stopped, "guest halted"),
        (ProcessExit::Code(3), InstanceState::Failed, "guest triple fault (exit status 3)"),
        (ProcessExit::Code(4), InstanceState::Failed, "hypervisor error (exit status 4)"),
        (ProcessExit::Signal(9), InstanceState::Failed, "hypervisor process killed"),
    ] {
        host.next_bhyve_obeys_acpi();
        let started = host.instances.start(&uuid).unwrap();
        assert_eq!(started.state, InstanceState::Running);
        host.runner.end_process(started.pid.unwrap(), exit);
        let ended = host.wait_for(&uuid, reason, |r| r.state != InstanceState::Running);
        assert_eq!((ended.state, ended.reason.as_str(), ended.pid), (state, reason, None), "{exit:?}");
    }
    // Exit 0 is a guest reboot: a new run, the instance stays running.
    host.next_bhyve_obeys_acpi();
    let first = host.instances.start(&uuid).unwrap();
    host.next_bhyve_obeys_acpi();
    host.runner.end_process(first.pid.unwrap(), ProcessExit::Code(0));
    let rebooted = host.wait_for(&uuid, "rebooted", |r| r.pid.is_some() && r.pid != first.pid);
    assert_eq!((rebooted.state, rebooted.reason.as_str()), (InstanceState::Running, "guest rebooted"));
    assert_eq!(host.runner.live_processes(), [rebooted.pid.unwrap()]);
    // The old VM was destroyed in the kernel before the new run.
    let commands = host.runner.commands();
    let last_start = commands.iter().rposition(|c| c.starts_with(BHYVE)).unwrap();
    assert!(commands[..last_start].last().unwrap().ends_with("--destroy"), "{commands:?}");
}

#[test]
fn a_guest_that_ignores_the_power_button_is_forced_off_after_the_timeout() {
    let host = Host::new();
    host.runner.expect(BHYVE, Reply::Runs { on_term: None });
    host.runner.expect(&format!("{BHYVECTL} --vm="), Reply::EndsProcess(ProcessExit::Code(1)));
    let record = host.create(true);
    let asked = Instant::now();
    host.instances.stop(&record.uuid, false).unwrap();
    let stopped = host.instances.wait_while_running(&record.uuid, Duration::from_secs(10)).unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert!(asked.elapsed() >= STOP_TIMEOUT, "forced only after stop_timeout");
    let commands = host.runner.commands();
    let term = commands.iter().position(|c| c.starts_with("kill -TERM")).unwrap();
    let force = commands.iter().position(|c| c.ends_with("--force-poweroff")).unwrap();
    assert!(term < force, "{commands:?}");
    assert!(commands.last().unwrap().ends_with("--destroy"));
    // What happened, not a clean shutdown.
    let timeout = STOP_TIMEOUT.as_secs();
    assert_eq!(
        stopped.reason,
        format!("stopped on request (forced off after {timeout} s: the guest did not power off)")
    );
}

#[test]
fn a_forced_stop_and_a_forced_reboot_say_so() {
    let host = Host::new();
    host.runner.expect(BHYVE, Reply::Runs { on_term: None });
    host.runner.expect(&format!("{BHYVECTL} --vm="), Reply::EndsProcess(ProcessExit::Code(1)));
    let record = host.create(true);
    host.instances.stop(&record.uuid, true).unwrap();
    let stopped = host.wait_for(&record.uuid, "stopped", |r| r.state == InstanceState::Stopped);
    assert_eq!(stopped.reason, "stopped on request (forced off)");
    // A hard reset: bhyvectl --force-reset ends the run as a reboot.
    host.runner.expect(BHYVE, Reply::Runs { on_term: None });
    let started = host.instances.start(&record.uuid).unwrap();
    host.runner.expect(BHYVE, Reply::Runs { on_term: None });
    host.runner.expect(&format!("{BHYVECTL} --vm="), Reply::EndsProcess(ProcessExit::Code(0)));
    host.instances.reboot(&record.uuid, true).unwrap();
    let rebooted =
        host.instances.wait_for_reboot(&record.uuid, started.pid, Duration::from_secs(10)).unwrap();
    assert_eq!(rebooted.state, InstanceState::Running);
    assert_ne!(rebooted.pid, started.pid);
    assert_eq!(rebooted.reason, "rebooted on request (reset)");
}

#[test]
fn reboots_on_request_and_a_crash_loop_ends_in_failed() {
    let host = Host::new();
    host.next_bhyve_obeys_acpi();
    let record = host.create(true);
    host.next_bhyve_obeys_acpi();
    host.instances.reboot(&record.uuid, false).unwrap();
    let rebooted = host.wait_for(&record.uuid, "rebooted", |r| r.pid.is_some() && r.pid != record.pid);
    assert_eq!(rebooted.reason, "rebooted on request (guest powered off)");
    assert_eq!(host.bhyve_starts(), 2);

    // A guest that resets at once, again and again: after 5 reboots in 60 s it is failed
    // (requested reboots do not count).
    for _ in 0..6 {
        host.runner.expect(BHYVE, Reply::Exits(ProcessExit::Code(0)));
    }
    host.runner.end_process(rebooted.pid.unwrap(), ProcessExit::Code(0));
    let failed = host.wait_for(&record.uuid, "failed", |r| r.state == InstanceState::Failed);
    assert!(failed.reason.contains("rebooted more than 5 times"), "{}", failed.reason);
    assert_eq!(host.bhyve_starts(), 2 + 5);
}

#[test]
fn refused_transitions_say_why_and_destroy_removes_everything() {
    let host = Host::new();
    host.next_bhyve_obeys_acpi();
    let record = host.create(true);
    let uuid = record.uuid;
    let refused = |e: InstanceError| match e {
        InstanceError::Refused(r) => r,
        other => panic!("not a refusal: {other}"),
    };
    assert_eq!(refused(host.instances.start(&uuid).unwrap_err()), Refused::AlreadyRunning);
    assert_eq!(refused(host.instances.destroy(&uuid).unwrap_err()), Refused::Running);
    assert!(matches!(host.instances.check_image_unused(&host.image), Err(InstanceError::ImageInUse { .. })));
    host.runner.expect(&format!("{BHYVECTL} --vm="), Reply::EndsProcess(ProcessExit::Code(1)));
    host.instances.stop(&uuid, true).unwrap();
    host.wait_for(&uuid, "stopped", |r| r.state == InstanceState::Stopped);
    let commands = host.runner.commands();
    assert!(commands[commands.len() - 2].ends_with("--force-poweroff"), "{commands:?}");
    assert!(commands[commands.len() - 1].ends_with("--destroy"), "{commands:?}");
    assert_eq!(refused(host.instances.stop(&uuid, false).unwrap_err()), Refused::NotRunning);
    host.instances.destroy(&uuid).unwrap();
    assert!(matches!(host.instances.get(&uuid), Err(InstanceError::NotFound(_))));
    assert!(!host.dir.path().join("instances").join(uuid.to_string()).exists());
    host.instances.check_image_unused(&host.image).unwrap();
    assert_eq!(host.instances.destroyed()[0].state, InstanceState::Destroyed);
}

#[test]
fn a_restarted_agent_adopts_running_vms_and_marks_vanished_ones_stopped() {
    let host = Host::new();
    host.next_bhyve_obeys_acpi();
    let kept = host.create(true);
    host.next_bhyve_obeys_acpi();
    let vanished = host.create(true);
    // The kernel holds the first VM; the second one's is gone (a host reboot, say).
    std::fs::write(host.vmm_entry(&kept), "").unwrap();
    host.instances.detach_all();
    let Host { dir, instances: old, .. } = host;
    drop(old);

    let runner = RecordingRunner::new();
    // ps keeps saying the process is bhyve (the adopted run polls it), for longer than the test.
    for _ in 0..2000 {
        runner.expect(&format!("/bin/ps -p {}", kept.pid.unwrap()), Reply::Ok("bhyve\n".into()));
    }
    let instances = open(dir.path(), &runner);
    let vmm_entry = |r: &InstanceRecord| dir.path().join("vmm").join(&r.vm_name);
    let adopted = instances.get(&kept.uuid).unwrap();
    assert_eq!((adopted.state, adopted.pid), (InstanceState::Running, kept.pid));
    let gone = instances.get(&vanished.uuid).unwrap();
    assert_eq!(
        (gone.state, gone.reason.as_str()),
        (InstanceState::Stopped, "not running when the agent started")
    );

    // The adopted VM ends: its exit status went to the old agent, so the reason says so.
    std::fs::remove_file(vmm_entry(&kept)).unwrap();
    let started = Instant::now();
    let ended = loop {
        let record = instances.get(&kept.uuid).unwrap();
        if record.state != InstanceState::Running {
            break record;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(ended.state, InstanceState::Stopped);
    assert!(ended.reason.contains("exit status unknown"), "{}", ended.reason);
    // Both records were persisted: a third agent sees the same.
    let third = open(dir.path(), &RecordingRunner::new());
    assert!(third.list().iter().all(|r| r.state == InstanceState::Stopped));
}

#[test]
fn a_blank_instance_boots_its_iso_from_slot_3_and_the_iso_cannot_go_while_attached() {
    let host = Host::new();
    let isos = host.instances.isos().clone();
    isos.add("installer.iso", &mut &b"an installer"[..], None, None, |_| {}).unwrap();
    host.next_bhyve_obeys_acpi();
    let record = host
        .instances
        .create(CreateRequest {
            uuid: None,
            // An install from the ISO onto a blank disk.
            image: None,
            alias: Some("install".into()),
            vcpus: 1,
            memory_mib: 512,
            disk_mib: Some(4),
            nics: vec![],
            firmware: None,
            guest: Default::default(),
            cdrom: Some("installer.iso".into()),
            boot_from_cdrom: true,
            start: true,
        })
        .unwrap();
    assert_eq!(record.image, None);
    let disk = host.dir.path().join("instances").join(record.uuid.to_string()).join("disk0.raw");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 4 << 20, "a blank disk of disk_mib");
    let bhyve = host.runner.commands().into_iter().find(|c| c.starts_with(BHYVE)).unwrap();
    let iso = isos.path("installer.iso").unwrap();
    assert!(bhyve.contains(&format!(" -s 3:0,ahci-cd,{},ro -s 4:0,virtio-blk,", iso.display())), "{bhyve}");
    let users = |name: &str| host.instances.iso_users(name);
    assert!(matches!(isos.remove("installer.iso", &users), Err(agent::iso::IsoError::InUse { .. })));
    // The disk of a running guest is not snapshotted (nor rolled back under it).
    use agent::instance::manager::{InstanceError, SnapshotChange};
    assert!(matches!(
        host.instances.change_snapshot(&record.uuid, SnapshotChange::Create, "installed"),
        Err(InstanceError::Refused(_))
    ));
    host.instances.stop(&record.uuid, false).unwrap();
    host.wait_for(&record.uuid, "stopped", |r| r.state == InstanceState::Stopped);
    host.instances.change_snapshot(&record.uuid, SnapshotChange::Create, "installed").unwrap();
    assert_eq!(host.instances.snapshots(&record.uuid).unwrap(), ["installed"]);
    host.instances.set_cdrom(&record.uuid, None, false).unwrap();
    assert!(host.instances.iso_users("installer.iso").is_empty());
}

#[test]
fn nics_on_a_switch_bring_its_bridge_up_and_join_their_vlans() {
    let host = Host::new();
    let nic = |text: &str| NicRequest::parse(text).unwrap();
    // Refused before anything happens on the host.
    for (nics, why) in [
        (vec![nic("switch:nope")], "an unknown switch"),
        (vec![nic("switch:public,vlan=4095")], "a VLAN out of range"),
        (vec![nic("switch:public,mac=01:00:5e:00:00:01")], "a multicast MAC"),
        (
            vec![nic("switch:public,mac=58:9c:fc:00:00:01"), nic("switch:public,mac=58:9c:fc:00:00:01")],
            "one MAC twice",
        ),
    ] {
        let error = host.create_with_nics(false, nics).unwrap_err();
        assert!(matches!(error, InstanceError::Invalid(_)), "{why}: {error}");
    }
    assert!(host.runner.commands().is_empty(), "{:?}", host.runner.commands());

    host.runner.expect("/sbin/ifconfig -l", Reply::Ok("em0 lo0\n".into()));
    host.runner.expect("/sbin/ifconfig bridge create", Reply::Ok("bridge0\n".into()));
    host.runner.expect("/sbin/ifconfig bridge create", Reply::Ok("bridge1\n".into()));
    host.runner.expect("/sbin/ifconfig vlan create", Reply::Ok("vlan0\n".into()));
    host.runner.expect("/sbin/ifconfig tap create", Reply::Ok("tap7\n".into()));
    host.runner.expect("/sbin/ifconfig tap create", Reply::Ok("tap8\n".into()));
    host.next_bhyve_obeys_acpi();
    let nics = vec![nic("switch:public,vlan=10,mac=58:9C:FC:0A:0B:0C"), nic("switch:public")];
    let record = host.create_with_nics(true, nics).unwrap();
    assert_eq!(record.nics[0].mac, "58:9c:fc:0a:0b:0c", "the MAC asked for, normalised");
    assert_eq!(record.nics[0].vlan, Some(10));
    let commands: Vec<String> =
        host.runner.commands().into_iter().filter(|c| c.starts_with("/sbin/ifconfig")).collect();
    assert_eq!(
        commands,
        [
            "/sbin/ifconfig -l",
            "/sbin/ifconfig -g bridge",
            // The switch's bridge, with the uplink.
            "/sbin/ifconfig bridge create",
            "/sbin/ifconfig bridge0 name public",
            "/sbin/ifconfig public up",
            "/sbin/ifconfig public",
            "/sbin/ifconfig public addm em0",
            "/sbin/ifconfig em0 up",
            // VLAN 10: a bridge of its own, with the uplink's 802.1Q interface.
            "/sbin/ifconfig bridge create",
            "/sbin/ifconfig bridge1 name publicv10",
            "/sbin/ifconfig publicv10 up",
            "/sbin/ifconfig vlan create vlan 10 vlandev em0",
            "/sbin/ifconfig vlan0 name em0.10",
            "/sbin/ifconfig em0.10 up",
            "/sbin/ifconfig publicv10",
            "/sbin/ifconfig publicv10 addm em0.10",
            "/sbin/ifconfig em0.10 up",
            // The taps: the first NIC on the VLAN's bridge, the second untagged.
            "/sbin/ifconfig tap create",
            "/sbin/ifconfig publicv10 addm tap7",
            &format!("/sbin/ifconfig tap7 descr vmnet/{}/0", record.vm_name),
            "/sbin/ifconfig tap7 up",
            "/sbin/ifconfig tap create",
            "/sbin/ifconfig public addm tap8",
            &format!("/sbin/ifconfig tap8 descr vmnet/{}/1", record.vm_name),
            "/sbin/ifconfig tap8 up",
        ]
    );
    let bhyve = host.runner.commands().into_iter().find(|c| c.starts_with(BHYVE)).unwrap();
    assert!(bhyve.contains("virtio-net,tap7,mac=58:9c:fc:0a:0b:0c"), "{bhyve}");

    // The same MAC again is refused, naming its owner; the switch cannot go while in use.
    let error = host.create_with_nics(false, vec![nic("switch:public,mac=58:9c:fc:0a:0b:0c")]).unwrap_err();
    assert!(error.to_string().contains(&record.uuid.to_string()), "{error}");
    let error = host.instances.delete_switch("public").unwrap_err();
    assert!(matches!(error, InstanceError::SwitchInUse { .. }), "{error}");
    assert_eq!(host.instances.switch_users("public"), [record.uuid]);
}
