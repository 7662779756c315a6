//! Destroyed instances, kept for listings (`GET /instances?destroyed=true`): the newest
//! [`KEEP`] in memory, so that a listing reads no file, and in `destroyed.jsonl` (one record a
//! line, appended), which is read once at start-up and compacted to the newest [`KEEP`] when it
//! holds twice as many.

use super::*;

/// Destroyed instances a listing shows (the newest).
pub(super) const KEEP: usize = 1000;

pub(super) struct History {
    path: PathBuf,
    keep: usize,
    /// Oldest first.
    records: VecDeque<InstanceRecord>,
    /// Lines in the file, compacted or not.
    lines: usize,
}

impl History {
    /// Reads the history file (a missing one is an empty history; unreadable lines are skipped).
    pub(super) fn open(path: PathBuf, keep: usize) -> History {
        let text = fs::read_to_string(&path).unwrap_or_default();
        let lines = text.lines().count();
        let mut records: VecDeque<InstanceRecord> =
            text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        while records.len() > keep {
            records.pop_front();
        }
        History { path, keep, records, lines }
    }

    /// Appends a destroyed instance. A failure to write is logged: the instance is gone anyway.
    pub(super) fn add(&mut self, record: InstanceRecord) {
        use std::io::Write;
        self.records.push_back(record);
        if self.records.len() > self.keep {
            self.records.pop_front();
        }
        let written = if self.lines + 1 > 2 * self.keep {
            // Compact: the file keeps what memory keeps, replaced atomically.
            let mut text = String::new();
            for record in &self.records {
                text.push_str(&serde_json::to_string(record).unwrap_or_default());
                text.push('\n');
            }
            service_kit::durable::write_file(&self.path, text.as_bytes()).map(|()| self.records.len())
        } else {
            let line = serde_json::to_string(self.records.back().expect("just pushed")).unwrap_or_default();
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .and_then(|mut f| writeln!(f, "{line}"))
                .map(|()| self.lines + 1)
        };
        match written {
            Ok(lines) => self.lines = lines,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), error = %service_kit::ErrorChain(&error), "cannot record a destroyed instance")
            }
        }
    }

    /// Oldest first.
    pub(super) fn records(&self) -> Vec<InstanceRecord> {
        self.records.iter().cloned().collect()
    }
}

impl Instances {
    pub(super) fn remember_destroyed(&self, record: &InstanceRecord) {
        lock(&self.history).add(record.clone());
    }

    /// Destroyed instances, oldest first (the newest [`KEEP`]).
    pub fn destroyed(&self) -> Vec<InstanceRecord> {
        lock(&self.history).records()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u128) -> InstanceRecord {
        let uuid = Uuid::from_u128(n);
        let mut record: InstanceRecord = serde_json::from_value(serde_json::json!({
            "uuid": uuid, "alias": format!("i{n}"), "image": null, "vcpus": 1, "memory_mib": 64,
            "disk_mib": 1, "nics": [], "firmware": "bios", "vm_name": InstanceRecord::vm_name_for(&uuid),
            "state": "destroyed", "reason": "destroyed", "pid": null, "created_at": "2026-12-03T00:00:00Z",
            "history": [],
        }))
        .unwrap();
        record.reason = format!("destroyed {n}");
        record
    }

    #[test]
    fn the_newest_are_kept_across_restarts_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("destroyed.jsonl");
        let mut history = History::open(path.clone(), 3);
        assert!(history.records().is_empty());
        for n in 0..5 {
            history.add(record(n));
        }
        let uuids = |h: &History| h.records().iter().map(|r| r.uuid.as_u128()).collect::<Vec<_>>();
        assert_eq!(uuids(&history), [2, 3, 4]);
        // Five lines, under twice the limit: only appended so far.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 5);
        assert_eq!(uuids(&History::open(path.clone(), 3)), [2, 3, 4]);
        history.add(record(5));
        history.add(record(6));
        // The seventh line would pass 2 x 3: the file now holds what memory holds.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
        assert_eq!(uuids(&History::open(path.clone(), 3)), [4, 5, 6]);
    }

    #[test]
    fn a_damaged_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("destroyed.jsonl");
        let good = serde_json::to_string(&record(1)).unwrap();
        fs::write(&path, format!("{good}\n{{not json\n{good}")).unwrap();
        assert_eq!(History::open(path, 10).records().len(), 2);
    }
}
