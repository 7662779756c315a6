//! Response bodies for stored files: a blocking reader thread reads 1 MiB at a time (64 KiB
//! reads, as actix-files does, reach a third of nginx here; see perf-limits.md) into a short
//! bounded queue, and the body announces its exact length so it is never sent chunked.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

const READ_SIZE: usize = 1 << 20;
/// Blocks read ahead of the socket: bounded memory per download (about 4 MiB).
const READ_AHEAD: usize = 4;

/// The bytes `[offset, offset + len)` of a file, streamed.
pub struct FileBody {
    len: u64,
    rx: Option<mpsc::Receiver<io::Result<Bytes>>>,
}

impl FileBody {
    /// Starts reading `len` bytes of `file` from `offset`. The reader stops when the client
    /// goes away (the queue's receiver is dropped).
    pub fn new(mut file: File, offset: u64, len: u64) -> Self {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut remaining = len;
            while remaining > 0 {
                let want = remaining.min(READ_SIZE as u64) as usize;
                let mut block = BytesMut::zeroed(want);
                let result = service_kit::read_full(&mut file, &mut block).and_then(|n| {
                    if n == 0 {
                        // The file is shorter than its record says: end the response early
                        // rather than send wrong bytes; the client sees a short body.
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stored file is truncated"))
                    } else {
                        block.truncate(n);
                        Ok(block.freeze())
                    }
                });
                let failed = result.is_err();
                if let Ok(block) = &result {
                    remaining -= block.len() as u64;
                }
                if tx.blocking_send(result).is_err() || failed {
                    return;
                }
            }
        });
        FileBody { len, rx: Some(rx) }
    }

    /// A body that announces `len` bytes but sends none: for HEAD responses.
    pub fn head(len: u64) -> Self {
        FileBody { len, rx: None }
    }
}

impl MessageBody for FileBody {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.len)
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }
}
