//! The NoCloud seed: `meta-data`, `user-data` and `network-config` on a small FAT disk
//! labelled `CIDATA`, which cloud-init, FreeBSD's nuageinit and cloudbase-init all look for.
//! A FAT disk (as SmartOS's vmadm makes) rather than an ISO: it is built here in Rust with
//! no host tool, and attaches as a plain virtio disk under both bhyve and QEMU.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use uuid::Uuid;

use super::GuestConfig;

/// Size of the seed disk: room for the largest user-data and network config many times over
/// (FAT16 needs at least 4,085 clusters; the file is sparse on disk).
const SEED_BYTES: u64 = 8 << 20;
const LABEL: [u8; 11] = *b"CIDATA     ";

/// The files of a NoCloud seed, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: Option<String>,
}

/// What the instance `uuid` (called `hostname`) finds in its seed.
pub fn seed_files(uuid: &Uuid, hostname: &str, config: &GuestConfig) -> SeedFiles {
    // YAML, with every scalar written as a JSON string: JSON's escapes are all valid in YAML
    // double-quoted scalars, so no user value can break out of its line.
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let mut meta = String::new();
    meta.push_str(&format!("instance-id: {}\n", quote(&uuid.to_string())));
    meta.push_str(&format!("local-hostname: {}\n", quote(hostname)));
    if !config.ssh_keys.is_empty() {
        meta.push_str("public-keys:\n");
        for key in &config.ssh_keys {
            meta.push_str(&format!("  - {}\n", quote(key.trim())));
        }
    }
    if !config.metadata.is_empty() {
        // OpenStack's name for user key/value metadata; cloud-init keeps it in its
        // instance-data (`ds.meta_data.meta`).
        meta.push_str("meta:\n");
        for (key, value) in &config.metadata {
            meta.push_str(&format!("  {}: {}\n", quote(key), quote(value)));
        }
    }
    SeedFiles {
        meta_data: meta,
        user_data: config.user_data.clone().unwrap_or_else(|| "#cloud-config\n{}\n".to_string()),
        network_config: config.network_config.clone(),
    }
}

/// Writes the seed disk at `path`, atomically: a guest never sees half a seed, and the old
/// one stays until the new one is complete.
pub fn write_seed(path: &Path, files: &SeedFiles) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("the seed path has no directory"))?;
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut disk = OpenOptions::new().read(true).write(true).open(temp.path())?;
        disk.set_len(SEED_BYTES)?;
        fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new().volume_label(LABEL))?;
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            let put = |name: &str, bytes: &[u8]| -> io::Result<()> {
                let mut file = root.create_file(name)?;
                file.truncate()?;
                file.write_all(bytes)?;
                file.flush()
            };
            put("meta-data", files.meta_data.as_bytes())?;
            put("user-data", files.user_data.as_bytes())?;
            if let Some(network_config) = &files.network_config {
                put("network-config", network_config.as_bytes())?;
            }
        }
        fs.unmount()?;
        disk.sync_all()?;
    }
    temp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample() -> (Uuid, GuestConfig) {
        let config = GuestConfig {
            hostname: Some("web-1".into()),
            ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA me@\"host\"".into()],
            user_data: Some("#!/bin/sh\necho hi\n".into()),
            network_config: Some("version: 2\n".into()),
            metadata: [("role".to_string(), "web\nnot: a key".to_string())].into(),
        };
        (Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap(), config)
    }

    #[test]
    fn meta_data_quotes_every_value() {
        let (uuid, config) = sample();
        let files = seed_files(&uuid, "web-1", &config);
        assert_eq!(
            files.meta_data,
            "instance-id: \"6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b\"\n\
             local-hostname: \"web-1\"\n\
             public-keys:\n  - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA me@\\\"host\\\"\"\n\
             meta:\n  \"role\": \"web\\nnot: a key\"\n"
        );
        assert_eq!(files.user_data, "#!/bin/sh\necho hi\n");
        let bare = seed_files(&uuid, "h", &GuestConfig::default());
        assert_eq!(bare.meta_data.lines().count(), 2);
        assert!(bare.user_data.starts_with("#cloud-config"));
        assert_eq!(bare.network_config, None);
    }

    #[test]
    fn the_seed_is_a_cidata_fat_disk_with_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        let (uuid, config) = sample();
        let files = seed_files(&uuid, "web-1", &config);
        write_seed(&path, &files).unwrap();
        // Rewriting replaces it whole.
        write_seed(&path, &files).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");

        let mut disk = fs::File::open(&path).unwrap();
        let fat = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fat.volume_label().trim_end(), "CIDATA");
        let read = |name: &str| {
            let mut text = String::new();
            fat.root_dir().open_file(name).unwrap().read_to_string(&mut text).unwrap();
            text
        };
        assert_eq!(read("meta-data"), files.meta_data);
        assert_eq!(read("user-data"), files.user_data);
        assert_eq!(read("network-config"), "version: 2\n");
    }
}
