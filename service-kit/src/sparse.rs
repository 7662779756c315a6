//! Writing disk images sparsely. Disk images are mostly zeros: every all-zero piece of
//! [`HOLE_PIECE`] bytes is skipped with a seek instead of written, so the file gets a hole
//! that reads as zeros and costs neither disk space nor disk time. A file that ends in a hole
//! is shorter than the bytes written to it until its length is set ([`File::set_len`]); a
//! device (a zvol) needs nothing, a new one reads zeros everywhere.
//!
//! [`Writeback`] starts the kernel's writeback of a growing file from a thread of its own, so
//! that the disk works while the data still arrives and the final `fsync` has little left.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::{self, JoinHandle};

/// All-zero pieces of this size (and the zero tail of a block) become holes. 64 KiB: large
/// enough for the seek to cost less than the write it saves, small enough to find the zero
/// runs of a file system image.
pub const HOLE_PIECE: usize = 64 * 1024;

/// Blocks [`copy_sparse`] reads at once.
const COPY_BLOCK: usize = 1 << 20;

/// Whether every byte is zero. OR-folding fixed chunks vectorises (`all` would stop at the
/// first non-zero byte but not vectorise), which matters at gigabytes per second.
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes.chunks(4096).all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// What [`write_sparse`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseWrite {
    /// Bytes really written (the rest were holes).
    pub written: u64,
    /// The block's last piece was a hole: a regular file is now shorter than its cursor.
    pub ends_in_hole: bool,
}

/// Writes `block` at the file's cursor, leaving its all-zero pieces as holes; the cursor ends
/// after the block either way.
pub fn write_sparse(mut file: impl Write + Seek, block: &[u8]) -> io::Result<SparseWrite> {
    let mut done = SparseWrite { written: 0, ends_in_hole: false };
    for piece in block.chunks(HOLE_PIECE) {
        done.ends_in_hole = is_zero(piece);
        if done.ends_in_hole {
            file.seek(SeekFrom::Current(piece.len() as i64))?;
        } else {
            file.write_all(piece)?;
            done.written += piece.len() as u64;
        }
    }
    Ok(done)
}

/// Copies the regular file `from` to a new file `to`, leaving holes where `from` has zeros,
/// and makes `to` at least `min_len` bytes long; `to` is synced before this returns.
pub fn copy_sparse(from: &Path, to: &Path, min_len: u64) -> io::Result<()> {
    let mut source = File::open(from)?;
    let mut target = File::create(to)?;
    let mut block = vec![0u8; COPY_BLOCK];
    loop {
        let n = crate::read_full(&mut source, &mut block)?;
        if n == 0 {
            break;
        }
        write_sparse(&mut target, &block[..n])?;
    }
    let end = target.stream_position()?;
    target.set_len(min_len.max(end))?;
    target.sync_all()
}

/// A thread that flushes a growing file to disk (`fdatasync`) after every `every` bytes
/// really written, while the writes go on.
pub struct Writeback {
    wake: SyncSender<()>,
    thread: JoinHandle<io::Result<()>>,
    every: u64,
    since: u64,
}

impl Writeback {
    /// Starts the thread (named `name`) for `file`.
    pub fn start(file: &File, name: &str, every: u64) -> io::Result<Self> {
        let file = file.try_clone()?;
        // Capacity 1: a request while one is pending is dropped, never queued.
        let (wake, requests) = sync_channel::<()>(1);
        let thread = thread::Builder::new().name(name.into()).spawn(move || {
            for () in requests {
                file.sync_data()?;
            }
            Ok(())
        })?;
        Ok(Writeback { wake, thread, every, since: 0 })
    }

    /// Counts `bytes` really written; asks for a flush once `every` have accumulated.
    pub fn wrote(&mut self, bytes: u64) {
        self.since += bytes;
        if self.since >= self.every {
            self.since = 0;
            let _ = self.wake.try_send(());
        }
    }

    /// Waits for the flush in progress; its error, if any, is the write's.
    pub fn stop(self) -> io::Result<()> {
        drop(self.wake);
        self.thread.join().unwrap_or_else(|_| Err(io::Error::other("writeback thread panicked")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn blocks_of(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks()
    }

    #[test]
    fn zero_pieces_become_holes_and_data_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut file = File::create(&path).unwrap();
        let mut block = vec![0u8; 4 * HOLE_PIECE];
        block[HOLE_PIECE + 7] = 1;
        let done = write_sparse(&mut file, &block).unwrap();
        assert_eq!(done, SparseWrite { written: HOLE_PIECE as u64, ends_in_hole: true });
        assert_eq!(file.stream_position().unwrap(), block.len() as u64);
        file.set_len(block.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), block);
        // 512-byte blocks: far fewer than the 4 pieces' worth a dense file would take.
        assert!(blocks_of(&path) * 512 < 2 * HOLE_PIECE as u64, "{} blocks", blocks_of(&path));
    }

    #[test]
    fn a_sparse_copy_is_equal_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        let mut data = vec![0u8; 3 << 20];
        data[5] = 9;
        data[(2 << 20) + 1] = 7;
        std::fs::write(&from, &data).unwrap();
        copy_sparse(&from, &to, 4 << 20).unwrap();
        let copied = std::fs::read(&to).unwrap();
        assert_eq!(copied.len(), 4 << 20);
        assert_eq!(&copied[..data.len()], &data[..]);
        assert!(is_zero(&copied[data.len()..]));
        assert!(blocks_of(&to) < blocks_of(&from));
    }

    #[test]
    fn is_zero_sees_a_single_byte_anywhere() {
        let mut bytes = vec![0u8; 10_000];
        assert!(is_zero(&bytes));
        for at in [0, 4095, 4096, 9_999] {
            bytes[at] = 1;
            assert!(!is_zero(&bytes), "{at}");
            bytes[at] = 0;
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn writeback_flushes_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let mut writeback = Writeback::start(&file, "test-writeback", 10).unwrap();
        (&file).write_all(&[1; 100]).unwrap();
        writeback.wrote(100);
        writeback.stop().unwrap();
    }
}
