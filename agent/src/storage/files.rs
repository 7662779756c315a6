//! The `files` backend, for hosts without ZFS: each image is a read-only raw disk
//! `<dir>/<uuid>.raw` with its metadata in `<dir>/<uuid>.json`. An import writes
//! `<dir>/.partial-<uuid>-*`; commit syncs it, makes it read-only and renames it, then writes the
//! metadata (atomically): an image exists only once its `.json` does.

use std::fs::{self};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use service_kit::durable;
use service_kit::sparse::{write_sparse, Writeback};
use uuid::Uuid;

use super::{
    detect_content, ContentKind, ImageMeta, ImageStorage, ImageWriter, LocalImage, StorageError, DETECT_LEN,
};

const PARTIAL_PREFIX: &str = ".partial-";

/// Writeback is started in the background every this many bytes, so that the fsync at commit
/// has little left to do and the disk works while the download and decompression go on.
const SYNC_EVERY: u64 = 64 << 20;

pub struct FilesStorage {
    dir: PathBuf,
}

impl FilesStorage {
    /// Opens (creating if needed) the image directory.
    pub fn new(dir: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io(format!("create {}", dir.display()), e))?;
        Ok(FilesStorage { dir: dir.to_owned() })
    }

    fn raw_path(&self, uuid: &Uuid) -> PathBuf {
        self.dir.join(format!("{uuid}.raw"))
    }

    fn meta_path(&self, uuid: &Uuid) -> PathBuf {
        self.dir.join(format!("{uuid}.json"))
    }

    fn read_meta(&self, path: &Path) -> Result<LocalImage, StorageError> {
        let text = fs::read(path).map_err(|e| StorageError::io(format!("read {}", path.display()), e))?;
        serde_json::from_slice(&text)
            .map_err(|e| StorageError::Parse { what: path.display().to_string(), message: e.to_string() })
    }
}

impl ImageStorage for FilesStorage {
    fn kind(&self) -> &'static str {
        "files"
    }

    fn list(&self) -> Result<Vec<LocalImage>, StorageError> {
        let mut images = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| StorageError::io("list images", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list images", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(uuid) = name.strip_suffix(".json").and_then(|u| Uuid::parse_str(u).ok()) else {
                continue;
            };
            if self.raw_path(&uuid).exists() {
                images.push(self.read_meta(&entry.path())?);
            }
        }
        images.sort_by_key(|i| i.meta.uuid);
        Ok(images)
    }

    fn get(&self, uuid: &Uuid) -> Result<Option<LocalImage>, StorageError> {
        let path = self.meta_path(uuid);
        if !path.exists() || !self.raw_path(uuid).exists() {
            return Ok(None);
        }
        self.read_meta(&path).map(Some)
    }

    fn begin(&self, meta: ImageMeta) -> Result<Box<dyn ImageWriter>, StorageError> {
        if self.get(&meta.uuid)?.is_some() {
            return Err(StorageError::AlreadyExists(meta.uuid));
        }
        if let Some(origin) = meta.origin {
            if self.get(&origin)?.is_none() {
                return Err(StorageError::MissingOrigin(origin));
            }
        }
        let temp = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{}-", meta.uuid))
            .tempfile_in(&self.dir)
            .map_err(|e| StorageError::io("create the partial image", e))?;
        let writeback = Writeback::start(temp.as_file(), "import-sync", SYNC_EVERY)
            .map_err(|e| StorageError::io("start the writeback thread", e))?;
        Ok(Box::new(FilesWriter {
            dir: self.dir.clone(),
            meta,
            temp: Some(temp),
            head: Vec::with_capacity(DETECT_LEN),
            written: 0,
            writeback: Some(writeback),
        }))
    }

    fn delete(&self, uuid: &Uuid) -> Result<(), StorageError> {
        if self.get(uuid)?.is_none() {
            return Err(StorageError::NotFound(*uuid));
        }
        let users: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|i| i.meta.origin == Some(*uuid))
            .map(|i| format!("image {}", i.meta.uuid))
            .collect();
        if !users.is_empty() {
            return Err(StorageError::InUse { uuid: *uuid, users });
        }
        // Metadata first: from then on the image is gone, even if removing the disk fails.
        fs::remove_file(self.meta_path(uuid)).map_err(|e| StorageError::io("delete image metadata", e))?;
        let _ = durable::sync_dir(&self.dir);
        fs::remove_file(self.raw_path(uuid)).map_err(|e| StorageError::io("delete image file", e))?;
        Ok(())
    }

    fn free_bytes(&self) -> Result<u64, StorageError> {
        let stats = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| StorageError::io("measure the image directory", e.into()))?;
        Ok((stats.blocks_available() as u64).saturating_mul(stats.fragment_size() as u64))
    }

    fn recover(&self) -> Result<Vec<String>, StorageError> {
        let mut removed = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| StorageError::io("scan images", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("scan images", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let orphan_raw = name
                .strip_suffix(".raw")
                .and_then(|u| Uuid::parse_str(u).ok())
                .is_some_and(|u| !self.meta_path(&u).exists());
            let temp_meta = name.starts_with(durable::TEMP_PREFIX);
            if name.starts_with(PARTIAL_PREFIX) || orphan_raw || temp_meta {
                fs::remove_file(entry.path()).map_err(|e| StorageError::io(format!("remove {name}"), e))?;
                removed.push(entry.path().display().to_string());
            }
        }
        Ok(removed)
    }
}

struct FilesWriter {
    dir: PathBuf,
    meta: ImageMeta,
    temp: Option<tempfile::NamedTempFile>,
    /// The first bytes, kept to check what the image is before anything is committed.
    head: Vec<u8>,
    /// Logical size so far (holes included).
    written: u64,
    writeback: Option<Writeback>,
}

impl Write for FilesWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.head.len() < DETECT_LEN {
            let take = (DETECT_LEN - self.head.len()).min(buf.len());
            self.head.extend_from_slice(&buf[..take]);
            if self.head.len() >= DETECT_LEN && detect_content(&self.head) == ContentKind::ZfsStream {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "this is a ZFS send stream; the files backend stores raw disk images only",
                ));
            }
        }
        let temp = self.temp.as_mut().ok_or_else(|| io::Error::other("writer already finished"))?;
        let done = write_sparse(temp.as_file(), buf)?;
        self.written += buf.len() as u64;
        if let Some(writeback) = &mut self.writeback {
            writeback.wrote(done.written);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.as_mut().map_or(Ok(()), |t| t.flush())
    }
}

impl ImageWriter for FilesWriter {
    fn commit(mut self: Box<Self>) -> Result<LocalImage, StorageError> {
        if detect_content(&self.head) == ContentKind::ZfsStream {
            return Err(StorageError::Unsupported(
                "ZFS send streams need the zfs or zfs-files backend".into(),
            ));
        }
        let temp = self.temp.take().expect("commit runs once");
        let uuid = self.meta.uuid;
        if let Some(writeback) = self.writeback.take() {
            writeback.stop().map_err(|e| StorageError::io("sync the image", e))?;
        }
        // Trailing holes: the size comes from the length, not from the last write.
        temp.as_file().set_len(self.written).map_err(|e| StorageError::io("size the image", e))?;
        temp.as_file().sync_all().map_err(|e| StorageError::io("sync the image", e))?;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(|e| StorageError::io("make the image read-only", e))?;
        let raw = self.dir.join(format!("{uuid}.raw"));
        temp.persist(&raw).map_err(|e| StorageError::io("store the image", e.error))?;
        let image = LocalImage {
            meta: self.meta.clone(),
            content: ContentKind::RawDisk,
            location: raw.display().to_string(),
            content_size: self.written,
            imported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let meta = serde_json::to_vec_pretty(&image).expect("image metadata serialises");
        if let Err(e) = durable::write_file(&self.dir.join(format!("{uuid}.json")), &meta) {
            let _ = fs::remove_file(&raw);
            return Err(StorageError::io("store the image metadata", e));
        }
        Ok(image)
    }

    fn abort(mut self: Box<Self>) {
        if let Some(writeback) = self.writeback.take() {
            let _ = writeback.stop();
        }
        // Dropping the temp file deletes it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ZFS_STREAM_MAGIC;

    fn meta(uuid: Uuid, origin: Option<Uuid>) -> ImageMeta {
        ImageMeta {
            uuid,
            name: "disk".into(),
            version: "1".into(),
            os: "linux".into(),
            image_type: "zvol".into(),
            origin,
            sha1: "0".repeat(40),
            size: 1,
            compression: "none".into(),
            image_size_mib: None,
            source: "http://127.0.0.1:1".into(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        n.sort();
        n
    }

    #[test]
    fn zero_runs_become_holes_and_content_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FilesStorage::new(dir.path()).unwrap();
        let uuid = Uuid::new_v4();
        let mut data = vec![0u8; 5 << 20];
        data[..512].fill(0xab);
        data[3 << 20..(3 << 20) + 100].fill(7);
        // Ends in zeros: the size must still be exact.
        let mut writer = storage.begin(meta(uuid, None)).unwrap();
        for chunk in data.chunks(1 << 20) {
            writer.write_all(chunk).unwrap();
        }
        let image = writer.commit().unwrap();
        assert_eq!(image.content_size, data.len() as u64);
        assert_eq!(fs::read(&image.location).unwrap(), data);
        let allocated = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(&image.location).unwrap().blocks() * 512
        };
        assert!(allocated < 1 << 20, "zeros were written out: {allocated} bytes allocated");
        assert_eq!(storage.list().unwrap(), vec![image]);
    }

    #[test]
    fn zfs_streams_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FilesStorage::new(dir.path()).unwrap();
        let mut stream = vec![0u8; 8];
        stream.extend_from_slice(&ZFS_STREAM_MAGIC);
        stream.extend_from_slice(&[1u8; 100]);
        let mut writer = storage.begin(meta(Uuid::new_v4(), None)).unwrap();
        assert!(writer.write_all(&stream).is_err());
        writer.abort();
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn recover_removes_partials_and_orphans_but_keeps_images() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FilesStorage::new(dir.path()).unwrap();
        let kept = Uuid::new_v4();
        let mut writer = storage.begin(meta(kept, None)).unwrap();
        writer.write_all(b"disk").unwrap();
        writer.commit().unwrap();
        // What a killed agent leaves: a partial, a disk without metadata, a metadata temp file.
        let unfinished = storage.begin(meta(Uuid::new_v4(), None)).unwrap();
        std::mem::forget(unfinished);
        fs::write(dir.path().join(format!("{}.raw", Uuid::new_v4())), b"orphan").unwrap();
        fs::write(dir.path().join(".tmp-abc"), b"{").unwrap();
        assert_eq!(storage.recover().unwrap().len(), 3);
        assert_eq!(names(dir.path()), [format!("{kept}.json"), format!("{kept}.raw")]);
        assert_eq!(storage.list().unwrap().len(), 1);
    }

    #[test]
    fn origins_must_be_present_and_protect_children() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FilesStorage::new(dir.path()).unwrap();
        let (base, child) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(matches!(storage.begin(meta(child, Some(base))), Err(StorageError::MissingOrigin(_))));
        for (uuid, origin) in [(base, None), (child, Some(base))] {
            let mut w = storage.begin(meta(uuid, origin)).unwrap();
            w.write_all(b"x").unwrap();
            w.commit().unwrap();
        }
        assert!(matches!(storage.begin(meta(base, None)), Err(StorageError::AlreadyExists(_))));
        assert!(matches!(storage.delete(&base), Err(StorageError::InUse { .. })));
        storage.delete(&child).unwrap();
        storage.delete(&base).unwrap();
        assert!(matches!(storage.delete(&base), Err(StorageError::NotFound(_))));
    }
}
