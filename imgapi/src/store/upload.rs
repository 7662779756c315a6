//! The upload pipeline: bytes arrive on the async side, are gathered into 1 MiB blocks and go
//! to a writer thread (sha1 + write) and an MD5 thread. MD5 is the slowest step (about
//! 0.6 GB/s, see perf-limits.md), so it gets a core of its own. Queues are bounded, so memory
//! stays flat whatever the file size, and a slow disk slows the client down instead.
//!
//! The disk is the other limit (an upload is durable before it counts): all-zero pieces, common
//! in disk images, are left as holes, and a sync thread writes the file out while it grows, so
//! that the final fsync has little left to do.

use std::fs::File;
use std::io;
use std::sync::mpsc as sync_mpsc;
use std::thread;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use md5::Md5;
use service_kit::sparse::{write_sparse, Writeback};
use sha1::{Digest, Sha1};
use tempfile::NamedTempFile;
use tokio::sync::{mpsc, oneshot};

/// Size of the blocks handed to the worker threads.
const BLOCK: usize = 1 << 20;
/// Blocks in flight between the receiver and the writer (bounded memory: about 8 MiB).
const QUEUE_DEPTH: usize = 4;
/// Writeback of the growing file starts after every this many bytes really written.
const SYNC_EVERY: u64 = 8 << 20;

/// A complete upload, synced to disk, not yet part of any image.
#[derive(Debug)]
pub struct StagedFile {
    pub temp: NamedTempFile,
    pub sha1: String,
    pub content_md5: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload exceeds the maximum size of {limit} bytes")]
    TooBig { limit: u64 },
    #[error("cannot write the upload")]
    Io(#[source] io::Error),
}

/// How far an upload has come, for readers that follow its file while it is written (a
/// pull-through serves an image as it arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// This many bytes are in the file.
    Partial(u64),
    /// Complete, checked and stored.
    Verified,
    /// Abandoned: what was read must not be trusted.
    Failed,
}

/// Receives an upload chunk by chunk; see the module docs.
pub struct UploadSink {
    tx: Option<mpsc::Sender<Bytes>>,
    result: Option<oneshot::Receiver<io::Result<StagedFile>>>,
    pending: BytesMut,
    received: u64,
    limit: u64,
}

impl UploadSink {
    /// Starts the worker threads that will fill `temp`. Uploads over `limit` bytes fail.
    pub fn start(temp: NamedTempFile, limit: u64) -> io::Result<Self> {
        Self::start_watched(temp, limit, None)
    }

    /// As [`UploadSink::start`], and reports every block written to `written`.
    pub fn start_watched(
        temp: NamedTempFile,
        limit: u64,
        written: Option<tokio::sync::watch::Sender<Written>>,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (result_tx, result_rx) = oneshot::channel();
        thread::Builder::new().name("upload-writer".into()).spawn(move || {
            // The receiver may be gone when the request was dropped; nothing to report then.
            let _ = result_tx.send(write_and_hash(temp, rx, written));
        })?;
        Ok(Self {
            tx: Some(tx),
            result: Some(result_rx),
            pending: BytesMut::with_capacity(BLOCK),
            received: 0,
            limit,
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Adds a chunk; waits while the workers are behind.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.received += chunk.len() as u64;
        if self.received > self.limit {
            return Err(UploadError::TooBig { limit: self.limit });
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() >= BLOCK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), UploadError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let block = self.pending.split().freeze();
        self.pending.reserve(BLOCK);
        let sent = match &self.tx {
            Some(tx) => tx.send(block).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped early: its result says why.
            Err(self
                .worker_result()
                .await
                .err()
                .unwrap_or_else(|| UploadError::Io(io::Error::other("upload writer stopped"))))
        }
    }

    async fn worker_result(&mut self) -> Result<StagedFile, UploadError> {
        self.tx = None;
        let rx =
            self.result.take().ok_or_else(|| UploadError::Io(io::Error::other("upload already finished")))?;
        match rx.await {
            Ok(result) => result.map_err(UploadError::Io),
            Err(_) => Err(UploadError::Io(io::Error::other("upload writer panicked"))),
        }
    }

    /// Gives the upload up and waits until its temp file is gone, so that an error response
    /// is only sent once nothing of the upload is left on disk.
    pub async fn abort(mut self) {
        let _ = self.worker_result().await;
    }

    /// Ends the upload: waits for the last block to be written, hashed and synced.
    pub async fn finish(mut self) -> Result<StagedFile, UploadError> {
        self.flush().await?;
        self.worker_result().await
    }
}

fn write_and_hash(
    temp: NamedTempFile,
    mut rx: mpsc::Receiver<Bytes>,
    written: Option<tokio::sync::watch::Sender<Written>>,
) -> io::Result<StagedFile> {
    // Each digest on a thread of its own: the writer often waits for the disk (dirty-page
    // throttling), and the hashes must not wait with it.
    let (sha1_tx, sha1_thread) = spawn_hasher::<Sha1>("upload-sha1")?;
    let (md5_tx, md5_thread) = spawn_hasher::<Md5>("upload-md5")?;
    let mut writeback = Writeback::start(temp.as_file(), "upload-sync", SYNC_EVERY)?;
    let mut size = 0u64;
    let file = temp.as_file();
    let mut outcome = Ok(());
    while let Some(block) = rx.blocking_recv() {
        size += block.len() as u64;
        // A closed channel can only mean that hasher died; its join below reports it.
        let _ = sha1_tx.send(block.clone());
        let _ = md5_tx.send(block.clone());
        match append(file, &block, size) {
            Ok(written) => writeback.wrote(written),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        if let Some(written) = &written {
            written.send_replace(Written::Partial(size));
        }
    }
    drop((sha1_tx, md5_tx));
    let sha1 = sha1_thread.join().map_err(|_| io::Error::other("sha1 thread panicked"))?;
    let md5 = md5_thread.join().map_err(|_| io::Error::other("md5 thread panicked"))?;
    let synced = writeback.stop();
    outcome?;
    synced?;
    file.sync_all()?;
    Ok(StagedFile {
        temp,
        sha1: hex::encode(sha1),
        content_md5: base64::engine::general_purpose::STANDARD.encode(md5),
        size,
    })
}

type Hasher<D> = (sync_mpsc::SyncSender<Bytes>, thread::JoinHandle<sha1::digest::Output<D>>);

/// A thread that digests every block sent to it until the sender is dropped.
fn spawn_hasher<D: Digest + Send + 'static>(name: &str) -> io::Result<Hasher<D>> {
    let (tx, rx) = sync_mpsc::sync_channel::<Bytes>(QUEUE_DEPTH);
    let thread = thread::Builder::new().name(name.into()).spawn(move || {
        let mut digest = D::new();
        for block in rx {
            digest.update(&block);
        }
        digest.finalize()
    })?;
    Ok((tx, thread))
}

/// Appends `block` to `file`, leaving all-zero pieces as holes, so that the file ends at
/// `size_after` (a follower reading the growing file must never meet a short file). Returns the
/// bytes really written.
fn append(file: &File, block: &[u8], size_after: u64) -> io::Result<u64> {
    let done = write_sparse(file, block)?;
    if done.ends_in_hole {
        file.set_len(size_after)?;
    }
    Ok(done.written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_and_counts_what_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = UploadSink::start(NamedTempFile::new_in(dir.path()).unwrap(), 10 << 20).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(65_536) {
            sink.write(chunk).await.unwrap();
        }
        let staged = sink.finish().await.unwrap();
        assert_eq!(staged.size, data.len() as u64);
        assert_eq!(staged.sha1, hex::encode(Sha1::digest(&data)));
        assert_eq!(staged.content_md5, base64::engine::general_purpose::STANDARD.encode(Md5::digest(&data)));
        assert_eq!(std::fs::read(staged.temp.path()).unwrap(), data);
    }

    #[tokio::test]
    async fn refuses_more_than_the_limit_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = UploadSink::start(NamedTempFile::new_in(dir.path()).unwrap(), 10).unwrap();
        sink.write(b"12345").await.unwrap();
        assert!(matches!(sink.write(b"678901").await, Err(UploadError::TooBig { limit: 10 })));
        drop(sink);
        // The writer thread owns the temp file and deletes it when the channel closes.
        for _ in 0..100 {
            if std::fs::read_dir(dir.path()).unwrap().count() == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("temp file left behind");
    }

    #[tokio::test]
    async fn empty_upload_is_zero_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let sink = UploadSink::start(NamedTempFile::new_in(dir.path()).unwrap(), 10).unwrap();
        let staged = sink.finish().await.unwrap();
        assert_eq!(staged.size, 0);
        assert_eq!(staged.sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[tokio::test]
    async fn zero_pieces_become_holes_and_the_bytes_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = UploadSink::start(NamedTempFile::new_in(dir.path()).unwrap(), 64 << 20).unwrap();
        // Zeros in the middle, a short non-zero run, and zeros at the very end (the size must
        // still count them).
        let mut data = vec![7u8; 100_000];
        data.extend(vec![0u8; 8 << 20]);
        data.extend(b"middle");
        data.extend(vec![0u8; 3 << 20]);
        for chunk in data.chunks(65_521) {
            sink.write(chunk).await.unwrap();
        }
        let staged = sink.finish().await.unwrap();
        assert_eq!(staged.size, data.len() as u64);
        assert_eq!(staged.sha1, hex::encode(Sha1::digest(&data)));
        assert!(std::fs::read(staged.temp.path()).unwrap() == data, "content differs");
        use std::os::unix::fs::MetadataExt;
        let allocated = staged.temp.as_file().metadata().unwrap().blocks() * 512;
        // Where the filesystem supports holes (all that this server runs on), most of the
        // 11 MiB of zeros takes no space.
        assert!(allocated < 4 << 20, "{allocated} bytes allocated for {} bytes", data.len());
    }

    #[test]
    fn a_growing_file_is_never_short() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        append(&file, &[1; 10], 10).unwrap();
        append(
            &file,
            &[0; service_kit::sparse::HOLE_PIECE * 2],
            10 + 2 * service_kit::sparse::HOLE_PIECE as u64,
        )
        .unwrap();
        assert_eq!(file.metadata().unwrap().len(), 10 + 2 * service_kit::sparse::HOLE_PIECE as u64);
        append(&file, &[2; 5], 15 + 2 * service_kit::sparse::HOLE_PIECE as u64).unwrap();
        let bytes = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(bytes.len(), 15 + 2 * service_kit::sparse::HOLE_PIECE);
        assert_eq!(&bytes[bytes.len() - 5..], &[2; 5]);
    }
}
