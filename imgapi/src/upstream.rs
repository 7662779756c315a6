//! A client of another IMGAPI server (an *upstream*): manifests, listings and file streams,
//! for `?source=` imports and mirrors. The URL may carry credentials (`http://user:pass@host/`)
//! and a `?channel=` that is sent with every request, as `imgadm` does.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use uuid::Uuid;

/// An upstream that failed: unreachable, an error answer, or garbage.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid source URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    #[error("{0}")]
    Remote(String),
    /// The upstream answered 404 for this image.
    #[error("image {0} not found on the source")]
    NotFound(Uuid),
}

/// What a file download announces before the bytes come.
pub struct FileStream {
    pub length: Option<u64>,
    pub body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
}

#[derive(Clone)]
pub struct Upstream {
    /// Without credentials or query, without a trailing slash: for messages and requests.
    pub base: String,
    channel: Option<String>,
    credentials: Option<(String, String)>,
    client: reqwest::Client,
}

/// Listing pages of this many images (the most an IMGAPI server returns at once).
const PAGE: usize = 1000;

impl Upstream {
    pub fn new(url: &str) -> Result<Self, UpstreamError> {
        let bad = |message: String| UpstreamError::BadUrl { url: redact(url), message };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("only http and https sources are supported".into()));
        }
        let channel = parsed.query_pairs().find(|(k, _)| k == "channel").map(|(_, v)| v.into_owned());
        let credentials = (!parsed.username().is_empty())
            .then(|| (percent_decode(parsed.username()), percent_decode(parsed.password().unwrap_or(""))));
        let mut base = parsed.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.set_fragment(None);
        let base = base.as_str().trim_end_matches('/').to_string();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A stalled upstream must not stall a copy forever; a large file at any sane speed
            // keeps sending within this.
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("imgapi/", env!("CARGO_PKG_VERSION"), " (mirror)"))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Upstream { base, channel, credentials, client })
    }

    fn request(&self, path: &str, query: &[(&str, String)]) -> reqwest::RequestBuilder {
        let mut request = self.client.get(format!("{}{path}", self.base));
        let mut params: Vec<(&str, String)> = query.to_vec();
        if let Some(channel) = &self.channel {
            params.push(("channel", channel.clone()));
        }
        if !params.is_empty() {
            request = request.query(&params);
        }
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        request
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        uuid: Option<Uuid>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let response =
            request.send().await.map_err(|e| UpstreamError::Remote(format!("{}: {e}", self.base)))?;
        match (response.status().as_u16(), uuid) {
            (200..=299, _) => Ok(response),
            (404, Some(uuid)) => Err(UpstreamError::NotFound(uuid)),
            (status, _) => {
                let body = response.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| body.chars().take(200).collect());
                Err(UpstreamError::Remote(format!("{} answered {status}: {message}", self.base)))
            }
        }
    }

    /// `GET /images/:uuid`.
    pub async fn manifest(&self, uuid: Uuid) -> Result<Value, UpstreamError> {
        let response = self.send(self.request(&format!("/images/{uuid}"), &[]), Some(uuid)).await?;
        let manifest: Value = response
            .json()
            .await
            .map_err(|e| UpstreamError::Remote(format!("{}: bad manifest for {uuid}: {e}", self.base)))?;
        if manifest.get("uuid").and_then(Value::as_str) != Some(&uuid.to_string()) {
            return Err(UpstreamError::Remote(format!(
                "{}: the manifest of {uuid} names another uuid",
                self.base
            )));
        }
        Ok(manifest)
    }

    /// Every image of `GET /images` with the given filters, page by page (`marker`).
    pub async fn list(&self, filters: &[(String, String)]) -> Result<Vec<Value>, UpstreamError> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> =
                filters.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            query.push(("limit", PAGE.to_string()));
            if let Some(marker) = &marker {
                query.push(("marker", marker.clone()));
            }
            let response = self.send(self.request("/images", &query), None).await?;
            let page: Vec<Value> = response
                .json()
                .await
                .map_err(|e| UpstreamError::Remote(format!("{}: bad image list: {e}", self.base)))?;
            let full = page.len() >= PAGE;
            let last = page.last().and_then(|m| m.get("uuid")).and_then(Value::as_str).map(str::to_string);
            // A marker is inclusive in IMGAPI: skip the repeated first entry.
            let skip = usize::from(
                marker.is_some()
                    && page.first().and_then(|m| m.get("uuid")).and_then(Value::as_str) == marker.as_deref(),
            );
            all.extend(page.into_iter().skip(skip));
            match (full, last) {
                (true, Some(last)) if marker.as_deref() != Some(&last) => marker = Some(last),
                _ => return Ok(all),
            }
        }
    }

    /// `GET /images/:uuid/file`, from byte `offset` on (a Range request) when not 0.
    pub async fn file(&self, uuid: Uuid, offset: u64) -> Result<FileStream, UpstreamError> {
        let mut request = self.request(&format!("/images/{uuid}/file"), &[]);
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let response = self.send(request, Some(uuid)).await?;
        if offset > 0 && response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(UpstreamError::Remote(format!("{}: no range support for {uuid}", self.base)));
        }
        let length = response.content_length();
        let base = self.base.clone();
        let body = response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| UpstreamError::Remote(format!("{base}: download broke: {e}")))
        });
        Ok(FileStream { length, body: Box::pin(body) })
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A source URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
