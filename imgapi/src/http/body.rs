//! Response bodies for stored files, read on demand so that a client costs what it reads:
//!
//! - Blocks are read on the file readers' own small pool ([`read_pool`]), a few ahead of the
//!   connection: no thread ever waits for a client, and password checks and uploads, on
//!   actix's blocking pool, never queue behind downloads.
//! - Blocks grow from 64 KiB to 1 MiB while the download keeps up (large writes are what
//!   reach nginx's speed here; see perf-limits.md). Every block comes out of one budget shared
//!   by all downloads ([`BLOCK_BUDGET`]) and goes back only when the connection asks for more
//!   (actix copies a block into the connection's write buffer and asks again once that has
//!   drained), so that the budget also covers what waits there. When the budget is spent, a
//!   download still gets one 64 KiB block of its own at a time: slower, never stuck.
//!
//! So a thousand clients that stop reading hold a thousand small blocks and the budget, not a
//! thousand large ones. The body announces its exact length so it is never sent chunked. A
//! client that stops reading altogether is cut off by [`crate::http::stall`], which this body
//! tells of each block it hands out.

use std::collections::VecDeque;
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

/// The smallest block, and the budget's unit.
const MIN_BLOCK: usize = 64 << 10;
/// The largest block.
const MAX_BLOCK: usize = 1 << 20;
/// Blocks read ahead of the connection, at most.
const READ_AHEAD: usize = 3;
/// Bytes of blocks that all downloads may hold at once: 16 fast downloads with their blocks
/// read ahead and the one being sent.
pub const BLOCK_BUDGET: usize = 64 << 20;
/// Threads that read stored files.
const READ_THREADS: usize = 8;

/// The budget, in 64 KiB units.
fn budget() -> &'static Arc<Semaphore> {
    static BUDGET: OnceLock<Arc<Semaphore>> = OnceLock::new();
    BUDGET.get_or_init(|| Arc::new(Semaphore::new(BLOCK_BUDGET / MIN_BLOCK)))
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

/// A block read from disk, with its share.
struct Block {
    bytes: Bytes,
    share: Share,
}

/// A block's share of the budget, or the download's own 64 KiB.
enum Share {
    /// Held for its drop, which gives the budget back.
    Budget(#[allow(dead_code)] OwnedSemaphorePermit),
    Own,
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
    /// The share of the block handed out last, kept until the connection asks again.
    sent: Option<Share>,
    /// Reads under way, in order.
    ahead: VecDeque<PendingRead>,
    /// Whether a block held (read ahead or sent) is the download's own 64 KiB.
    own_in_use: bool,
    progress: Option<Arc<Progress>>,
}

impl FileBody {
    /// Streams `len` bytes of `file` from `offset`; `progress` hears of every block sent.
    pub fn new(file: File, offset: u64, len: u64, progress: Option<Arc<Progress>>) -> Self {
        let reading = Reading {
            file: Arc::new(file),
            next: offset,
            end: offset + len,
            block_size: MIN_BLOCK,
            sent: None,
            ahead: VecDeque::new(),
            own_in_use: false,
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
    /// Starts reading blocks ahead, as far as the budget allows; with nothing held and the
    /// budget spent, one block of the download's own 64 KiB.
    fn read_ahead(&mut self) {
        while self.ahead.len() < READ_AHEAD && self.next < self.end {
            let want = (self.end - self.next).min(self.block_size as u64) as usize;
            let Some((size, share)) = self.share_for(want) else { break };
            let (file, offset) = (self.file.clone(), self.next);
            self.next += size as u64;
            let read = read_pool().spawn_blocking(move || read_block(&file, offset, size));
            self.ahead.push_back(Box::pin(async move {
                let bytes = read.await.map_err(io::Error::other)??;
                Ok(Block { bytes, share })
            }));
            // A download that keeps taking blocks earns larger ones.
            self.block_size = (self.block_size * 2).min(MAX_BLOCK);
        }
    }

    /// The largest block up to `want` that the budget has room for, or the download's own.
    fn share_for(&mut self, want: usize) -> Option<(usize, Share)> {
        let mut size = want;
        loop {
            let units = size.div_ceil(MIN_BLOCK) as u32;
            if let Ok(permit) = budget().clone().try_acquire_many_owned(units) {
                return Some((size, Share::Budget(permit)));
            }
            if size <= MIN_BLOCK {
                break;
            }
            size /= 2;
        }
        if self.own_in_use || !self.ahead.is_empty() {
            return None;
        }
        self.own_in_use = true;
        Some((size.min(MIN_BLOCK), Share::Own))
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
        // Asked again: the block sent last has left the connection's write buffer.
        if let Some(Share::Own) = reading.sent.take() {
            reading.own_in_use = false;
        }
        reading.read_ahead();
        let Some(next) = reading.ahead.front_mut() else {
            if let Some(progress) = &reading.progress {
                progress.done();
            }
            return Poll::Ready(None);
        };
        let block = match next.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => {
                reading.ahead.pop_front();
                match result {
                    Ok(block) => block,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
        };
        reading.sent = Some(block.share);
        // The blocks after this one are read while it is sent.
        reading.read_ahead();
        if let Some(progress) = &reading.progress {
            progress.sent();
        }
        Poll::Ready(Some(Ok(block.bytes)))
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        if let Some(progress) = self.reading.as_ref().and_then(|r| r.progress.as_ref()) {
            progress.done();
        }
    }
}
