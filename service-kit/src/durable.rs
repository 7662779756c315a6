//! Durable file writes: the bytes go to a temp file in the target's own directory, which is
//! synced, renamed over the target, and then the directory is synced too. A crash at any point
//! leaves either the old file or the new one, never a mix, and once a call returns the new file
//! survives a power cut.
//!
//! Temp files are named `.tmp-*` ([`TEMP_PREFIX`]), so that start-up clean-ups can find what an
//! interrupted write left behind.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use tempfile::NamedTempFile;

/// The name every temp file made here starts with.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A new temp file in `dir`, removed when dropped unless persisted.
pub fn temp_file(dir: &Path) -> io::Result<NamedTempFile> {
    tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir)
}

/// Replaces `path` with `bytes`, durably (see the module docs).
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = temp_file(parent(path))?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    persist(temp, path)
}

/// Moves a fully written temp file to `target` (replacing it) and makes the rename durable.
/// The caller has synced the file's content.
pub fn persist(temp: NamedTempFile, target: &Path) -> io::Result<()> {
    temp.persist(target).map_err(|e| e.error)?;
    sync_dir(parent(target))
}

/// As [`persist`], but fails with `AlreadyExists` instead of replacing an existing `target`.
pub fn persist_new(temp: NamedTempFile, target: &Path) -> io::Result<()> {
    temp.persist_noclobber(target).map_err(|e| e.error)?;
    sync_dir(parent(target))
}

/// Makes the renames and removals already done in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether an error means that the disk is full (or a quota is exhausted).
pub fn is_no_space(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || error.kind() == io::ErrorKind::StorageFull
}

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_file(&path, b"old").unwrap();
        write_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_files_carry_the_prefix_clean_ups_look_for() {
        let dir = tempfile::tempdir().unwrap();
        let temp = temp_file(dir.path()).unwrap();
        let name = temp.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(TEMP_PREFIX), "{name}");
    }

    #[test]
    fn persist_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.iso");
        std::fs::write(&target, b"first").unwrap();
        let temp = temp_file(dir.path()).unwrap();
        let error = persist_new(temp, &target).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
    }

    #[test]
    fn no_space_is_recognised() {
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EIO)));
    }
}
