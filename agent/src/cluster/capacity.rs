//! What this host can give to instances: its vCPUs, its memory (`/proc/meminfo` on Linux,
//! `sysctl hw.physmem` on FreeBSD) and the free space of its image storage. The parsers are
//! pure and tested on captured output.

use std::sync::Arc;

use service_kit::cluster::Capacity;

use crate::host::runner::{CommandRunner, HostCommand};
use crate::storage::ImageStorage;

const MIB: u64 = 1 << 20;

/// `MemTotal` of `/proc/meminfo`, in MiB.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib / 1024)
}

/// `sysctl -n hw.physmem` (bytes), in MiB.
pub fn parse_physmem(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().map(|bytes| bytes / MIB)
}

/// Measures the host, once per heartbeat. What cannot be measured counts as 0 (logged), so
/// that placement sends nothing to a host whose capacity is unknown.
pub struct Meter {
    runner: Arc<dyn CommandRunner>,
    sysctl: std::path::PathBuf,
    storage: Arc<dyn ImageStorage>,
}

impl Meter {
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        sysctl: std::path::PathBuf,
        storage: Arc<dyn ImageStorage>,
    ) -> Self {
        Meter { runner, sysctl, storage }
    }

    pub fn measure(&self) -> Capacity {
        let vcpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(0);
        let memory_mib = self.memory_mib().unwrap_or_else(|| {
            tracing::warn!("cannot tell this host's memory: it reports 0 MiB");
            0
        });
        let disk_free_mib = match self.storage.free_bytes() {
            Ok(bytes) => bytes / MIB,
            Err(error) => {
                tracing::warn!(error = %service_kit::ErrorChain(&error), "cannot tell the storage's free space: it reports 0 MiB");
                0
            }
        };
        Capacity { vcpus, memory_mib, disk_free_mib }
    }

    fn memory_mib(&self) -> Option<u64> {
        if cfg!(target_os = "linux") {
            parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
        } else {
            let output = self.runner.run(&HostCommand::new(&self.sysctl).args(["-n", "hw.physmem"])).ok()?;
            parse_physmem(&output.stdout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_memory_of_proc_meminfo() {
        let captured =
            "MemTotal:       24570624 kB\nMemFree:         1034496 kB\nMemAvailable:   20013056 kB\n";
        assert_eq!(parse_meminfo(captured), Some(23994));
        assert_eq!(parse_meminfo("MemFree: 10 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots\n"), None);
    }

    #[test]
    fn reads_freebsd_physmem_in_bytes() {
        assert_eq!(parse_physmem("17079189504\n"), Some(16287));
        assert_eq!(parse_physmem("hw.physmem: 1\n"), None);
    }
}
