//! Small request bodies (JSON documents, icons) read whole, with a limit: a body that announces
//! more than the limit is refused before a byte is read, one that sends more is cut off as soon
//! as it passes it. Each service turns [`BodyError`] into its own `{"code","message"}` answer
//! (actix's own extractors would answer in plain text).

use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid Content-Length")]
    BadLength,
    #[error("cannot read the request body")]
    Read(#[source] actix_web::error::PayloadError),
}

/// The whole body of `req`, at most `limit` bytes.
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: actix_web::dev::Payload,
    limit: usize,
) -> Result<web::Bytes, BodyError> {
    let announced = match req.headers().get(actix_web::http::header::CONTENT_LENGTH) {
        None => None,
        Some(value) => {
            Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or(BodyError::BadLength)?)
        }
    };
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(announced.unwrap_or(0) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
