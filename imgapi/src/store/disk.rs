//! On-disk layout and its clean-up after a crash. Everything the store writes goes through
//! `service_kit::durable`: a temp file in the same directory, `fsync`, `rename`, and an `fsync`
//! of the directory.
//!
//! ```text
//! <datadir>/<uuid>/manifest.json       the image record (Image::to_disk)
//! <datadir>/<uuid>/file.<sha1>         the image file, named by content
//! <datadir>/<uuid>/icon.<sha1>         the icon
//! <datadir>/<uuid>/.tmp-*              in-flight writes and uploads (removed at start-up)
//! <datadir>/.deleted-<uuid>-*          an image being deleted (removed at start-up)
//! ```
//!
//! Files are named by their sha1 so that a new upload never overwrites the file the current
//! record points at: a crash between the file rename and the record rename leaves the old
//! record with its old file, plus an unreferenced file that start-up removes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use service_kit::durable::{is_no_space, persist, sync_dir, temp_file, write_file, TEMP_PREFIX};

pub const RECORD_NAME: &str = "manifest.json";
pub const DELETED_PREFIX: &str = ".deleted-";

/// Name of the stored image file with this sha1.
pub fn file_name(sha1: &str) -> String {
    format!("file.{sha1}")
}

/// Name of the stored icon with this sha1.
pub fn icon_name(sha1: &str) -> String {
    format!("icon.{sha1}")
}

/// Creates the directory of a new image durably.
pub fn create_image_dir(root: &Path, dir: &Path) -> io::Result<()> {
    fs::create_dir(dir)?;
    sync_dir(root)
}

/// Removes an image directory in a way a crash cannot half-do: first an atomic rename out of
/// the namespace (after which the image no longer exists), then the recursive removal.
pub fn remove_image_dir(root: &Path, dir: &Path, uuid: &str) -> io::Result<()> {
    let graveyard =
        tempfile::Builder::new().prefix(&format!("{DELETED_PREFIX}{uuid}-")).tempdir_in(root)?.keep();
    // `graveyard` is an empty directory; rename(2) replaces an empty directory atomically.
    fs::rename(dir, &graveyard)?;
    sync_dir(root)?;
    // The image is gone from here on; a failed clean-up is retried at the next start-up.
    if let Err(error) = fs::remove_dir_all(&graveyard) {
        tracing::warn!(path = %graveyard.display(), error = %service_kit::ErrorChain(&error), "cannot remove a deleted image's files yet");
    }
    Ok(())
}

/// True for names the store writes only transiently.
pub fn is_transient(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) || name.starts_with(DELETED_PREFIX)
}

/// Removes leftovers of interrupted writes in `dir` (not recursive); returns what it removed.
pub fn remove_transient(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !is_transient(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_and_cleanup_of_transients() {
        let root = tempfile::tempdir().unwrap();
        let img = root.path().join("u");
        create_image_dir(root.path(), &img).unwrap();
        fs::write(img.join("file.x"), b"x").unwrap();
        let leftover = temp_file(&img).unwrap().keep().unwrap().1;
        assert_eq!(remove_transient(&img).unwrap(), vec![leftover]);
        remove_image_dir(root.path(), &img, "u").unwrap();
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
