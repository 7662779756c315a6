//! GetImageFile of an image being pulled through: the response follows the file as the copy
//! writes it, so the first client gets bytes while the image is stored, and every concurrent
//! client reads the same copy. The last byte is held back until the copy is verified (sha1,
//! size) and stored: a copy that fails ends the response short, and the client's own
//! Content-Length check sees it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;

use super::error::ApiError;
use super::is_head;
use crate::service::remote::Pull;
use crate::store::upload::Written;

/// Bytes read from the growing file at a time.
const CHUNK: u64 = 1 << 20;

/// The response for `pull`, or `None` when the copy finished (or failed) before the file
/// could be opened: then the store has the answer.
pub async fn follow(req: &HttpRequest, pull: Arc<Pull>) -> Result<Option<HttpResponse>, ApiError> {
    let path = pull.path.clone();
    let Ok(Ok(file)) = web::block(move || File::open(path)).await else {
        // Renamed into place already: the copy is (about to be) done.
        let mut written = pull.written.clone();
        let _ = written.wait_for(|w| !matches!(w, Written::Partial(_))).await;
        return Ok(None);
    };
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((header::ETAG, format!("\"{}\"", pull.sha1)))
        .no_chunking(pull.size);
    if is_head(req) {
        return Ok(Some(response.finish()));
    }
    let state = Follow { file: Some(file), sent: 0, pull };
    let body = stream::unfold(state, |mut state| async move {
        match state.next().await {
            Ok(Some(bytes)) => Some((Ok(bytes), state)),
            Ok(None) => None,
            Err(error) => Some((Err(error), Follow { file: None, ..state })),
        }
    });
    Ok(Some(response.streaming(body)))
}

struct Follow {
    /// `None` once the stream failed: it ends after the error.
    file: Option<File>,
    sent: u64,
    pull: Arc<Pull>,
}

impl Follow {
    async fn next(&mut self) -> Result<Option<web::Bytes>, actix_web::Error> {
        let size = self.pull.size;
        if self.sent == size || self.file.is_none() {
            return Ok(None);
        }
        let mut written = self.pull.written.clone();
        loop {
            // Everything but the last byte may go as soon as it is on disk.
            let ready = match *written.borrow_and_update() {
                Written::Partial(n) => n.min(size - 1),
                Written::Verified => size,
                Written::Failed => {
                    return Err(actix_web::error::ErrorServiceUnavailable("the pull-through copy failed"))
                }
            };
            if ready > self.sent {
                let want = (ready - self.sent).min(CHUNK);
                let mut file = self.file.take().expect("checked above");
                let offset = self.sent;
                let (file, bytes) = web::block(move || {
                    let mut buffer = vec![0u8; want as usize];
                    let read = file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut buffer));
                    (file, read.map(|()| buffer))
                })
                .await
                .map_err(actix_web::error::ErrorInternalServerError)?;
                let bytes = bytes.map_err(actix_web::error::ErrorInternalServerError)?;
                self.file = Some(file);
                self.sent += bytes.len() as u64;
                return Ok(Some(web::Bytes::from(bytes)));
            }
            if written.changed().await.is_err() {
                return Err(actix_web::error::ErrorServiceUnavailable("the pull-through copy stopped"));
            }
        }
    }
}
