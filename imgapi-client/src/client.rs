//! The client: one IMGAPI server ([`Source`]), the requests imgadm and sdc-clients make of it,
//! and what their answers must look like. Every request carries `Accept: application/json`,
//! `Accept-Version: ~2`, the source's channel and its credentials. Error answers become
//! [`ClientError`]s with the server's code and message; a 404 for an image is
//! [`ClientError::NotFound`], which multi-source lookups take as "try the next source".

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::auth::{http_date, SignedParts};
use crate::{Auth, ClientError, Compression, ErrorAnswer, ErrorBody, KeyError, Source};

/// The most images an IMGAPI server returns in one ListImages page (sdc-imgapi's limit).
pub const PAGE_SIZE: usize = 1000;

/// Error bodies are read up to this size: enough for any message, and a hostile server cannot
/// make the client buffer a gigabyte of "error".
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// JSON answers (manifests, pages of 1,000 of them) are read up to this size.
const JSON_LIMIT: usize = 64 << 20;

/// How the client behaves on the network.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of an answer. There is no overall timeout: image files
    /// are large, and a slow but steady download must not be cut.
    pub read_timeout: Duration,
    /// Images per ListImages page (at most [`PAGE_SIZE`] on a real server).
    pub page_size: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            user_agent: concat!("imgapi-client/", env!("CARGO_PKG_VERSION")).into(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            page_size: PAGE_SIZE,
        }
    }
}

/// A client of one IMGAPI server. Cheap to clone (connections are shared).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    source: Source,
    page_size: usize,
}

/// The file of an AddImageFile request.
#[derive(Debug, Clone)]
pub struct FileUpload {
    pub compression: Compression,
    /// Checked by the server: a mismatch is refused and nothing is kept.
    pub sha1: Option<String>,
    /// Sent as `Content-Length` when known; the server checks it too.
    pub size: Option<u64>,
    pub dataset_guid: Option<String>,
}

/// A file download in progress: its bytes come chunk by chunk.
pub struct FileDownload {
    url: String,
    /// Bytes this answer carries (`Content-Length`), from the requested offset on.
    pub length: Option<u64>,
    response: reqwest::Response,
}

impl FileDownload {
    /// The next bytes; `None` at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.response.chunk().await.map_err(|source| ClientError::Broken { url: self.url.clone(), source })
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
        let url = self.url;
        self.response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|source| ClientError::Broken { url: url.clone(), source }))
    }
}

impl Client {
    pub fn new(source: Source) -> Result<Client, ClientError> {
        Client::with_options(source, ClientOptions::default())
    }

    pub fn with_options(source: Source, options: ClientOptions) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(options.user_agent)
            // imgadm follows no redirect; neither does a client that must see what it is sent.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Client { http, source, page_size: options.page_size.clamp(1, PAGE_SIZE) })
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The server's base URL, without credentials: for messages.
    pub fn url(&self) -> &str {
        &self.source.base
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.source.base))
            .header(header::ACCEPT, "application/json")
            .header("accept-version", "~2");
        let mut params: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Some(channel) = &self.source.channel {
            params.push(("channel", channel));
        }
        if !params.is_empty() {
            request = request.query(&params);
        }
        Ok(match &self.source.auth {
            Auth::None => request,
            Auth::Basic { user, password } => request.basic_auth(user, password.as_deref()),
            Auth::Signature { user, key } => {
                // The method, path, query and host are signed with the date, so that a captured
                // request cannot be replayed as another one (the reference signs the date only).
                let (http, built) = request.build_split();
                let mut built = built.map_err(ClientError::Setup)?;
                let url = built.url();
                let target = match url.query() {
                    Some(query) => {
                        format!("{} {}?{query}", built.method().as_str().to_ascii_lowercase(), url.path())
                    }
                    None => format!("{} {}", built.method().as_str().to_ascii_lowercase(), url.path()),
                };
                let host = match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                    None => url.host_str().unwrap_or_default().to_string(),
                };
                let date = http_date();
                let authorization =
                    key.authorization(user, &SignedParts { target: &target, host: &host, date: &date })?;
                let headers = built.headers_mut();
                for (name, value) in
                    [(header::HOST, host), (header::DATE, date), (header::AUTHORIZATION, authorization)]
                {
                    let value = header::HeaderValue::from_str(&value)
                        .map_err(|e| KeyError::Unsupported(format!("cannot send the {name} header: {e}")))?;
                    headers.insert(name, value);
                }
                reqwest::RequestBuilder::from_parts(http, built)
            }
        })
    }

    /// Sends a request; an error answer becomes the matching [`ClientError`]. `image`: the
    /// image the path is about, whose 404 is [`ClientError::NotFound`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        method: &Method,
        path: &str,
        image: Option<Uuid>,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url: self.url().into(), source })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if let (StatusCode::NOT_FOUND, Some(uuid)) = (status, image) {
            return Err(ClientError::NotFound { url: self.url().into(), uuid });
        }
        let body = read_limited(response, ERROR_BODY_LIMIT).await.unwrap_or_default();
        let (code, message) = match ErrorBody::parse(&body) {
            Some(error) => (Some(error.code), error.message),
            None => (None, String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string()),
        };
        Err(ClientError::Status(Box::new(ErrorAnswer {
            url: self.url().into(),
            method: method.to_string(),
            path: path.into(),
            status: status.as_u16(),
            code,
            message,
        })))
    }

    /// Sends a request and reads its JSON answer.
    async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        image: Option<Uuid>,
    ) -> Result<Value, ClientError> {
        let mut request = self.request(method.clone(), path, query)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request, &method, path, image).await?;
        self.parse_json(response).await
    }

    async fn parse_json(&self, response: reqwest::Response) -> Result<Value, ClientError> {
        let bad = |message: String| ClientError::BadAnswer { url: self.url().into(), message };
        let bytes = read_limited(response, JSON_LIMIT)
            .await
            .map_err(|source| ClientError::Broken { url: self.url().into(), source })?;
        if bytes.len() >= JSON_LIMIT {
            return Err(bad(format!("an answer of more than {JSON_LIMIT} bytes")));
        }
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))
    }

    /// `GET /ping`: the server's `{"ping": "pong", "imgapi": true, ...}`.
    pub async fn ping(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/ping", &[], None, None).await
    }

    /// `GET /images/:uuid`: the image's manifest (of any state). Checked to be a JSON object
    /// about that image.
    pub async fn get_image(&self, uuid: Uuid) -> Result<Value, ClientError> {
        let manifest = self.json(Method::GET, &format!("/images/{uuid}"), &[], None, Some(uuid)).await?;
        self.check_manifest(uuid, manifest)
    }

    fn check_manifest(&self, uuid: Uuid, manifest: Value) -> Result<Value, ClientError> {
        if manifest.get("uuid").and_then(Value::as_str) != Some(uuid.to_string().as_str()) {
            return Err(ClientError::BadAnswer {
                url: self.url().into(),
                message: format!("the manifest asked for as {uuid} is another image's"),
            });
        }
        Ok(manifest)
    }

    /// `GET /images` with `filters` (`os`, `name`, `state`...), every page of it: pages of
    /// [`PAGE_SIZE`] images are followed with `marker` as sdc-clients' `listAllImages` does
    /// (the marker may be inclusive or not; a repeated marker ends the listing).
    pub async fn list_images(&self, filters: &[(&str, &str)]) -> Result<Vec<Value>, ClientError> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = filters.iter().map(|(k, v)| (*k, v.to_string())).collect();
            query.push(("limit", self.page_size.to_string()));
            if let Some(marker) = &marker {
                query.push(("marker", marker.clone()));
            }
            let page = match self.json(Method::GET, "/images", &query, None, None).await? {
                Value::Array(page) => page,
                other => {
                    return Err(ClientError::BadAnswer {
                        url: self.url().into(),
                        message: format!("ListImages answered a {} instead of an array", json_kind(&other)),
                    })
                }
            };
            let uuid_of =
                |m: Option<&Value>| m.and_then(|m| m.get("uuid")).and_then(Value::as_str).map(str::to_owned);
            let full = page.len() >= self.page_size;
            let last = uuid_of(page.last());
            let skip = usize::from(marker.is_some() && uuid_of(page.first()) == marker);
            all.extend(page.into_iter().skip(skip));
            match (full, last) {
                (true, Some(last)) if marker.as_deref() != Some(&last) => marker = Some(last),
                _ => return Ok(all),
            }
        }
    }

    /// `GET /images/:uuid/file`, from byte `offset` on. An offset above 0 is a Range request,
    /// and an answer that is not that range (a 200 with the whole file, another start) is
    /// [`ClientError::NoResume`].
    pub async fn get_file(&self, uuid: Uuid, offset: u64) -> Result<FileDownload, ClientError> {
        let path = format!("/images/{uuid}/file");
        let mut request = self.request(Method::GET, &path, &[])?;
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let response = self.send(request, &Method::GET, &path, Some(uuid)).await?;
        if offset > 0
            && (response.status() != StatusCode::PARTIAL_CONTENT
                || content_range_start(&response) != Some(offset))
        {
            return Err(ClientError::NoResume { url: self.url().into(), uuid, offset });
        }
        Ok(FileDownload { url: self.url().into(), length: response.content_length(), response })
    }

    /// `POST /images`: CreateImage; the server picks the uuid. Answers the new manifest.
    pub async fn create_image(&self, manifest: &Value) -> Result<Value, ClientError> {
        self.json(Method::POST, "/images", &[], Some(manifest), None).await
    }

    /// `POST /images/:uuid?action=import`: AdminImportImage, keeping the manifest's uuid.
    pub async fn import_image(&self, uuid: Uuid, manifest: &Value) -> Result<Value, ClientError> {
        let query = [("action", "import".to_string())];
        self.json(Method::POST, &format!("/images/{uuid}"), &query, Some(manifest), None).await
    }

    /// `PUT /images/:uuid/file`: AddImageFile, streaming `body`. Answers the manifest with its
    /// file, which the caller compares with what it sent.
    pub async fn add_file(
        &self,
        uuid: Uuid,
        file: &FileUpload,
        body: reqwest::Body,
    ) -> Result<Value, ClientError> {
        let path = format!("/images/{uuid}/file");
        let mut query = vec![("compression", file.compression.as_str().to_string())];
        if let Some(sha1) = &file.sha1 {
            query.push(("sha1", sha1.clone()));
        }
        if let Some(guid) = &file.dataset_guid {
            query.push(("dataset_guid", guid.clone()));
        }
        let mut request = self
            .request(Method::PUT, &path, &query)?
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(size) = file.size {
            request = request.header(header::CONTENT_LENGTH, size);
        }
        let response = self.send(request, &Method::PUT, &path, Some(uuid)).await?;
        self.parse_json(response).await
    }

    /// `POST /images/:uuid?action=activate`: ActivateImage.
    pub async fn activate_image(&self, uuid: Uuid) -> Result<Value, ClientError> {
        let query = [("action", "activate".to_string())];
        self.json(Method::POST, &format!("/images/{uuid}"), &query, None, Some(uuid)).await
    }

    /// `DELETE /images/:uuid`: DeleteImage.
    pub async fn delete_image(&self, uuid: Uuid) -> Result<(), ClientError> {
        let path = format!("/images/{uuid}");
        let request = self.request(Method::DELETE, &path, &[])?;
        self.send(request, &Method::DELETE, &path, Some(uuid)).await.map(drop)
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` answer.
fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    value.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// The body, up to `limit` bytes (the rest is not read).
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}
