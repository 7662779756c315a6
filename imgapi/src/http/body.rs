//! Response bodies for stored files, read on demand so that a client costs what it reads:
//!
//! - A block is read only when the connection has taken the one before, on the file readers'
//!   own small pool ([`read_pool`]): no thread ever waits for a client, and password checks
//!   and uploads, on actix's blocking pool, never queue behind downloads.
//! - Blocks grow from 64 KiB to 1 MiB while the download keeps up (large reads are what reach
//!   nginx's speed here; see perf-limits.md), but every block above 64 KiB takes its excess
//!   from one budget shared by all downloads ([`BLOCK_BUDGET`]): a thousand clients that stop
//!   reading hold a thousand small blocks and the budget, not a thousand large ones.
//! - A block goes to actix in 64 KiB slices, so that the connection's write buffer stays
//!   small too.
//!
//! The body announces its exact length so it is never sent chunked. A client that stops
//! reading altogether is cut off by [`crate::http::stall`], which this body tells of each slice
//! it hands out.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stall::Progress;

/// The smallest block, and the size of the slices handed to actix.
const SLICE: usize = 64 << 10;
/// The largest block.
const MAX_BLOCK: usize = 1 << 20;
/// Bytes of blocks beyond their first 64 KiB that all downloads may hold at once: 64 fast
/// downloads at full block size.
pub const BLOCK_BUDGET: usize = 64 << 20;
/// Threads that read stored files.
const READ_THREADS: usize = 8;

/// The budget, in 64 KiB units.
fn budget() -> &'static Arc<Semaphore> {
    static BUDGET: OnceLock<Arc<Semaphore>> = OnceLock::new();
    BUDGET.get_or_init(|| Arc::new(Semaphore::new(BLOCK_BUDGET / SLICE)))
}

/// The file readers' pool: a runtime of its own, used only for its blocking threads.
pub fn read_pool() -> &'static tokio::runtime::Runtime {
    static POOL: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    POOL.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(READ_THREADS)
            .thread_name("file-read")
            .build()
            .expect("the file readers' pool starts")
    })
}

/// A block read from disk, with its share of the budget.
struct Block {
    bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

type PendingRead = Pin<Box<dyn Future<Output = io::Result<Block>> + Send>>;

/// The bytes `[offset, offset + len)` of a file, streamed.
pub struct FileBody {
    len: u64,
    reading: Option<Reading>,
}

struct Reading {
    file: Arc<File>,
    /// Where the next read starts, and where the range ends.
    next: u64,
    end: u64,
    /// The size the next read asks for.
    block_size: usize,
    /// The block being handed out.
    current: Option<Block>,
    /// The read under way.
    pending: Option<PendingRead>,
    progress: Option<Arc<Progress>>,
}

impl FileBody {
    /// Streams `len` bytes of `file` from `offset`; `progress` hears of every slice sent.
    pub fn new(file: File, offset: u64, len: u64, progress: Option<Arc<Progress>>) -> Self {
        let reading = Reading {
            file: Arc::new(file),
            next: offset,
            end: offset + len,
            block_size: SLICE,
            current: None,
            pending: None,
            progress,
        };
        FileBody { len, reading: Some(reading) }
    }

    /// A body that announces `len` bytes but sends none: for HEAD responses.
    pub fn head(len: u64) -> Self {
        FileBody { len, reading: None }
    }
}

impl Reading {
    /// Starts reading the next block, if any is left and none is in flight.
    fn read_next(&mut self) {
        if self.pending.is_some() || self.next >= self.end {
            return;
        }
        let want = (self.end - self.next).min(self.block_size as u64) as usize;
        // The first 64 KiB of a block are free; the rest comes from the budget, or the block
        // shrinks to what the budget has.
        let mut size = want;
        let mut permit = None;
        while size > SLICE {
            match budget().clone().try_acquire_many_owned(((size - SLICE) / SLICE) as u32) {
                Ok(p) => {
                    permit = Some(p);
                    break;
                }
                Err(_) => size /= 2,
            }
        }
        let size = size.min(want);
        let (file, offset) = (self.file.clone(), self.next);
        self.next += size as u64;
        let read = read_pool().spawn_blocking(move || read_block(&file, offset, size));
        self.pending = Some(Box::pin(async move {
            let bytes = read.await.map_err(io::Error::other)??;
            Ok(Block { bytes, _permit: permit })
        }));
        // A download that keeps taking blocks earns larger ones.
        self.block_size = (self.block_size * 2).min(MAX_BLOCK);
    }
}

/// Reads `size` bytes at `offset`, all of them: a file shorter than its record ends the
/// response early rather than with wrong bytes (the client sees a short body).
fn read_block(file: &File, offset: u64, size: usize) -> io::Result<Bytes> {
    let mut block = BytesMut::zeroed(size);
    let mut filled = 0;
    while filled < size {
        match file.read_at(&mut block[filled..], offset + filled as u64) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stored file is truncated")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(block.freeze())
}

impl MessageBody for FileBody {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.len)
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let Some(reading) = self.reading.as_mut() else { return Poll::Ready(None) };
        loop {
            if let Some(block) = reading.current.as_mut() {
                if !block.bytes.is_empty() {
                    let slice = block.bytes.split_to(SLICE.min(block.bytes.len()));
                    if block.bytes.is_empty() {
                        // The last slice of this block: its budget goes back. The next block
                        // is read when the connection asks for it (the socket's buffer keeps
                        // it busy meanwhile), so that a client that stops here holds none.
                        reading.current = None;
                    }
                    if let Some(progress) = &reading.progress {
                        progress.sent();
                    }
                    return Poll::Ready(Some(Ok(slice)));
                }
                reading.current = None;
            }
            reading.read_next();
            let Some(pending) = reading.pending.as_mut() else {
                if let Some(progress) = &reading.progress {
                    progress.done();
                }
                return Poll::Ready(None);
            };
            match pending.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    reading.pending = None;
                    match result {
                        Ok(block) => reading.current = Some(block),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
            }
        }
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        if let Some(progress) = self.reading.as_ref().and_then(|r| r.progress.as_ref()) {
            progress.done();
        }
    }
}
