//! The image store: every image record held in memory (indexed by uuid and by `published_at`),
//! backed by one directory per image under `datadir`. Mutations are serialised and each one is
//! durable before it becomes visible; a crash at any point leaves every image either as it was
//! or fully updated (see `disk` for how).

pub mod disk;
pub mod upload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use md5::{Digest, Md5};
use sha1::Sha1;
use uuid::Uuid;

use crate::manifest::{format_timestamp, Image, ImageFile, ImageIcon};
use upload::StagedFile;

/// Store failures. They carry no HTTP notion; the HTTP layer maps them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image {0} not found")]
    NotFound(Uuid),
    #[error("image uuid \"{0}\" already exists")]
    Exists(Uuid),
    #[error("not enough space left in the data directory")]
    NoSpace(#[source] io::Error),
    #[error("storage I/O failed: {context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Classifies an I/O failure: a full disk is its own case.
    pub fn from_io(context: impl Into<String>, source: io::Error) -> Self {
        if disk::is_no_space(&source) {
            StoreError::NoSpace(source)
        } else {
            StoreError::Io { context: context.into(), source }
        }
    }
}

type PublishedKey = (i64, Uuid);

#[derive(Default)]
struct Index {
    by_uuid: HashMap<Uuid, Arc<Image>>,
    by_published: BTreeMap<PublishedKey, Arc<Image>>,
    /// Secondary indexes for the filters clients use most (`name=`, `owner=`), so that a
    /// filtered listing visits only the images that can match, however big the store.
    by_name: HashMap<String, BTreeSet<PublishedKey>>,
    by_owner: HashMap<String, BTreeSet<PublishedKey>>,
}

impl Index {
    fn insert(&mut self, image: Arc<Image>) {
        if let Some(old) = self.by_uuid.insert(image.uuid, image.clone()) {
            self.unlink(&old);
        }
        let key = (image.published_ms(), image.uuid);
        if let Some(name) = image.str_field("name") {
            self.by_name.entry(name.to_owned()).or_default().insert(key);
        }
        self.by_owner.entry(image.owner().to_owned()).or_default().insert(key);
        self.by_published.insert(key, image);
    }

    fn remove(&mut self, uuid: &Uuid) -> Option<Arc<Image>> {
        let old = self.by_uuid.remove(uuid)?;
        self.unlink(&old);
        Some(old)
    }

    /// Removes `old` from every index but `by_uuid`.
    fn unlink(&mut self, old: &Image) {
        let key = (old.published_ms(), old.uuid);
        self.by_published.remove(&key);
        if let Some(name) = old.str_field("name") {
            remove_from(&mut self.by_name, name, &key);
        }
        remove_from(&mut self.by_owner, old.owner(), &key);
    }

    /// The keys of images with this exact name and/or owner, whichever set is smaller;
    /// `None` when neither is asked for.
    fn narrowest(&self, narrow: &Narrow<'_>) -> Option<&BTreeSet<PublishedKey>> {
        static EMPTY: BTreeSet<PublishedKey> = BTreeSet::new();
        let name = narrow.name.map(|n| self.by_name.get(n).unwrap_or(&EMPTY));
        let owner = narrow.owner.map(|o| self.by_owner.get(o).unwrap_or(&EMPTY));
        match (name, owner) {
            (Some(a), Some(b)) => Some(if a.len() <= b.len() { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

fn remove_from(index: &mut HashMap<String, BTreeSet<PublishedKey>>, value: &str, key: &PublishedKey) {
    if let Some(keys) = index.get_mut(value) {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(value);
        }
    }
}

/// Where a listing starts, in `published_at` order.
#[derive(Debug, Clone, Copy)]
pub enum ScanFrom {
    Start,
    /// Images published at or after (ascending) / at or before (descending) this time.
    PublishedMs(i64),
}

/// Exact values a listing requires, which lets a scan skip every image without them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Narrow<'a> {
    pub name: Option<&'a str>,
    pub owner: Option<&'a str>,
}

/// The image store. Cheap to share behind an `Arc`.
pub struct Store {
    root: PathBuf,
    index: RwLock<Index>,
    /// Serialises read-modify-write cycles so that no update is lost.
    writer: tokio::sync::Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) the data directory, removes what interrupted writes left
    /// behind and loads every image record.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(|e| StoreError::from_io(format!("create {}", root.display()), e))?;
        let root =
            root.canonicalize().map_err(|e| StoreError::from_io(format!("resolve {}", root.display()), e))?;
        let mut index = Index::default();
        for path in disk::remove_transient(&root)
            .map_err(|e| StoreError::from_io(format!("clean {}", root.display()), e))?
        {
            tracing::info!(path = %path.display(), "removed leftover of an interrupted write");
        }
        let entries =
            fs::read_dir(&root).map_err(|e| StoreError::from_io(format!("read {}", root.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::from_io("read datadir", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(uuid) = Uuid::parse_str(&name) else { continue };
            if name != uuid.to_string() || !entry.path().is_dir() {
                continue;
            }
            match load_image_dir(&root, &entry.path(), uuid) {
                Ok(Some(image)) => index.insert(Arc::new(image)),
                Ok(None) => {}
                Err(error) => {
                    // Never delete what we cannot read: it may be an operator's data.
                    tracing::warn!(image = %uuid, %error, "skipping unreadable image record");
                }
            }
        }
        tracing::info!(images = index.by_uuid.len(), datadir = %root.display(), "store opened");
        Ok(Store { root, index: RwLock::new(index), writer: tokio::sync::Mutex::new(()) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn len(&self) -> usize {
        self.read_index().by_uuid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated (each update is
        // a pair of map operations on owned values), so a poisoned lock is still usable.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, uuid: &Uuid) -> Option<Arc<Image>> {
        self.read_index().by_uuid.get(uuid).cloned()
    }

    /// Visits images in `published_at` order (then uuid) until `visit` breaks.
    /// Visits images in `published_at` order from `from` until `visit` breaks. With a
    /// `narrow`, only images having that name/owner are visited (the caller still checks
    /// every filter: the narrowing is an optimisation, not a filter).
    pub fn scan(
        &self,
        from: ScanFrom,
        descending: bool,
        narrow: Narrow<'_>,
        mut visit: impl FnMut(&Arc<Image>) -> ControlFlow<()>,
    ) {
        let index = self.read_index();
        let bounds: (Bound<PublishedKey>, Bound<PublishedKey>) = match (from, descending) {
            (ScanFrom::Start, _) => (Bound::Unbounded, Bound::Unbounded),
            (ScanFrom::PublishedMs(ms), false) => (Bound::Included((ms, Uuid::nil())), Bound::Unbounded),
            (ScanFrom::PublishedMs(ms), true) => (Bound::Unbounded, Bound::Included((ms, Uuid::max()))),
        };
        let keys: Box<dyn DoubleEndedIterator<Item = &Arc<Image>>> = match index.narrowest(&narrow) {
            None => Box::new(index.by_published.range(bounds).map(|(_, image)| image)),
            Some(keys) => Box::new(keys.range(bounds).filter_map(|key| index.by_published.get(key))),
        };
        let mut images: Box<dyn Iterator<Item = &Arc<Image>>> =
            if descending { Box::new(keys.rev()) } else { keys };
        let _ = images.try_for_each(&mut visit);
    }

    /// Images whose `origin` is `uuid`.
    pub fn dependents(&self, uuid: &Uuid) -> Vec<Arc<Image>> {
        let uuid = uuid.to_string();
        let index = self.read_index();
        let mut found: Vec<_> =
            index.by_published.values().filter(|i| i.origin() == Some(uuid.as_str())).cloned().collect();
        found.sort_by_key(|i| i.uuid);
        found
    }

    fn image_dir(&self, uuid: &Uuid) -> PathBuf {
        self.root.join(uuid.to_string())
    }

    /// Path of a stored file of an image (file or icon).
    pub fn path_of(&self, uuid: &Uuid, name: &str) -> PathBuf {
        self.image_dir(uuid).join(name)
    }

    /// Adds a new image; fails if the uuid is taken. `check` runs under the write lock with the
    /// current store, for rules such as "the origin exists".
    pub async fn create<E: From<StoreError>>(
        &self,
        image: Image,
        check: impl FnOnce(&Store) -> Result<(), E>,
    ) -> Result<Arc<Image>, E> {
        let _guard = self.writer.lock().await;
        if self.get(&image.uuid).is_some() {
            return Err(StoreError::Exists(image.uuid).into());
        }
        check(self)?;
        let root = self.root.clone();
        let dir = self.image_dir(&image.uuid);
        let record = record_bytes(&image);
        blocking(move || {
            if dir.exists() {
                // Only an empty directory (a create that crashed before its record) may go;
                // one with content holds data start-up could not read: never destroy that.
                fs::remove_dir(&dir)
                    .map_err(|e| StoreError::from_io("reuse an image directory start-up skipped", e))?;
            }
            disk::create_image_dir(&root, &dir).map_err(|e| StoreError::from_io("create image dir", e))?;
            disk::write_file(&dir.join(disk::RECORD_NAME), &record).map_err(|e| {
                // No record, no image: take the directory back if it is empty (as start-up
                // would), so that a create refused on a full disk leaves nothing behind.
                let _ = fs::remove_dir(&dir);
                StoreError::from_io("write image record", e)
            })
        })
        .await?;
        let image = Arc::new(image);
        self.write_index().insert(image.clone());
        Ok(image)
    }

    /// Read-modify-write of one image: `change` edits a copy, which is then written durably
    /// and replaces the indexed one. Stored files the new record no longer names are removed.
    pub async fn update<E: From<StoreError>>(
        &self,
        uuid: &Uuid,
        change: impl FnOnce(&mut Image) -> Result<(), E>,
    ) -> Result<Arc<Image>, E> {
        let _guard = self.writer.lock().await;
        self.update_locked(uuid, change).await
    }

    async fn update_locked<E: From<StoreError>>(
        &self,
        uuid: &Uuid,
        change: impl FnOnce(&mut Image) -> Result<(), E>,
    ) -> Result<Arc<Image>, E> {
        let current = self.get(uuid).ok_or(StoreError::NotFound(*uuid))?;
        let mut next = Image::clone(&current);
        change(&mut next)?;
        if next == *current {
            return Ok(current);
        }
        let dir = self.image_dir(uuid);
        let record = record_bytes(&next);
        let stale: Vec<PathBuf> = stored_names(&current)
            .into_iter()
            .filter(|name| !stored_names(&next).contains(name))
            .map(|name| dir.join(name))
            .collect();
        blocking(move || {
            disk::write_file(&dir.join(disk::RECORD_NAME), &record)
                .map_err(|e| StoreError::from_io("write image record", e))?;
            for path in stale {
                if let Err(error) = fs::remove_file(&path) {
                    // Harmless: start-up removes unreferenced files.
                    tracing::warn!(path = %path.display(), error = %service_kit::ErrorChain(&error), "cannot remove replaced file");
                }
            }
            Ok(())
        })
        .await?;
        let next = Arc::new(next);
        self.write_index().insert(next.clone());
        Ok(next)
    }

    /// A temp file inside the image's directory for an upload to fill.
    pub async fn stage(&self, uuid: &Uuid) -> Result<tempfile::NamedTempFile, StoreError> {
        let (dir, uuid) = (self.image_dir(uuid), *uuid);
        blocking(move || {
            disk::temp_file(&dir).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::NotFound(uuid),
                _ => StoreError::from_io("create upload file", e),
            })
        })
        .await
    }

    /// Makes a staged upload the image's file. `check` runs under the write lock first (for
    /// "the image is not activated"); `set` records the file in the image.
    pub async fn commit_file<E: From<StoreError>>(
        &self,
        uuid: &Uuid,
        staged: StagedFile,
        check: impl FnOnce(&Image) -> Result<(), E>,
        set: impl FnOnce(&mut Image, ImageFile),
    ) -> Result<Arc<Image>, E> {
        let _guard = self.writer.lock().await;
        let current = self.get(uuid).ok_or(StoreError::NotFound(*uuid))?;
        check(&current)?;
        let name = disk::file_name(&staged.sha1);
        let target = self.path_of(uuid, &name);
        let StagedFile { temp, sha1, content_md5, size } = staged;
        let stored = target.clone();
        blocking(move || {
            disk::persist(temp, &target).map_err(|e| StoreError::from_io("store image file", e))
        })
        .await?;
        let referenced = current.file.as_ref().is_some_and(|f| f.path == name);
        let file = ImageFile {
            sha1,
            size,
            compression: crate::manifest::Compression::None,
            dataset_guid: None,
            content_md5,
            mtime: format_timestamp(chrono::Utc::now()),
            path: name,
        };
        let result = self
            .update_locked(uuid, |image| {
                set(image, file);
                Ok::<(), E>(())
            })
            .await;
        if result.is_err() && !referenced {
            // The record still names the old file: the new one would only fill the disk.
            let _ = fs::remove_file(&stored);
        }
        result
    }

    /// Stores icon bytes (small, bounded by the caller) and records them in the image.
    pub async fn commit_icon<E: From<StoreError>>(
        &self,
        uuid: &Uuid,
        bytes: bytes::Bytes,
        content_type: String,
    ) -> Result<Arc<Image>, E> {
        let _guard = self.writer.lock().await;
        if self.get(uuid).is_none() {
            return Err(StoreError::NotFound(*uuid).into());
        }
        let sha1 = hex::encode(Sha1::digest(&bytes));
        let content_md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes));
        let name = disk::icon_name(&sha1);
        let dir = self.image_dir(uuid);
        let size = bytes.len() as u64;
        let file_name = name.clone();
        blocking(move || {
            disk::write_file(&dir.join(&file_name), &bytes).map_err(|e| StoreError::from_io("store icon", e))
        })
        .await?;
        let icon = ImageIcon {
            sha1,
            size,
            content_type,
            content_md5,
            mtime: format_timestamp(chrono::Utc::now()),
            path: name,
        };
        self.update_locked(uuid, |image| {
            image.icon = Some(icon);
            Ok::<(), E>(())
        })
        .await
    }

    /// Deletes an image and its files. `check` runs under the write lock (dependent images).
    pub async fn delete<E: From<StoreError>>(
        &self,
        uuid: &Uuid,
        check: impl FnOnce(&Store, &Image) -> Result<(), E>,
    ) -> Result<(), E> {
        self.delete_or_update(uuid, |store, image| check(store, image).map(|()| None)).await.map(|_| ())
    }

    /// Under one hold of the write lock, `decide` either asks for the image's deletion (`None`)
    /// or returns the image to store instead (e.g. it only leaves one of its channels).
    pub async fn delete_or_update<E: From<StoreError>>(
        &self,
        uuid: &Uuid,
        decide: impl FnOnce(&Store, &Image) -> Result<Option<Image>, E>,
    ) -> Result<Option<Arc<Image>>, E> {
        let _guard = self.writer.lock().await;
        let current = self.get(uuid).ok_or(StoreError::NotFound(*uuid))?;
        if let Some(next) = decide(self, &current)? {
            return self
                .update_locked(uuid, move |image| {
                    *image = next;
                    Ok::<(), E>(())
                })
                .await
                .map(Some);
        }
        let root = self.root.clone();
        let dir = self.image_dir(uuid);
        let name = uuid.to_string();
        blocking(move || {
            disk::remove_image_dir(&root, &dir, &name).map_err(|e| StoreError::from_io("delete image", e))
        })
        .await?;
        self.write_index().remove(uuid);
        Ok(None)
    }
}

fn record_bytes(image: &Image) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&image.to_disk()).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

/// The file names inside an image directory that its record refers to.
fn stored_names(image: &Image) -> Vec<&str> {
    image.file.iter().map(|f| f.path.as_str()).chain(image.icon.iter().map(|i| i.path.as_str())).collect()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|join_error| {
        Err(StoreError::Io {
            context: "storage worker failed".into(),
            source: io::Error::other(join_error.to_string()),
        })
    })
}

/// Loads one image directory, cleaning what a crash left in it. `Ok(None)`: the directory was
/// an unfinished create and has been removed.
fn load_image_dir(root: &Path, dir: &Path, uuid: Uuid) -> Result<Option<Image>, String> {
    for path in disk::remove_transient(dir).map_err(|e| e.to_string())? {
        tracing::info!(path = %path.display(), "removed leftover of an interrupted write");
    }
    let record_path = dir.join(disk::RECORD_NAME);
    let text = match fs::read(&record_path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let is_empty = fs::read_dir(dir).map_err(|e| e.to_string())?.next().is_none();
            if is_empty {
                // The crash came between mkdir and the first record write.
                fs::remove_dir(dir).map_err(|e| e.to_string())?;
                let _ = disk::sync_dir(root);
                tracing::info!(image = %uuid, "removed an image directory left by an interrupted create");
                return Ok(None);
            }
            return Err(format!("{} is missing", record_path.display()));
        }
        Err(e) => return Err(e.to_string()),
    };
    let record: serde_json::Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    let mut image = Image::from_disk(record).map_err(|e| e.to_string())?;
    if image.uuid != uuid {
        return Err(format!("record uuid {} does not match its directory", image.uuid));
    }
    let upgraded = adopt_legacy_files(dir, &mut image)?;
    remove_unreferenced(dir, &image);
    if upgraded {
        disk::write_file(&dir.join(disk::RECORD_NAME), &record_bytes(&image)).map_err(|e| e.to_string())?;
    }
    Ok(Some(image))
}

/// Records written by the Go `imgapi` name no file and carry no MD5: find the file it wrote
/// (`image.bz2`, `image.gz` or `image`), measure it and complete the record. Returns whether
/// the record changed.
fn adopt_legacy_files(dir: &Path, image: &mut Image) -> Result<bool, String> {
    let Some(file) = image.file.as_mut() else { return Ok(false) };
    if !file.path.is_empty() && !file.content_md5.is_empty() {
        return Ok(false);
    }
    let name = ["image.bz2", "image.gz", "image"]
        .into_iter()
        .find(|n| dir.join(n).is_file())
        .ok_or_else(|| "legacy record without an image file".to_string())?;
    let path = dir.join(name);
    let mut reader = fs::File::open(&path).map_err(|e| e.to_string())?;
    let mut md5 = Md5::new();
    let size = io::copy(&mut reader, &mut md5).map_err(|e| e.to_string())?;
    if size != file.size {
        return Err(format!("{} is {size} bytes, the record says {}", path.display(), file.size));
    }
    let modified = fs::metadata(&path).and_then(|m| m.modified()).map_err(|e| e.to_string())?;
    file.path = name.to_string();
    file.content_md5 = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
    file.mtime = format_timestamp(modified.into());
    tracing::info!(image = %image.uuid, file = name, "adopted an image file written by the Go imgapi");
    Ok(true)
}

/// Removes stored files no record points to: the file half of an upload that crashed before
/// its record was written, or the old file of a replaced one.
fn remove_unreferenced(dir: &Path, image: &Image) {
    let referenced = stored_names(image);
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("file.") || name.starts_with("icon.");
        if ours && !referenced.contains(&name.as_str()) {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(image = %image.uuid, file = %name, "removed unreferenced file"),
                Err(error) => {
                    tracing::warn!(image = %image.uuid, file = %name, error = %service_kit::ErrorChain(&error), "cannot remove unreferenced file")
                }
            }
        }
    }
}
