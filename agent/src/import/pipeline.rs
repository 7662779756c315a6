//! The import pipeline: compressed bytes arrive from the download, a hashing thread computes the
//! sha1 and counts them, a decoding thread decompresses (gzip, bzip2, xz or none) and writes
//! into the storage backend. The three stages overlap on separate threads and every queue
//! between them is bounded, so memory stays flat whatever the image size. Nothing becomes an
//! image until the whole file has been received and its size and sha1 match the manifest.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as sync_mpsc;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;

use crate::storage::{ImageWriter, LocalImage, StorageError};

pub use imgapi_client::Compression;

/// What the manifest promises about the file.
#[derive(Debug, Clone)]
pub struct Expected {
    pub size: u64,
    pub sha1: String,
    pub compression: Compression,
}

/// Counters for progress reports, shared with whoever watches the import.
#[derive(Debug, Default)]
pub struct Progress {
    /// Compressed bytes received and hashed.
    pub downloaded: AtomicU64,
    /// Decompressed bytes handed to storage.
    pub written: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the file is {got} bytes, the manifest says {want}")]
    SizeMismatch { want: u64, got: u64 },
    #[error("the file's sha1 is {got}, the manifest says {want}")]
    Sha1Mismatch { want: String, got: String },
    #[error("cannot decompress the file ({compression:?})")]
    Corrupt {
        compression: Compression,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("an import worker thread failed")]
    Worker,
}

const QUEUE_DEPTH: usize = 8;
const WRITE_BLOCK: usize = 1 << 20;

/// A running pipeline; feed it with [`push`](Self::push), end it with [`finish`](Self::finish).
pub struct Pipeline {
    tx: Option<mpsc::Sender<Bytes>>,
    hasher: Option<thread::JoinHandle<(String, u64)>>,
    decoder: Option<thread::JoinHandle<Result<Box<dyn ImageWriter>, PipelineError>>>,
    expected: Expected,
}

impl Pipeline {
    pub fn start(
        expected: Expected,
        writer: Box<dyn ImageWriter>,
        progress: Arc<Progress>,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
        let (plain_tx, plain_rx) = sync_mpsc::sync_channel::<Bytes>(QUEUE_DEPTH);
        let compression = expected.compression;
        let hash_progress = progress.clone();
        let hasher = thread::Builder::new()
            .name("import-sha1".into())
            .spawn(move || hash(rx, plain_tx, &hash_progress))?;
        let decoder = thread::Builder::new()
            .name("import-decode".into())
            .spawn(move || decode(compression, plain_rx, writer, &progress))?;
        Ok(Pipeline { tx: Some(tx), hasher: Some(hasher), decoder: Some(decoder), expected })
    }

    /// Adds compressed bytes. An error means the decoding side has already failed: call
    /// [`finish`](Self::finish) to learn why.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(chunk).await.map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Gives up: waits for both threads and destroys whatever was written.
    pub async fn abort(mut self) {
        self.tx = None;
        let hasher = self.hasher.take().expect("abort runs once");
        let decoder = self.decoder.take().expect("abort runs once");
        let _ = tokio::task::spawn_blocking(move || {
            let _ = hasher.join();
            if let Ok(Ok(writer)) = decoder.join() {
                writer.abort();
            }
        })
        .await;
    }

    /// Ends the input, waits for both threads and, if size and sha1 match, commits the image.
    /// On any failure the storage writer is aborted: nothing is left behind.
    pub async fn finish(mut self) -> Result<LocalImage, PipelineError> {
        self.tx = None;
        let hasher = self.hasher.take().expect("finish runs once");
        let decoder = self.decoder.take().expect("finish runs once");
        let expected = self.expected.clone();
        tokio::task::spawn_blocking(move || {
            let hashed = hasher.join().map_err(|_| PipelineError::Worker);
            let written = decoder.join().map_err(|_| PipelineError::Worker)?;
            let (sha1, size) = hashed?;
            // Size first: a short download is the usual cause of a wrong sha1 too.
            let verdict = if size != expected.size {
                Err(PipelineError::SizeMismatch { want: expected.size, got: size })
            } else if !sha1.eq_ignore_ascii_case(&expected.sha1) {
                Err(PipelineError::Sha1Mismatch { want: expected.sha1.clone(), got: sha1 })
            } else {
                Ok(())
            };
            match (verdict, written) {
                (Ok(()), Ok(writer)) => Ok(writer.commit()?),
                (Err(e), Ok(writer)) => {
                    writer.abort();
                    Err(e)
                }
                // A decoding or storage failure: the decoder already aborted the writer.
                (
                    Err(e @ (PipelineError::SizeMismatch { .. } | PipelineError::Sha1Mismatch { .. })),
                    Err(_),
                ) => Err(e),
                (_, Err(e)) => Err(e),
            }
        })
        .await
        .map_err(|_| PipelineError::Worker)?
    }
}

fn hash(
    mut rx: mpsc::Receiver<Bytes>,
    forward: sync_mpsc::SyncSender<Bytes>,
    progress: &Progress,
) -> (String, u64) {
    let mut sha1 = Sha1::new();
    let mut size = 0u64;
    let mut forwarding = true;
    while let Some(chunk) = rx.blocking_recv() {
        sha1.update(&chunk);
        size += chunk.len() as u64;
        progress.downloaded.store(size, Ordering::Relaxed);
        // Once the decoder has stopped (error, or end of the compressed stream), keep hashing:
        // the verdict needs the sha1 of the whole file.
        if forwarding && forward.send(chunk).is_err() {
            forwarding = false;
        }
    }
    (hex::encode(sha1.finalize()), size)
}

/// Reads the compressed bytes the hashing thread forwards.
struct ChannelReader {
    rx: sync_mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn decode(
    compression: Compression,
    rx: sync_mpsc::Receiver<Bytes>,
    mut writer: Box<dyn ImageWriter>,
    progress: &Progress,
) -> Result<Box<dyn ImageWriter>, PipelineError> {
    let input = io::BufReader::with_capacity(256 * 1024, ChannelReader { rx, current: Bytes::new() });
    let mut reader: Box<dyn Read> = match compression {
        // Multi-member/-stream decoders: pigz, pbzip2 and concatenated files have several.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        Compression::None => Box::new(input),
    };
    let mut block = vec![0u8; WRITE_BLOCK];
    let mut written = 0u64;
    loop {
        // Full blocks, unless the input ends, so that storage gets large writes.
        let n = match service_kit::read_full(&mut reader, &mut block) {
            Ok(n) => n,
            Err(source) => {
                writer.abort();
                return Err(PipelineError::Corrupt { compression, source });
            }
        };
        if n == 0 {
            return Ok(writer);
        }
        if let Err(e) = writer.write_all(&block[..n]) {
            writer.abort();
            return Err(PipelineError::Storage(StorageError::io("write the image", e)));
        }
        written += n as u64;
        progress.written.store(written, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ContentKind, ImageMeta};
    use std::sync::Mutex;

    /// A writer that keeps the bytes and records how it ended.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        ended: Arc<Mutex<Option<&'static str>>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl ImageWriter for Sink {
        fn commit(self: Box<Self>) -> Result<LocalImage, StorageError> {
            *self.ended.lock().unwrap() = Some("commit");
            Ok(LocalImage {
                meta: ImageMeta {
                    uuid: uuid::Uuid::nil(),
                    name: "t".into(),
                    version: "1".into(),
                    os: "linux".into(),
                    image_type: "zvol".into(),
                    origin: None,
                    sha1: String::new(),
                    size: 0,
                    compression: "none".into(),
                    image_size_mib: None,
                    source: String::new(),
                },
                content: ContentKind::RawDisk,
                location: String::new(),
                content_size: self.bytes.lock().unwrap().len() as u64,
                imported_at: String::new(),
            })
        }
        fn abort(self: Box<Self>) {
            *self.ended.lock().unwrap() = Some("abort");
        }
    }

    fn compress(data: &[u8], compression: Compression) -> Vec<u8> {
        match compression {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::None => data.to_vec(),
        }
    }

    async fn run(file: &[u8], expected: Expected) -> (Result<LocalImage, PipelineError>, Sink) {
        let sink = Sink::default();
        let mut pipeline = Pipeline::start(expected, Box::new(sink.clone()), Arc::default()).unwrap();
        for chunk in file.chunks(10_000) {
            if pipeline.push(Bytes::copy_from_slice(chunk)).await.is_err() {
                break;
            }
        }
        (pipeline.finish().await, sink)
    }

    fn data() -> Vec<u8> {
        (0..2_000_000u32).map(|i| (i / 1000 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn every_compression_round_trips() {
        for compression in [Compression::Gzip, Compression::Bzip2, Compression::Xz, Compression::None] {
            let file = compress(&data(), compression);
            let expected =
                Expected { size: file.len() as u64, sha1: hex::encode(Sha1::digest(&file)), compression };
            let (result, sink) = run(&file, expected).await;
            assert!(result.is_ok(), "{compression:?}: {result:?}");
            assert_eq!(*sink.ended.lock().unwrap(), Some("commit"));
            assert!(*sink.bytes.lock().unwrap() == data(), "{compression:?}");
        }
    }

    #[tokio::test]
    async fn wrong_sha1_short_file_and_corrupt_data_abort() {
        let file = compress(&data(), Compression::Gzip);
        let sha1 = hex::encode(Sha1::digest(&file));
        let wrong =
            Expected { size: file.len() as u64, sha1: "0".repeat(40), compression: Compression::Gzip };
        let (result, sink) = run(&file, wrong).await;
        assert!(matches!(result, Err(PipelineError::Sha1Mismatch { .. })), "{result:?}");
        assert_eq!(*sink.ended.lock().unwrap(), Some("abort"));

        let short = &file[..file.len() / 2];
        let expected =
            Expected { size: file.len() as u64, sha1: sha1.clone(), compression: Compression::Gzip };
        let (result, sink) = run(short, expected).await;
        assert!(matches!(result, Err(PipelineError::SizeMismatch { .. })), "{result:?}");
        assert_eq!(*sink.ended.lock().unwrap(), Some("abort"));

        let mut corrupt = file.clone();
        for b in &mut corrupt[100..200] {
            *b ^= 0xff;
        }
        let expected = Expected {
            size: corrupt.len() as u64,
            sha1: hex::encode(Sha1::digest(&corrupt)),
            compression: Compression::Gzip,
        };
        let (result, sink) = run(&corrupt, expected).await;
        assert!(matches!(result, Err(PipelineError::Corrupt { .. })), "{result:?}");
        assert_eq!(*sink.ended.lock().unwrap(), Some("abort"));
    }
}
