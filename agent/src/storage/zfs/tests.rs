//! The zfs storages on recorded zfs runs (captured output in `tests/fixtures/zfs`).

use super::properties::{decode_value, encode_value};
use super::writer::SparseSink;
use super::*;
use crate::host::runner::{RecordingRunner, Reply};
use crate::host::zfs::Dialect;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/zfs");
const PARENT: &str = "tank/images";
const ZFS: &str = "/sbin/zfs";

fn uuid(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

fn meta(n: u8) -> ImageMeta {
    ImageMeta {
        uuid: uuid(n),
        name: "debian-12".into(),
        version: "20241122".into(),
        os: "linux".into(),
        image_type: "zvol".into(),
        origin: None,
        sha1: "0123456789abcdef0123456789abcdef01234567".into(),
        size: 1234,
        compression: "gzip".into(),
        image_size_mib: Some(1),
        source: "https://images.example.com".into(),
    }
}

struct Setup {
    runner: RecordingRunner,
    storage: ZfsStorage,
    zvols: tempfile::TempDir,
}

fn setup(mode: ZfsMode, dialect: Dialect) -> Setup {
    let runner = RecordingRunner::new();
    let zvols = tempfile::tempdir().unwrap();
    let zfs = Zfs::new(Arc::new(runner.clone()), ZFS, dialect);
    let storage = ZfsStorage::new(zfs, PARENT, mode)
        .with_zvol_dir(zvols.path())
        .with_device_wait(Duration::from_millis(200));
    Setup { runner, storage, zvols }
}

impl Setup {
    /// The file standing in for the zvol device udev would create.
    fn device(&self, n: u8) -> PathBuf {
        let path = self.zvols.path().join(PARENT).join(format!("{}-partial", uuid(n)));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        path
    }

    /// Commands after `skip`, without the program path.
    fn commands_from(&self, skip: usize) -> Vec<String> {
        self.runner.commands()[skip..]
            .iter()
            .map(|c| c.strip_prefix("/sbin/zfs ").unwrap().to_string())
            .collect()
    }
}

fn raw_disk() -> Vec<u8> {
    // Data, a run of zeros longer than a block (a hole), data again.
    let mut disk: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect();
    disk.extend(std::iter::repeat_n(0u8, 3 * BLOCK));
    disk.extend((0..50_000u32).map(|i| (i % 13) as u8 + 1));
    disk
}

fn stream(flags: u32, fromguid: u64) -> Vec<u8> {
    let mut s = vec![0u8; 8];
    s.extend_from_slice(&ZFS_STREAM_MAGIC);
    s.extend_from_slice(&1u64.to_le_bytes()); // versioninfo: a single stream
    s.extend_from_slice(&[0u8; 8]); // creation time
    s.extend_from_slice(&2u32.to_le_bytes()); // objset type
    s.extend_from_slice(&flags.to_le_bytes());
    s.extend_from_slice(&7u64.to_le_bytes()); // toguid
    s.extend_from_slice(&fromguid.to_le_bytes());
    s.extend_from_slice(&[0x55; 4000]);
    s
}

fn set_commands(dataset: &str, image: &LocalImage) -> Vec<String> {
    properties_of(&image.meta, image.content, image.content_size, &image.imported_at)
        .into_iter()
        .map(|(k, v)| format!("set {k}={v} {dataset}"))
        .collect()
}

#[test]
fn zvol_mode_writes_a_raw_disk_through_the_device_then_snapshots_and_renames() {
    let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
    let device = s.device(1);
    let mut writer = s.storage.begin(meta(1)).unwrap();
    let disk = raw_disk();
    for chunk in disk.chunks(7000) {
        writer.write_all(chunk).unwrap();
    }
    let image = writer.commit().unwrap();
    assert_eq!(image.content, ContentKind::RawDisk);
    assert_eq!(image.content_size, disk.len() as u64);
    assert_eq!(image.location, format!("{PARENT}/{}", uuid(1)));
    let partial = format!("{PARENT}/{}-partial", uuid(1));
    let mut expected = vec![
        format!("list -H -o name,type,origin -t filesystem,volume -d 1 {PARENT}"),
        format!("create -V 1M -o volmode=dev {partial}"),
    ];
    expected.extend(set_commands(&partial, &image));
    expected.push(format!("snapshot {partial}@final"));
    expected.push(format!("rename {partial} {PARENT}/{}", uuid(1)));
    assert_eq!(s.commands_from(0), expected);
    // A device keeps its size: the bytes are there, the zero run was skipped, not written.
    let written = std::fs::read(&device).unwrap();
    assert_eq!(&written[..], &disk[..written.len()]);
    assert_eq!(written.len(), disk.len());
}

#[test]
fn a_failed_snapshot_destroys_the_partial() {
    let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
    s.device(2);
    s.runner.expect("/sbin/zfs snapshot", Reply::Fail("cannot create snapshot: out of space\n".into()));
    let mut writer = s.storage.begin(meta(2)).unwrap();
    writer.write_all(&raw_disk()[..100_000]).unwrap();
    let err = writer.commit().unwrap_err();
    assert!(matches!(err, StorageError::NoSpace(_)), "{err:?}");
    let commands = s.commands_from(0);
    let partial = format!("{PARENT}/{}-partial", uuid(2));
    assert_eq!(commands.last().unwrap(), &format!("destroy -r {partial}"));
    assert!(!commands.iter().any(|c| c.starts_with("rename")));
}

#[test]
fn a_raw_disk_larger_than_image_size_fails_on_write_and_is_destroyed() {
    let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
    s.device(3);
    let mut writer = s.storage.begin(meta(3)).unwrap();
    writer.write_all(&vec![1u8; MIB as usize]).unwrap();
    let err = writer.write_all(b"one byte too many").unwrap_err();
    assert!(err.to_string().contains("larger than its image_size"), "{err}");
    assert!(matches!(writer.commit(), Err(StorageError::InvalidContent(_))));
    let commands = s.commands_from(0);
    assert_eq!(commands.iter().filter(|c| c.starts_with("destroy")).count(), 1, "{commands:?}");
    assert_eq!(commands.last().unwrap(), &format!("destroy -r {PARENT}/{}-partial", uuid(3)));
}

#[test]
fn zvol_mode_needs_image_size_and_openzfs_for_raw_disks() {
    let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
    let mut writer = s.storage.begin(ImageMeta { image_size_mib: None, ..meta(4) }).unwrap();
    assert!(writer.write_all(&raw_disk()).is_err());
    assert!(matches!(writer.commit(), Err(StorageError::Unsupported(_))));
    assert!(!s.runner.commands().iter().any(|c| c.contains("create") || c.contains("destroy")));

    let s = setup(ZfsMode::Zvol, Dialect::ZfsFuse);
    let mut writer = s.storage.begin(meta(4)).unwrap();
    assert!(writer.write_all(&raw_disk()).is_err());
    assert!(matches!(writer.commit(), Err(StorageError::Unsupported(m)) if m.contains("zvols")));
}

#[test]
fn the_zvol_device_must_appear() {
    let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
    let mut writer = s.storage.begin(meta(5)).unwrap();
    let err = writer.write_all(&raw_disk()).unwrap_err();
    assert!(err.to_string().contains("storage I/O failed"), "{err}");
    writer.abort();
    assert_eq!(s.commands_from(0).last().unwrap(), &format!("destroy -r {PARENT}/{}-partial", uuid(5)));
}

#[test]
fn a_stream_is_piped_to_receive_and_its_one_snapshot_becomes_final() {
    let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
    let partial = format!("{PARENT}/{}-partial", uuid(6));
    s.runner.expect(
        "/sbin/zfs list -H -o name,type,origin -t all -r",
        Reply::Ok(format!("{partial}\tvolume\t-\n{partial}@2024\tsnapshot\t-\n")),
    );
    let mut writer = s.storage.begin(meta(6)).unwrap();
    let bytes = stream(0, 0);
    // Byte by byte at first: detection must wait for the begin record.
    for b in &bytes[..100] {
        writer.write_all(std::slice::from_ref(b)).unwrap();
    }
    writer.write_all(&bytes[100..]).unwrap();
    let image = writer.commit().unwrap();
    assert_eq!(image.content, ContentKind::ZfsStream);
    assert_eq!(image.content_size, bytes.len() as u64);
    let commands = s.commands_from(1);
    assert_eq!(commands[0], format!("receive -u {partial}"));
    assert_eq!(s.runner.stdin_of(1), bytes);
    assert_eq!(commands[1], format!("list -H -o name,type,origin -t all -r {partial}"));
    assert_eq!(commands[2], format!("rename {partial}@2024 {partial}@final"));
    assert_eq!(commands[3..commands.len() - 1], set_commands(&partial, &image)[..]);
    assert_eq!(commands.last().unwrap(), &format!("rename {partial} {PARENT}/{}", uuid(6)));
}

#[test]
fn a_stream_with_two_snapshots_is_invalid_and_destroyed() {
    let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
    let partial = format!("{PARENT}/{}-partial", uuid(7));
    s.runner.expect(
        "/sbin/zfs list -H -o name,type,origin -t all -r",
        Reply::Ok(format!("{partial}\tvolume\t-\n{partial}@a\tsnapshot\t-\n{partial}@b\tsnapshot\t-\n")),
    );
    let mut writer = s.storage.begin(meta(7)).unwrap();
    writer.write_all(&stream(0, 0)).unwrap();
    let err = writer.commit().unwrap_err();
    assert!(matches!(&err, StorageError::InvalidContent(m) if m.contains("exactly one snapshot")), "{err}");
    assert_eq!(s.commands_from(0).last().unwrap(), &format!("destroy -r {partial}"));
}

#[test]
fn a_clone_of_the_wrong_snapshot_is_invalid() {
    let s = setup(ZfsMode::Zvol, Dialect::OpenZfs);
    let partial = format!("{PARENT}/{}-partial", uuid(8));
    s.runner.expect(
        "/sbin/zfs list -H -o name,type,origin -t all -r",
        Reply::Ok(format!("{partial}\tvolume\ttank/other@final\n{partial}@final\tsnapshot\t-\n")),
    );
    let origin_props = format!(
        "{PARENT}/{o}\timgagent:uuid\t{o}\tlocal\n{PARENT}/{o}\timgagent:size\t1\tlocal\n\
         {PARENT}/{o}\timgagent:content\tzfs-stream\tlocal\n{PARENT}/{o}\timgagent:content-size\t1\tlocal\n\
         {PARENT}/{o}\timgagent:imported-at\t2024-11-22T00:00:00Z\tlocal\n",
        o = uuid(9)
    );
    s.runner.expect("/sbin/zfs get", Reply::Ok(origin_props));
    let mut writer = s.storage.begin(ImageMeta { origin: Some(uuid(9)), ..meta(8) }).unwrap();
    writer.write_all(&stream(1, 42)).unwrap();
    let err = writer.commit().unwrap_err();
    assert!(matches!(&err, StorageError::InvalidContent(m) if m.contains("tank/other@final")), "{err}");
    assert_eq!(s.commands_from(0).last().unwrap(), &format!("destroy -r {partial}"));
}

#[test]
fn incremental_streams_that_zfs_would_misplace_are_refused_before_receive() {
    let s = setup(ZfsMode::Files, Dialect::ZfsFuse);
    let mut writer = s.storage.begin(meta(10)).unwrap();
    // Not a clone stream (flags 0) but incremental: zfs-fuse would apply it to the dataset
    // holding the from-snapshot.
    assert!(writer.write_all(&stream(0, 42)).is_err());
    assert!(matches!(writer.commit(), Err(StorageError::InvalidContent(_))));
    // A clone stream for an image without origin.
    let mut writer = s.storage.begin(meta(10)).unwrap();
    assert!(writer.write_all(&stream(1, 42)).is_err());
    writer.abort();
    assert!(!s.runner.commands().iter().any(|c| c.contains("receive")), "{:?}", s.runner.commands());
}

#[test]
fn a_failing_receive_reports_zfs_and_destroys_the_partial() {
    let s = setup(ZfsMode::Files, Dialect::OpenZfs);
    s.runner.expect(
        "/sbin/zfs receive",
        Reply::Fail("cannot receive new filesystem stream: checksum mismatch or incomplete stream\n".into()),
    );
    let mut writer = s.storage.begin(meta(11)).unwrap();
    writer.write_all(&stream(0, 0)).unwrap();
    let err = writer.commit().unwrap_err();
    assert!(matches!(&err, StorageError::InvalidContent(m) if m.contains("incomplete stream")), "{err}");
    assert_eq!(s.commands_from(0).last().unwrap(), &format!("destroy -r {PARENT}/{}-partial", uuid(11)));
}

#[test]
fn begin_checks_the_image_its_origin_and_stale_partials() {
    let s = setup(ZfsMode::Files, Dialect::OpenZfs);
    let listing =
        format!("{PARENT}/{}\tfilesystem\t-\n{PARENT}/{}-partial\tfilesystem\t-\n", uuid(12), uuid(13));
    s.runner.expect("/sbin/zfs list", Reply::Ok(listing.clone()));
    assert!(matches!(s.storage.begin(meta(12)), Err(StorageError::AlreadyExists(u)) if u == uuid(12)));

    s.runner.expect("/sbin/zfs list", Reply::Ok(listing.clone()));
    let child = ImageMeta { origin: Some(uuid(14)), ..meta(13) };
    assert!(matches!(s.storage.begin(child), Err(StorageError::MissingOrigin(u)) if u == uuid(14)));

    let before = s.runner.commands().len();
    s.runner.expect("/sbin/zfs list", Reply::Ok(listing));
    let writer = s.storage.begin(meta(13)).unwrap();
    // A second import of the same uuid in this process must not destroy the first's partial.
    assert!(matches!(s.storage.begin(meta(13)), Err(StorageError::AlreadyExists(_))));
    drop(writer);
    let commands = s.commands_from(before);
    assert_eq!(commands[1], format!("destroy -r {PARENT}/{}-partial", uuid(13)));
    // Dropped before any byte: nothing was created, nothing to destroy.
    assert_eq!(commands.iter().filter(|c| c.starts_with("destroy")).count(), 1, "{commands:?}");
}

#[test]
fn begin_creates_a_missing_parent() {
    let s = setup(ZfsMode::Files, Dialect::OpenZfs);
    let missing = format!("cannot open '{PARENT}': dataset does not exist\n");
    s.runner.expect("/sbin/zfs list", Reply::Fail(missing));
    drop(s.storage.begin(meta(15)).unwrap());
    assert_eq!(s.commands_from(1), [format!("create -p {PARENT}")]);
}

#[test]
fn lists_images_from_one_zfs_get_skipping_partials_and_strangers() {
    let s = setup(ZfsMode::Files, Dialect::ZfsFuse);
    let text = std::fs::read_to_string(format!("{FIXTURES}/get-images-zfs-fuse.txt")).unwrap();
    s.runner.expect("/sbin/zfs get", Reply::Ok(text.clone()));
    let images = s.storage.list().unwrap();
    assert_eq!(
        s.runner.commands()[0],
        format!(
            "/sbin/zfs get -H -p -o name,property,value,source -d 1 -s local {} {PARENT}",
            property::ALL.join(",")
        )
    );
    // The fixture was captured under another parent: nothing matches this one.
    assert!(images.is_empty());

    let parent = text.lines().next().unwrap().split('\t').next().unwrap();
    let parent = &parent[..parent.rfind('/').unwrap()];
    let zfs = Zfs::new(Arc::new(s.runner.clone()), ZFS, Dialect::ZfsFuse);
    let storage = ZfsStorage::new(zfs, parent, ZfsMode::Files);
    s.runner.expect("/sbin/zfs get", Reply::Ok(text));
    let images = storage.list().unwrap();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(images.windows(2).all(|w| w[0].meta.uuid < w[1].meta.uuid));
    let child = images.iter().find(|i| i.meta.origin.is_some()).unwrap();
    let base = images.iter().find(|i| i.meta.origin.is_none()).unwrap();
    assert_eq!(child.meta.origin, Some(base.meta.uuid));
    assert_eq!(base.content, ContentKind::RawDisk);
    assert_eq!(child.content, ContentKind::ZfsStream);
    assert!(images.iter().all(|i| !i.location.ends_with("-partial")));
    assert_eq!(base.meta.name, "name with\ttab, 100% and\nnewline");
}

#[test]
fn get_of_a_missing_image_is_none() {
    let s = setup(ZfsMode::Files, Dialect::OpenZfs);
    s.runner.expect("/sbin/zfs get", Reply::Fail("cannot open 'x': dataset does not exist\n".into()));
    assert!(s.storage.get(&uuid(16)).unwrap().is_none());
    // Exists but has no properties of ours.
    assert!(s.storage.get(&uuid(16)).unwrap().is_none());
}

fn image_listing(images: &[(u8, Option<u8>)]) -> String {
    let mut out = String::new();
    for (n, origin) in images {
        let image = LocalImage {
            meta: ImageMeta { origin: origin.map(uuid), ..meta(*n) },
            content: ContentKind::ZfsStream,
            location: String::new(),
            content_size: 10,
            imported_at: "2024-11-22T00:00:00Z".into(),
        };
        for (k, v) in properties_of(&image.meta, image.content, 10, &image.imported_at) {
            out.push_str(&format!("{PARENT}/{}\t{k}\t{v}\tlocal\n", uuid(*n)));
        }
    }
    out
}

#[test]
fn delete_is_refused_while_an_image_or_a_clone_uses_it() {
    let s = setup(ZfsMode::Files, Dialect::OpenZfs);
    s.runner.expect("/sbin/zfs get", Reply::Ok(image_listing(&[(20, None), (21, Some(20))])));
    match s.storage.delete(&uuid(20)) {
        Err(StorageError::InUse { users, .. }) => assert_eq!(users, [format!("{PARENT}/{}", uuid(21))]),
        other => panic!("{other:?}"),
    }
    assert!(!s.runner.commands().iter().any(|c| c.contains("destroy")));

    s.runner.expect("/sbin/zfs get", Reply::Ok(image_listing(&[(20, None)])));
    s.runner.expect(
        "/sbin/zfs destroy",
        Reply::Fail(
            std::fs::read_to_string(format!("{FIXTURES}/stderr-destroy-clones-zfs-fuse.txt")).unwrap(),
        ),
    );
    match s.storage.delete(&uuid(20)) {
        Err(StorageError::InUse { users, .. }) => assert_eq!(users, ["agenttest/exp/b"]),
        other => panic!("{other:?}"),
    }

    s.runner.expect("/sbin/zfs get", Reply::Ok(image_listing(&[(20, None)])));
    s.storage.delete(&uuid(20)).unwrap();
    assert_eq!(s.runner.commands().last().unwrap(), &format!("/sbin/zfs destroy -r {PARENT}/{}", uuid(20)));
    assert!(matches!(s.storage.delete(&uuid(20)), Err(StorageError::NotFound(_))));
}

#[test]
fn recover_destroys_partials_only() {
    let s = setup(ZfsMode::Files, Dialect::OpenZfs);
    s.runner.expect(
        "/sbin/zfs list",
        Reply::Ok(format!(
            "{PARENT}\tfilesystem\t-\n{PARENT}/{a}\tfilesystem\t-\n{PARENT}/{a}-partial\tfilesystem\t-\n\
             {PARENT}/junk-partial\tvolume\t-\n",
            a = uuid(22)
        )),
    );
    let removed = s.storage.recover().unwrap();
    assert_eq!(removed, [format!("{PARENT}/{}-partial", uuid(22)), format!("{PARENT}/junk-partial")]);
    assert_eq!(
        s.commands_from(1),
        [format!("destroy -r {PARENT}/{}-partial", uuid(22)), format!("destroy -r {PARENT}/junk-partial")]
    );
}

#[test]
fn property_values_round_trip_and_are_checked() {
    for text in ["plain", "a\tb\nc\r%41%", "-", "ünï ✓", ""] {
        assert_eq!(decode_value(&encode_value(text)), text);
        assert!(!encode_value(text).contains(['\t', '\n']));
    }
    assert_eq!(encode_value("100%\n"), "100%25%0A");
    assert_eq!(decode_value("%zz%4"), "%zz%4");
    let long = ImageMeta { source: "x".repeat(MAX_VALUE_LEN + 1), ..meta(23) };
    let s = setup(ZfsMode::Files, Dialect::OpenZfs);
    assert!(matches!(s.storage.begin(long), Err(StorageError::Unsupported(_))));
    assert!(s.runner.commands().is_empty());
}

#[test]
fn properties_missing_or_wrong_make_no_image() {
    let image = |props: &[(&str, &str)]| {
        let map = props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        image_from_properties(&format!("{PARENT}/{}", uuid(24)), &map)
    };
    let u = uuid(24).to_string();
    let full = [
        (property::UUID, u.as_str()),
        (property::SIZE, "5"),
        (property::CONTENT, "raw-disk"),
        (property::CONTENT_SIZE, "9"),
        (property::IMPORTED_AT, "2024-11-22T00:00:00Z"),
    ];
    let ok = image(&full).unwrap();
    assert_eq!((ok.meta.name.as_str(), ok.meta.origin, ok.meta.image_size_mib), ("", None, None));
    for drop in 0..full.len() {
        let fewer: Vec<_> = full.iter().enumerate().filter(|(i, _)| *i != drop).map(|(_, p)| *p).collect();
        assert!(image(&fewer).is_err(), "without {}", full[drop].0);
    }
    let other = uuid(25).to_string();
    let mut wrong = full;
    wrong[0] = (property::UUID, other.as_str());
    assert!(image(&wrong).is_err());
    let mut bad = full.to_vec();
    bad.push((property::ORIGIN, "not-a-uuid"));
    assert!(image(&bad).is_err());
}

#[test]
fn sparse_sink_skips_zero_blocks_and_keeps_the_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk");
    let file = File::create(&path).unwrap();
    let mut sink = SparseSink::new(file, path.clone(), None, false);
    let mut disk = vec![0u8; BLOCK + 10];
    disk.extend_from_slice(&[9u8; 100]);
    disk.extend(vec![0u8; 2 * BLOCK + 5]);
    for chunk in disk.chunks(BLOCK / 3) {
        sink.write(chunk).unwrap();
    }
    sink.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), disk);
}
