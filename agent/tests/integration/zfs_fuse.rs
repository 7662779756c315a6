//! `ZfsStorage` in `zfs-files` mode against a real zfs-fuse pool: imports of raw disks and
//! send streams, origin chains, deletes, and that every failure leaves no partial behind.
//!
//! The pool comes from `AGENT_ZFS_POOL` (made by `agent/tests/zfs-fuse-setup.sh`, as root).
//! Without it the tests print that they are skipped and pass, except under CI (`CI` set),
//! where a missing pool is a failure. Each test works in its own `<pool>/t<random>` and
//! destroys it at the end; they take turns, as zfs-fuse is one daemon for everybody.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use agent::host::runner::{CommandRunner, HostCommand, HostRunner};
use agent::host::zfs::{Depth, Dialect, Zfs};
use agent::storage::zfs::{property, ZfsMode, ZfsStorage, DISK_FILE};
use agent::storage::{ContentKind, ImageMeta, ImageStorage, LocalImage, StorageError};
use uuid::Uuid;

const ZFS: &str = "/usr/sbin/zfs";

static TURN: Mutex<()> = Mutex::new(());

fn pool() -> Option<String> {
    match std::env::var("AGENT_ZFS_POOL") {
        Ok(pool) if !pool.is_empty() => Some(pool),
        _ if std::env::var_os("CI").is_some() => {
            panic!("AGENT_ZFS_POOL is not set under CI: run agent/tests/zfs-fuse-setup.sh first")
        }
        _ => {
            eprintln!("skipped: AGENT_ZFS_POOL is not set (see agent/tests/zfs-fuse-setup.sh)");
            None
        }
    }
}

/// A parent dataset of one test, its storage, and the zfs-fuse turn.
struct Fixture {
    zfs: Zfs,
    parent: String,
    storage: ZfsStorage,
    _turn: MutexGuard<'static, ()>,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        let pool = pool()?;
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let zfs = Zfs::new(Arc::new(HostRunner), ZFS, Dialect::ZfsFuse);
        let parent = format!("{pool}/t{}", &Uuid::new_v4().simple().to_string()[..8]);
        zfs.create_filesystem(&parent, false, &[]).unwrap();
        let storage = ZfsStorage::new(zfs.clone(), parent.clone(), ZfsMode::Files);
        Some(Fixture { zfs, parent, storage, _turn: turn })
    }

    fn ds(&self, name: &str) -> String {
        format!("{}/{name}", self.parent)
    }

    /// Runs `zfs <args>` through the runner, for what the wrapper has no method for.
    fn zfs_run(&self, args: &[&str]) -> String {
        HostRunner.run(&HostCommand::new(ZFS).args(args)).unwrap().stdout
    }

    /// Where a (mounted) filesystem is.
    fn mountpoint(&self, dataset: &str) -> PathBuf {
        let rows = self.zfs.get(dataset, &["mountpoint"], Depth::Itself, None).unwrap();
        PathBuf::from(rows[0].value.clone().unwrap())
    }

    /// A filesystem holding `files`, snapshotted as `snapshot`.
    fn source(&self, name: &str, files: &[(&str, &[u8])], snapshot: &str) -> String {
        let dataset = self.ds(name);
        if !self.zfs.exists(&dataset).unwrap() {
            self.zfs.create_filesystem(&dataset, false, &[]).unwrap();
        }
        let dir = self.mountpoint(&dataset);
        for (file, bytes) in files {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        let snap = format!("{dataset}@{snapshot}");
        self.zfs.snapshot(&snap).unwrap();
        snap
    }

    /// Datasets directly under the parent (not the parent itself).
    fn children(&self) -> Vec<String> {
        let rows = self.zfs.list(&self.parent, "filesystem,volume", Depth::Children).unwrap();
        rows.into_iter().map(|r| r.name).filter(|n| *n != self.parent).collect()
    }

    fn partials(&self) -> Vec<String> {
        self.children().into_iter().filter(|n| n.ends_with("-partial")).collect()
    }

    fn import(&self, meta: ImageMeta, bytes: &[u8], chunk: usize) -> Result<LocalImage, StorageError> {
        let mut writer = self.storage.begin(meta)?;
        for piece in bytes.chunks(chunk) {
            if writer.write_all(piece).is_err() {
                break;
            }
        }
        writer.commit()
    }

    /// Reads a file of an image through a clone of its `@final`, as an instance would.
    fn read_through_clone(&self, image: &LocalImage, file: &str) -> Vec<u8> {
        let clone = self.ds(&format!("read-{}", image.meta.uuid.simple()));
        self.zfs.clone_snapshot(&format!("{}@final", image.location), &clone).unwrap();
        let bytes = std::fs::read(self.mountpoint(&clone).join(file)).unwrap();
        self.zfs.destroy(&clone, true).unwrap();
        bytes
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Unmounts the tree first (zfs-fuse), then `destroy -r`; clones live under the parent
        // too, so nothing outside it depends on what is destroyed.
        if let Err(e) = self.zfs.destroy(&self.parent, true) {
            eprintln!("cannot destroy {}: {e}", self.parent);
        }
    }
}

/// `zfs send [-i from | -R] <snapshot>` into memory. Not through the runner: its `Output` is
/// text (`from_utf8_lossy`), and a stream is binary. The agent never sends.
fn send(args: &[&str]) -> Vec<u8> {
    #[allow(clippy::disallowed_methods)]
    let output = std::process::Command::new(ZFS).arg("send").args(args).env("LC_ALL", "C").output().unwrap();
    assert!(output.status.success(), "zfs send {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn meta(name: &str) -> ImageMeta {
    ImageMeta {
        uuid: Uuid::new_v4(),
        name: name.to_string(),
        version: "1.0.0".into(),
        os: "linux".into(),
        image_type: "zone-dataset".into(),
        origin: None,
        sha1: "da39a3ee5e6b4b0d3255bfef95601890afd80709".into(),
        size: 4321,
        compression: "gzip".into(),
        image_size_mib: Some(8),
        source: "http://127.0.0.1:8080".into(),
    }
}

/// A small disk: data, a long zero run (a hole once written), data.
fn raw_disk() -> Vec<u8> {
    let mut disk: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    disk.extend(vec![0u8; 2 * 1024 * 1024]);
    disk.extend((0..300_001u32).map(|i| (i % 200) as u8 + 1));
    disk
}

#[test]
fn imports_a_raw_disk_with_every_property() {
    let Some(f) = Fixture::new() else { return };
    let meta =
        ImageMeta { name: "debian 12, tab\there, 100% and a\nnewline".into(), origin: None, ..meta("raw") };
    let disk = raw_disk();
    let image = f.import(meta.clone(), &disk, 64 * 1024 - 1).unwrap();
    assert_eq!(image.meta, meta);
    assert_eq!(image.content, ContentKind::RawDisk);
    assert_eq!(image.content_size, disk.len() as u64);
    assert_eq!(image.location, f.ds(&meta.uuid.to_string()));
    assert!(chrono::DateTime::parse_from_rfc3339(&image.imported_at).is_ok());

    assert_eq!(f.storage.list().unwrap(), std::slice::from_ref(&image));
    assert_eq!(f.storage.get(&meta.uuid).unwrap(), Some(image.clone()));
    assert_eq!(f.children(), std::slice::from_ref(&image.location));
    assert_eq!(f.zfs.list_snapshots(&image.location).unwrap(), [format!("{}@final", image.location)]);
    let mounted = f.zfs_run(&["get", "-H", "-o", "value", "mounted", &image.location]);
    assert_eq!(mounted.trim(), "no");

    // Plain `zfs get` shows the metadata, and every property but the unset origin is there.
    let local = f.zfs_run(&["get", "-H", "-o", "property,value", "-s", "local", "all", &image.location]);
    let props: Vec<(&str, &str)> = local.lines().filter_map(|l| l.split_once('\t')).collect();
    for key in property::ALL.iter().filter(|k| **k != property::ORIGIN) {
        assert!(props.iter().any(|(k, _)| k == key), "{key} missing in {local}");
    }
    let value =
        |key: &str| f.zfs_run(&["get", "-H", "-o", "value", key, &image.location]).trim_end().to_string();
    assert_eq!(value(property::UUID), meta.uuid.to_string());
    assert_eq!(value(property::SIZE), "4321");
    assert_eq!(value(property::CONTENT), "raw-disk");
    assert_eq!(value(property::IMAGE_SIZE_MIB), "8");
    assert_eq!(value(property::NAME), "debian 12, tab%09here, 100%25 and a%0Anewline");

    assert_eq!(f.read_through_clone(&image, DISK_FILE), disk);
}

#[test]
fn imports_a_zfs_send_stream_and_names_its_snapshot_final() {
    let Some(f) = Fixture::new() else { return };
    let snap = f.source("src", &[("hello.txt", b"hello from a stream\n")], "2024-11-22");
    let stream = send(&[&snap]);
    f.zfs.destroy(&f.ds("src"), true).unwrap();

    let image = f.import(meta("stream"), &stream, 10_000).unwrap();
    assert_eq!(image.content, ContentKind::ZfsStream);
    assert_eq!(image.content_size, stream.len() as u64);
    assert_eq!(f.zfs.list_snapshots(&image.location).unwrap(), [format!("{}@final", image.location)]);
    assert_eq!(f.storage.list().unwrap(), std::slice::from_ref(&image));
    assert_eq!(f.read_through_clone(&image, "hello.txt"), b"hello from a stream\n");
    let content = f.zfs_run(&["get", "-H", "-o", "value", property::CONTENT, &image.location]);
    assert_eq!(content.trim(), "zfs-stream");

    // The same image again.
    let again = f.import(image.meta.clone(), &stream, 10_000).unwrap_err();
    assert!(matches!(again, StorageError::AlreadyExists(u) if u == image.meta.uuid), "{again}");
    assert!(f.partials().is_empty());
}

#[test]
fn imports_an_origin_chain_as_a_clone_and_deletes_in_order() {
    let Some(f) = Fixture::new() else { return };
    // What an image and its child look like where they were made: the child is a clone of
    // the base's @final with one file more, sent incrementally.
    let base_snap = f.source("src", &[("base.txt", b"base\n")], "final");
    f.zfs.clone_snapshot(&base_snap, &f.ds("srcchild")).unwrap();
    let child_snap = f.source("srcchild", &[("child.txt", b"child\n")], "final");
    let full = send(&[&base_snap]);
    let incremental = send(&["-i", &base_snap, &child_snap]);
    // Gone before the import: a clone stream is received as a clone of whichever snapshot
    // has the from-GUID, and that must be the imported base.
    f.zfs.destroy(&f.ds("srcchild"), true).unwrap();
    f.zfs.destroy(&f.ds("src"), true).unwrap();

    let child_meta = ImageMeta { origin: Some(Uuid::new_v4()), ..meta("child") };
    let missing = f.storage.begin(child_meta.clone()).err().unwrap();
    assert!(matches!(missing, StorageError::MissingOrigin(u) if Some(u) == child_meta.origin), "{missing}");

    let base = f.import(meta("base"), &full, 4096).unwrap();
    let child_meta = ImageMeta { origin: Some(base.meta.uuid), ..child_meta };
    let child = f.import(child_meta, &incremental, 4096).unwrap();
    assert_eq!(child.content, ContentKind::ZfsStream);
    let origin = f.zfs.get(&child.location, &["origin"], Depth::Itself, None).unwrap();
    assert_eq!(origin[0].value, Some(format!("{}@final", base.location)));
    let origin_prop = f.zfs_run(&["get", "-H", "-o", "value", property::ORIGIN, &child.location]);
    assert_eq!(origin_prop.trim(), base.meta.uuid.to_string());
    assert_eq!(f.read_through_clone(&child, "base.txt"), b"base\n");
    assert_eq!(f.read_through_clone(&child, "child.txt"), b"child\n");

    let mut listed = f.storage.list().unwrap();
    listed.sort_by_key(|i| i.meta.name.clone());
    assert_eq!(listed, [base.clone(), child.clone()]);

    match f.storage.delete(&base.meta.uuid) {
        Err(StorageError::InUse { users, .. }) => assert_eq!(users, std::slice::from_ref(&child.location)),
        other => panic!("{other:?}"),
    }
    f.storage.delete(&child.meta.uuid).unwrap();
    f.storage.delete(&base.meta.uuid).unwrap();
    assert!(f.storage.list().unwrap().is_empty());
    assert!(f.children().is_empty());
}

#[test]
fn delete_is_refused_while_an_instance_clone_exists() {
    let Some(f) = Fixture::new() else { return };
    let image = f.import(meta("in-use"), &raw_disk(), 1 << 20).unwrap();
    let instance = f.ds("instance-disk0");
    f.zfs.clone_snapshot(&format!("{}@final", image.location), &instance).unwrap();
    match f.storage.delete(&image.meta.uuid) {
        Err(StorageError::InUse { users, .. }) => assert_eq!(users, std::slice::from_ref(&instance)),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.storage.get(&image.meta.uuid).unwrap(), Some(image.clone()));
    f.zfs.destroy(&instance, true).unwrap();
    f.storage.delete(&image.meta.uuid).unwrap();
    assert_eq!(f.storage.get(&image.meta.uuid).unwrap(), None);
    assert!(matches!(f.storage.delete(&image.meta.uuid), Err(StorageError::NotFound(_))));
}

#[test]
fn refuses_an_incremental_stream_that_is_not_of_a_clone() {
    let Some(f) = Fixture::new() else { return };
    let first = f.source("src", &[("a", b"1")], "one");
    let second = f.source("src", &[("b", b"2")], "two");
    let full = send(&[&first]);
    let incremental = send(&["-i", &first, &second]);
    f.zfs.destroy(&f.ds("src"), true).unwrap();
    let base = f.import(meta("base"), &full, 8192).unwrap();

    // zfs-fuse would apply this to the base image itself (it holds the from-snapshot).
    let child = ImageMeta { origin: Some(base.meta.uuid), ..meta("not-a-clone") };
    let err = f.import(child, &incremental, 8192).unwrap_err();
    assert!(matches!(err, StorageError::InvalidContent(_)), "{err}");
    assert_eq!(f.zfs.list_snapshots(&base.location).unwrap(), [format!("{}@final", base.location)]);
    assert_eq!(f.storage.list().unwrap(), [base]);
    assert!(f.partials().is_empty());
}

#[test]
fn abort_and_drop_mid_import_leave_nothing() {
    let Some(f) = Fixture::new() else { return };
    let snap = f.source("src", &[("big", &raw_disk())], "s");
    let stream = send(&[&snap]);
    f.zfs.destroy(&f.ds("src"), true).unwrap();

    let mut writer = f.storage.begin(meta("aborted-stream")).unwrap();
    writer.write_all(&stream[..stream.len() / 2]).unwrap();
    writer.abort();
    assert!(f.children().is_empty(), "{:?}", f.children());

    let mut writer = f.storage.begin(meta("aborted-raw")).unwrap();
    writer.write_all(&raw_disk()[..1_500_000]).unwrap();
    assert_eq!(f.partials().len(), 1);
    writer.abort();
    assert!(f.children().is_empty(), "{:?}", f.children());

    let mut writer = f.storage.begin(meta("dropped-raw")).unwrap();
    writer.write_all(&raw_disk()[..500_000]).unwrap();
    drop(writer);
    assert!(f.children().is_empty(), "{:?}", f.children());
    assert!(f.storage.list().unwrap().is_empty());
}

#[test]
fn truncated_and_corrupt_streams_fail_and_leave_no_partial() {
    let Some(f) = Fixture::new() else { return };
    let snap = f.source("src", &[("big", &raw_disk())], "s");
    let stream = send(&[&snap]);
    f.zfs.destroy(&f.ds("src"), true).unwrap();

    let truncated = &stream[..stream.len() * 3 / 5];
    let err = f.import(meta("truncated"), truncated, 65536).unwrap_err();
    assert!(matches!(err, StorageError::InvalidContent(_)), "{err}");
    assert!(f.children().is_empty(), "{:?}", f.children());

    // A valid begin record followed by garbage. (zfs-fuse survives this; flipping bits all
    // over a stream can crash its daemon, so that is not tried here.)
    let mut junk = stream[..312].to_vec();
    junk.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 13) as u8));
    assert!(f.import(meta("junk"), &junk, 65536).is_err());
    assert!(f.children().is_empty(), "{:?}", f.children());

    // Fewer bytes than a begin record.
    assert!(f.import(meta("short"), &stream[..40], 8).is_err());
    assert!(f.children().is_empty(), "{:?}", f.children());
    assert!(f.storage.list().unwrap().is_empty());
}

#[test]
fn a_stream_with_two_snapshots_is_invalid_content() {
    let Some(f) = Fixture::new() else { return };
    f.source("src", &[("a", b"1")], "one");
    let second = f.source("src", &[("b", b"2")], "two");
    let replication = send(&["-R", &second]);
    f.zfs.destroy(&f.ds("src"), true).unwrap();

    let err = f.import(meta("two-snapshots"), &replication, 8192).unwrap_err();
    assert!(matches!(&err, StorageError::InvalidContent(m) if m.contains("exactly one snapshot")), "{err}");
    assert!(f.children().is_empty(), "{:?}", f.children());
}

#[test]
fn recover_removes_leftover_partials_only() {
    let Some(f) = Fixture::new() else { return };
    let image = f.import(meta("kept"), b"a tiny raw disk", 4).unwrap();
    // What a killed agent leaves: a mounted partial with a half-written disk, and an
    // unmounted one (a receive that was cut off).
    let mounted = f.ds(&format!("{}-partial", Uuid::new_v4()));
    f.source(&mounted[f.parent.len() + 1..], &[(DISK_FILE, b"half")], "x");
    let unmounted = f.ds(&format!("{}-partial", Uuid::new_v4()));
    f.zfs.create_filesystem(&unmounted, false, &[]).unwrap();
    f.zfs.unmount(&unmounted).unwrap();

    let mut removed = f.storage.recover().unwrap();
    removed.sort();
    let mut expected = vec![mounted, unmounted];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(f.children(), std::slice::from_ref(&image.location));
    assert_eq!(f.storage.list().unwrap(), [image]);
    assert!(f.storage.recover().unwrap().is_empty());
}

/// An instance record as the manager makes it.
fn instance_record(image: Uuid, disk_mib: u64) -> agent::instance::record::InstanceRecord {
    let uuid = Uuid::new_v4();
    serde_json::from_value(serde_json::json!({
        "uuid": uuid, "alias": "web-1", "image": image, "vcpus": 1, "memory_mib": 256,
        "disk_mib": disk_mib, "nics": [{"mac": "58:9c:fc:01:02:03", "network": "user"}],
        "firmware": "bios", "vm_name": agent::instance::record::InstanceRecord::vm_name_for(&uuid),
        "state": "stopped", "reason": "created", "pid": null, "created_at": "2026-11-22T00:00:00Z",
        "history": []
    }))
    .unwrap()
}

#[test]
fn instances_are_clones_that_carry_their_record() {
    use agent::instance::disks::{InstanceDisks, ZfsDisks, RECORD_PROPERTY};
    use agent::instance::state::InstanceState;
    let Some(f) = Fixture::new() else { return };
    let disk = raw_disk();
    let image = f.import(meta("base"), &disk, 65536).unwrap();
    let instances_parent = f.ds("inst");
    let disks =
        ZfsDisks::new(f.zfs.clone(), &instances_parent, ZfsMode::Files, std::path::Path::new("/dev/zvol"));
    assert!(disks.load_all().unwrap().is_empty(), "no parent yet is no instances");

    let mut record = instance_record(image.meta.uuid, 16);
    disks.create(&record, Some(&image)).unwrap();
    let clone = format!("{instances_parent}/{}", record.uuid);
    let origin = f.zfs.get(&clone, &["origin"], Depth::Itself, None).unwrap();
    assert_eq!(origin[0].value.as_deref(), Some(format!("{}@final", image.location).as_str()));
    let path = disks.disks(&record).unwrap().remove(0).path;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 << 20, "grown to disk_mib");
    assert_eq!(&std::fs::read(&path).unwrap()[..disk.len()], &disk[..], "the image's bytes");

    // The guest writes; the image does not change.
    std::fs::write(&path, b"guest data").unwrap();
    assert_eq!(f.read_through_clone(&image, DISK_FILE), disk);

    // The record lives on the clone and survives a reload; saves replace it.
    assert_eq!(disks.load_all().unwrap(), [record.clone()]);
    record.set_state(InstanceState::Running, "started");
    record.pid = Some(4242);
    disks.save(&record).unwrap();
    assert_eq!(disks.load_all().unwrap(), [record.clone()]);
    let raw = f.zfs_run(&["get", "-H", "-o", "value", RECORD_PROPERTY, &clone]);
    assert!(raw.contains("\"pid\":4242"), "{raw}");

    // Snapshots of the clone: roll back to one (later ones go, as zfs rollback -r does).
    disks.snapshot(&record, "one").unwrap();
    std::fs::write(&path, b"after the snapshot").unwrap();
    disks.snapshot(&record, "two").unwrap();
    assert_eq!(disks.snapshots(&record).unwrap(), ["one", "two"]);
    disks.rollback(&record, "one").unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[..10], b"guest data");
    assert_eq!(disks.snapshots(&record).unwrap(), ["one"]);
    disks.delete_snapshot(&record, "one").unwrap();
    assert!(disks.snapshots(&record).unwrap().is_empty());

    // The image cannot go while the clone exists.
    assert!(matches!(f.storage.delete(&image.meta.uuid), Err(StorageError::InUse { .. })));

    // A clone without a record (a create cut short) is removed at load.
    let leftover = format!("{instances_parent}/{}", Uuid::new_v4());
    f.zfs.clone_snapshot(&format!("{}@final", image.location), &leftover).unwrap();
    assert_eq!(disks.load_all().unwrap().len(), 1);
    assert!(!f.zfs.exists(&leftover).unwrap());

    disks.destroy(&record.uuid).unwrap();
    assert!(!f.zfs.exists(&clone).unwrap());
    assert!(disks.load_all().unwrap().is_empty());

    // A blank disk (for an install from an ISO): a dataset of its own with a sparse disk file.
    let mut blank = instance_record(Uuid::nil(), 8);
    blank.image = None;
    disks.create(&blank, None).unwrap();
    let path = disks.disks(&blank).unwrap().remove(0).path;
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() == 8 << 20 && bytes.iter().all(|b| *b == 0), "8 MiB of zeros");
    assert_eq!(disks.load_all().unwrap(), [blank.clone()]);
    disks.destroy(&blank.uuid).unwrap();
    assert!(disks.load_all().unwrap().is_empty());
    disks.destroy(&record.uuid).unwrap();
    f.storage.delete(&image.meta.uuid).unwrap();
}
