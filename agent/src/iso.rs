//! Installer ISOs on this host: `<dir>/<name>` with a `<name>.json` record (size, SHA-256,
//! where it came from), fetched from a URL in the background (progress kept, checksum
//! checked) or uploaded, renamed and removed. Every write goes to a temp file in the same
//! directory and is renamed into place once complete and synced: a crash leaves no half ISO.
//!
//! Names are one name space under one lock: an upload or a fetch *claims* its name before a
//! byte arrives (a second one of the same name is refused at once, and cannot touch the first
//! one's file or record), a rename never replaces an ISO (a hard link, which fails on an
//! existing name), and renames, deletes and the instance changes that attach an ISO
//! ([`IsoStore::while_present`]) see each other whole, so that an attached ISO cannot go.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use service_kit::{durable, lock};

use crate::error_code::ErrorCode;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("ISO {0:?} does not exist")]
    NotFound(String),
    #[error("ISO {0:?} already exists")]
    Exists(String),
    #[error("ISO {0:?} is being uploaded or fetched")]
    Arriving(String),
    #[error("ISO {iso:?} is attached to instances {instances:?}")]
    InUse { iso: String, instances: Vec<uuid::Uuid> },
    #[error("{0}")]
    Invalid(String),
    #[error("the download failed: {0}")]
    Download(String),
    #[error("checksum mismatch: expected sha256 {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    #[error("ISO storage: {context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl IsoError {
    pub fn code(&self) -> ErrorCode {
        match self {
            IsoError::NotFound(_) => ErrorCode::IsoNotFound,
            IsoError::Exists(_) | IsoError::Arriving(_) => ErrorCode::IsoExists,
            IsoError::InUse { .. } => ErrorCode::IsoInUse,
            IsoError::Invalid(_) => ErrorCode::InvalidParameter,
            IsoError::Checksum { .. } => ErrorCode::ChecksumMismatch,
            IsoError::Download(_) => ErrorCode::DownloadFailed,
            IsoError::Io { source, .. } if durable::is_no_space(source) => ErrorCode::InsufficientStorage,
            IsoError::Io { .. } => ErrorCode::StorageError,
        }
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> IsoError {
    let context = context.into();
    move |source| IsoError::Io { context, source }
}

/// An ISO as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IsoInfo {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// The URL it was fetched from (`None`: uploaded).
    #[serde(default)]
    pub source: Option<String>,
    pub added_at: String,
}

/// A background fetch, as `GET /isos/fetches` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FetchStatus {
    pub name: String,
    pub url: String,
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    pub bytes: u64,
    /// From the server's Content-Length, when it sent one.
    pub total: Option<u64>,
    pub error: Option<String>,
}

/// Names are file names in one directory: no separators, no leading dot (temp files), no
/// `.json` (records).
pub fn check_name(name: &str) -> Result<(), IsoError> {
    let ok = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        && !name.starts_with('.')
        && !name.ends_with(".json")
        // `GET /isos/fetches` is the list of fetches.
        && name != "fetches";
    if ok {
        Ok(())
    } else {
        Err(IsoError::Invalid(format!(
            "ISO name {name:?} must be 1 to 128 of A-Z a-z 0-9 . _ - +, not start with a dot, not end in .json"
        )))
    }
}

fn check_sha256(sha256: &str) -> Result<String, IsoError> {
    let lower = sha256.to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(IsoError::Invalid(format!("sha256 {sha256:?} is not 64 hex digits")))
    }
}

pub struct IsoStore {
    dir: PathBuf,
    fetches: Mutex<BTreeMap<String, FetchStatus>>,
    /// The name space's lock, and the names claimed by uploads and fetches still arriving.
    names: Arc<Mutex<BTreeSet<String>>>,
}

/// A name taken by an upload or a fetch until its ISO is in place or it failed.
pub struct Claim {
    names: Arc<Mutex<BTreeSet<String>>>,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.names).remove(&self.name);
    }
}

/// Who has an ISO attached: the instance manager answers, under the name space's lock.
pub type Users<'a> = &'a dyn Fn(&str) -> Vec<uuid::Uuid>;

impl IsoStore {
    /// Opens the directory, removing what interrupted writes left.
    pub fn open(dir: &Path) -> Result<Arc<Self>, IsoError> {
        fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
        for entry in fs::read_dir(dir).map_err(io_error(format!("read {}", dir.display())))? {
            let entry = entry.map_err(io_error("read the ISO directory"))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Arc::new(IsoStore {
            dir: dir.to_owned(),
            fetches: Mutex::new(BTreeMap::new()),
            names: Arc::default(),
        }))
    }

    /// Takes `name` for an ISO about to arrive: refused while an ISO or another arrival has it.
    pub fn claim(&self, name: &str) -> Result<Claim, IsoError> {
        check_name(name)?;
        let mut names = lock(&self.names);
        if self.dir.join(name).exists() {
            return Err(IsoError::Exists(name.to_string()));
        }
        if !names.insert(name.to_string()) {
            return Err(IsoError::Arriving(name.to_string()));
        }
        Ok(Claim { names: self.names.clone(), name: name.to_string() })
    }

    /// Runs `change` (an instance attaching the ISO `name`, or detaching with `None`) while
    /// `name` exists and no rename or delete can run.
    pub fn while_present<T, E: From<IsoError>>(
        &self,
        name: Option<&str>,
        change: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let _names = lock(&self.names);
        if let Some(name) = name {
            self.path(name)?;
        }
        change()
    }

    /// The path an instance's CD drive opens.
    pub fn path(&self, name: &str) -> Result<PathBuf, IsoError> {
        check_name(name)?;
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(IsoError::NotFound(name.to_string()))
        }
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn get(&self, name: &str) -> Result<IsoInfo, IsoError> {
        self.path(name)?;
        let text =
            fs::read(self.record_path(name)).map_err(io_error(format!("read the record of {name}")))?;
        serde_json::from_slice(&text).map_err(|e| IsoError::Invalid(format!("the record of {name}: {e}")))
    }

    pub fn list(&self) -> Result<Vec<IsoInfo>, IsoError> {
        let mut list = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("read the ISO directory"))? {
            let name =
                entry.map_err(io_error("read the ISO directory"))?.file_name().to_string_lossy().into_owned();
            if check_name(&name).is_ok() {
                if let Ok(info) = self.get(&name) {
                    list.push(info);
                }
            }
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    /// Stores what `reader` yields as `name`, checking `sha256` when given.
    pub fn add(
        &self,
        name: &str,
        reader: &mut dyn Read,
        sha256: Option<&str>,
        source: Option<&str>,
        progress: impl FnMut(u64),
    ) -> Result<IsoInfo, IsoError> {
        let expected = sha256.map(check_sha256).transpose()?;
        let claim = self.claim(name)?;
        self.add_claimed(&claim, reader, expected, source, progress)
    }

    /// [`IsoStore::add`] for a name already claimed.
    fn add_claimed(
        &self,
        claim: &Claim,
        reader: &mut dyn Read,
        expected: Option<String>,
        source: Option<&str>,
        mut progress: impl FnMut(u64),
    ) -> Result<IsoInfo, IsoError> {
        let name = claim.name.as_str();
        let mut temp = durable::temp_file(&self.dir).map_err(io_error("create a temp file"))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(IsoError::Download(e.to_string())),
            };
            hasher.update(&buffer[..n]);
            temp.write_all(&buffer[..n]).map_err(io_error("write the ISO"))?;
            size += n as u64;
            progress(size);
        }
        let actual = hex::encode(hasher.finalize());
        if let Some(expected) = expected {
            if expected != actual {
                return Err(IsoError::Checksum { expected, actual });
            }
        }
        temp.as_file().sync_all().map_err(io_error("sync the ISO"))?;
        let info = IsoInfo {
            name: name.to_string(),
            size,
            sha256: actual,
            source: source.map(str::to_owned),
            added_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        // The record first: an ISO file is only listed once its record exists. Both are this
        // claim's: no other upload, fetch or rename can take the name meanwhile.
        let _names = lock(&self.names);
        write_record(&self.record_path(name), &info)?;
        durable::persist_new(temp, &self.dir.join(name)).map_err(|e| {
            let _ = fs::remove_file(self.record_path(name));
            match e.kind() {
                io::ErrorKind::AlreadyExists => IsoError::Exists(name.to_string()),
                _ => IsoError::Io { context: format!("put {name} in place"), source: e },
            }
        })?;
        Ok(info)
    }

    /// Starts fetching `url` as `name` in the background; [`IsoStore::fetches`] shows progress.
    pub fn fetch(
        self: &Arc<Self>,
        url: &str,
        name: &str,
        sha256: Option<&str>,
    ) -> Result<FetchStatus, IsoError> {
        check_name(name)?;
        let sha256 = sha256.map(check_sha256).transpose()?;
        let parsed = url::Url::parse(url).map_err(|e| IsoError::Invalid(format!("URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(IsoError::Invalid(format!("URL {url:?}: only http and https")));
        }
        let claim = self.claim(name)?;
        let status = FetchStatus {
            name: name.to_string(),
            url: url.to_string(),
            state: "running",
            bytes: 0,
            total: None,
            error: None,
        };
        lock(&self.fetches).insert(name.to_string(), status.clone());
        let store = self.clone();
        let (url, name) = (url.to_string(), name.to_string());
        let thread = std::thread::Builder::new().name("iso-fetch".into()).spawn(move || {
            let result = store.download(&url, &claim, sha256);
            let mut fetches = lock(&store.fetches);
            if let Some(status) = fetches.get_mut(&name) {
                match result {
                    Ok(_) => status.state = "done",
                    Err(error) => {
                        tracing::warn!(%name, %url, error = %service_kit::ErrorChain(&error), "ISO fetch failed");
                        status.state = "failed";
                        status.error = Some(service_kit::ErrorChain(&error).to_string());
                    }
                }
            }
        });
        if let Err(e) = thread {
            lock(&self.fetches).remove(&status.name);
            return Err(IsoError::Io { context: "start the fetch".into(), source: e });
        }
        Ok(status)
    }

    fn download(&self, url: &str, claim: &Claim, sha256: Option<String>) -> Result<IsoInfo, IsoError> {
        let name = claim.name.as_str();
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| IsoError::Download(e.to_string()))?;
        let mut response = client.get(url).send().map_err(|e| IsoError::Download(e.to_string()))?;
        if !response.status().is_success() {
            return Err(IsoError::Download(format!("{url} answered {}", response.status())));
        }
        let total = response.content_length();
        self.update_fetch(name, |s| s.total = total);
        // A body shorter than its Content-Length is a read error here (the client checks it),
        // so nothing short is ever kept.
        self.add_claimed(claim, &mut response, sha256, Some(url), |bytes| {
            self.update_fetch(name, |s| s.bytes = bytes);
        })
    }

    fn update_fetch(&self, name: &str, change: impl FnOnce(&mut FetchStatus)) {
        if let Some(status) = lock(&self.fetches).get_mut(name) {
            change(status);
        }
    }

    pub fn fetches(&self) -> Vec<FetchStatus> {
        lock(&self.fetches).values().cloned().collect()
    }

    /// Renames `from` to `to`, never over an existing ISO; refused while `users` has it
    /// attached.
    pub fn rename(&self, from: &str, to: &str, users: Users) -> Result<IsoInfo, IsoError> {
        check_name(to)?;
        let names = lock(&self.names);
        let mut info = self.get(from)?;
        if names.contains(to) {
            return Err(IsoError::Arriving(to.to_string()));
        }
        if self.dir.join(to).exists() {
            return Err(IsoError::Exists(to.to_string()));
        }
        check_unused(from, users)?;
        info.name = to.to_string();
        // The new record, then the new name as a hard link (which, unlike rename(2), fails
        // on an existing name), then the old name goes: a crash leaves the ISO under its old
        // name, or under both, never under neither.
        write_record(&self.record_path(to), &info)?;
        if let Err(e) = fs::hard_link(self.dir.join(from), self.dir.join(to)) {
            let _ = fs::remove_file(self.record_path(to));
            return Err(match e.kind() {
                io::ErrorKind::AlreadyExists => IsoError::Exists(to.to_string()),
                _ => IsoError::Io { context: format!("rename {from}"), source: e },
            });
        }
        fs::remove_file(self.dir.join(from)).map_err(io_error(format!("rename {from}")))?;
        let _ = fs::remove_file(self.record_path(from));
        durable::sync_dir(&self.dir).map_err(io_error("sync the ISO directory"))?;
        Ok(info)
    }

    /// Deletes `name`; refused while `users` has it attached.
    pub fn remove(&self, name: &str, users: Users) -> Result<(), IsoError> {
        let _names = lock(&self.names);
        let path = self.path(name)?;
        check_unused(name, users)?;
        fs::remove_file(&path).map_err(io_error(format!("remove {name}")))?;
        let _ = fs::remove_file(self.record_path(name));
        lock(&self.fetches).remove(name);
        durable::sync_dir(&self.dir).map_err(io_error("sync the ISO directory"))
    }
}

fn check_unused(name: &str, users: Users) -> Result<(), IsoError> {
    let instances = users(name);
    if instances.is_empty() {
        Ok(())
    } else {
        Err(IsoError::InUse { iso: name.to_string(), instances })
    }
}

fn write_record(path: &Path, info: &IsoInfo) -> Result<(), IsoError> {
    let bytes = serde_json::to_vec_pretty(info).expect("records serialise");
    durable::write_file(path, &bytes).map_err(io_error(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unused(_: &str) -> Vec<uuid::Uuid> {
        Vec::new()
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn names() {
        for good in ["debian-12.iso", "FreeBSD-14.1-RELEASE-amd64-disc1.iso", "a", "x+y_z"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", "x.json", "é.iso", &"a".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_checks_the_checksum_and_leaves_nothing_on_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = IsoStore::open(dir.path()).unwrap();
        let data = vec![7u8; 3 << 20];
        let mut seen = Vec::new();
        let info = store
            .add("a.iso", &mut &data[..], Some(&sha(&data).to_uppercase()), None, |b| seen.push(b))
            .unwrap();
        assert_eq!((info.size, info.sha256.as_str()), (data.len() as u64, sha(&data).as_str()));
        assert_eq!(seen.last(), Some(&(data.len() as u64)), "progress reaches the size");
        assert_eq!(fs::read(store.path("a.iso").unwrap()).unwrap(), data);
        assert!(matches!(store.add("a.iso", &mut &b"x"[..], None, None, |_| {}), Err(IsoError::Exists(_))));

        let wrong = store.add("b.iso", &mut &data[..], Some(&sha(b"other")), None, |_| {});
        assert!(matches!(wrong, Err(IsoError::Checksum { .. })), "{wrong:?}");
        assert!(matches!(store.path("b.iso"), Err(IsoError::NotFound(_))));
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "only a.iso and its record: {names:?}");
        assert!(matches!(
            store.add("c.iso", &mut &data[..], Some("abc"), None, |_| {}),
            Err(IsoError::Invalid(_))
        ));
    }

    #[test]
    fn rename_list_remove_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmpXYZ"), b"half an iso").unwrap();
        let store = IsoStore::open(dir.path()).unwrap();
        assert!(!dir.path().join(".tmpXYZ").exists(), "leftovers of interrupted writes go");
        store.add("one.iso", &mut &b"1"[..], None, Some("http://x/one.iso"), |_| {}).unwrap();
        store.add("two.iso", &mut &b"22"[..], None, None, |_| {}).unwrap();
        assert!(matches!(store.rename("one.iso", "two.iso", &unused), Err(IsoError::Exists(_))));
        let renamed = store.rename("one.iso", "uno.iso", &unused).unwrap();
        assert_eq!((renamed.name.as_str(), renamed.source.as_deref()), ("uno.iso", Some("http://x/one.iso")));
        let names: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["two.iso", "uno.iso"]);
        let attached = |_: &str| vec![uuid::Uuid::nil()];
        assert!(matches!(store.remove("two.iso", &attached), Err(IsoError::InUse { .. })));
        assert!(matches!(store.rename("two.iso", "dos.iso", &attached), Err(IsoError::InUse { .. })));
        store.remove("two.iso", &unused).unwrap();
        assert!(matches!(store.remove("two.iso", &unused), Err(IsoError::NotFound(_))));
        assert_eq!(store.list().unwrap().len(), 1);
    }
}
