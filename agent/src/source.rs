//! IMGAPI sources and the client that reads them, following imgadm's rules: sources are asked
//! in order, a 404 means "try the next one", any other failure stops the lookup with a message
//! naming the source; an image's origins are looked up on the source that had the image.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use url::Url;
use uuid::Uuid;

/// One IMGAPI source. Credentials are kept apart from the URL so that they never appear in
/// logs, errors or API answers.
#[derive(Clone)]
pub struct Source {
    /// The base URL without credentials and without a trailing slash.
    pub url: String,
    /// `?channel=` of the configured URL, sent with every request (as imgadm does).
    pub channel: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("url", &self.url).field("user", &self.user).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceParseError {
    #[error("invalid source URL {url:?}: {message}")]
    Invalid { url: String, message: String },
}

impl Source {
    /// Parses `http[s]://[user:pass@]host[:port][/prefix]`; explicit credentials win over the
    /// URL's.
    pub fn parse(text: &str, user: Option<&str>, password: Option<&str>) -> Result<Source, SourceParseError> {
        let invalid = |message: String| SourceParseError::Invalid { url: redact(text), message };
        let mut url = Url::parse(text).map_err(|e| invalid(e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid(format!("scheme {:?} is not http or https", url.scheme())));
        }
        if url.host_str().is_none() {
            return Err(invalid("no host".into()));
        }
        let decode = |s: &str| percent_decode(s);
        let url_user = (!url.username().is_empty()).then(|| decode(url.username()));
        let url_password = url.password().map(decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let channel = url.query_pairs().find(|(k, _)| k == "channel").map(|(_, v)| v.into_owned());
        url.set_query(None);
        url.set_fragment(None);
        let base = url.as_str().trim_end_matches('/').to_string();
        Ok(Source {
            url: base,
            channel,
            user: user.map(str::to_owned).or(url_user),
            password: password.map(str::to_owned).or(url_password),
        })
    }

    pub fn has_credentials(&self) -> bool {
        self.user.is_some()
    }

    fn request(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        self.decorate(client.get(format!("{}{}", self.url, path)))
    }

    /// A request to this source for the blocking client (publishing runs on its own thread).
    pub fn blocking_request(
        &self,
        client: &reqwest::blocking::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        self.decorate(client.request(method, format!("{}{}", self.url, path)))
    }

    /// What every request to the source carries: the API version, its channel, its credentials.
    fn decorate<B: Builder>(&self, request: B) -> B {
        let request = request.header("accept", "application/json").header("accept-version", "~2");
        let request = match &self.channel {
            Some(channel) => request.query(&[("channel", channel.as_str())]),
            None => request,
        };
        match &self.user {
            Some(user) => request.basic_auth(user, self.password.as_deref()),
            None => request,
        }
    }
}

/// The request builders of reqwest's async and blocking clients, as `decorate` uses them.
trait Builder: Sized {
    fn header(self, name: &str, value: &str) -> Self;
    fn query(self, pairs: &[(&str, &str)]) -> Self;
    fn basic_auth(self, user: &str, password: Option<&str>) -> Self;
}

impl Builder for reqwest::RequestBuilder {
    fn header(self, name: &str, value: &str) -> Self {
        reqwest::RequestBuilder::header(self, name, value)
    }
    fn query(self, pairs: &[(&str, &str)]) -> Self {
        reqwest::RequestBuilder::query(self, pairs)
    }
    fn basic_auth(self, user: &str, password: Option<&str>) -> Self {
        reqwest::RequestBuilder::basic_auth(self, user, password)
    }
}

impl Builder for reqwest::blocking::RequestBuilder {
    fn header(self, name: &str, value: &str) -> Self {
        reqwest::blocking::RequestBuilder::header(self, name, value)
    }
    fn query(self, pairs: &[(&str, &str)]) -> Self {
        reqwest::blocking::RequestBuilder::query(self, pairs)
    }
    fn basic_auth(self, user: &str, password: Option<&str>) -> Self {
        reqwest::blocking::RequestBuilder::basic_auth(self, user, password)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A URL with any `user:password@` removed, for messages about a URL that did not parse.
fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***@{}", &text[..scheme_end + 3], &text[at + 1..])
        }
        _ => text.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("image {uuid} was not found on any source ({})", tried.join(", "))]
    NotFound { uuid: Uuid, tried: Vec<String> },
    #[error("image {uuid} on {source_url} is {state}, not active")]
    NotActive { uuid: Uuid, source_url: String, state: String },
    #[error("origin image {uuid} is not on source {source_url}")]
    OriginNotFound { uuid: Uuid, source_url: String },
    #[error("source {source_url} answered {status} for {path}: {message}")]
    Status { source_url: String, path: String, status: u16, message: String },
    #[error("cannot reach source {source_url}")]
    Unreachable {
        source_url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("source {source_url} returned an invalid manifest for {uuid}: {message}")]
    BadManifest { source_url: String, uuid: Uuid, message: String },
    #[error("no IMGAPI sources are configured")]
    NoSources,
}

/// Reads manifests and files from the configured sources.
#[derive(Clone)]
pub struct SourceClient {
    client: reqwest::Client,
    sources: Vec<Source>,
}

impl SourceClient {
    pub fn new(sources: Vec<Source>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            // No overall timeout: image files are large. Stalls are caught per read.
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("imgapi-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is compiled in");
        SourceClient { client, sources }
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The manifest of an image from the first source that has it (imgadm's lookup). The
    /// image must be active there.
    pub async fn find(&self, uuid: &Uuid) -> Result<(Source, Value), SourceError> {
        if self.sources.is_empty() {
            return Err(SourceError::NoSources);
        }
        let mut tried = Vec::new();
        for source in &self.sources {
            match self.manifest(source, uuid).await? {
                Some(manifest) => {
                    let state = manifest.get("state").and_then(Value::as_str).unwrap_or("unknown");
                    if state != "active" {
                        return Err(SourceError::NotActive {
                            uuid: *uuid,
                            source_url: source.url.clone(),
                            state: state.to_string(),
                        });
                    }
                    return Ok((source.clone(), manifest));
                }
                None => tried.push(source.url.clone()),
            }
        }
        Err(SourceError::NotFound { uuid: *uuid, tried })
    }

    /// An origin's manifest from the source of the image that names it (need not be active).
    pub async fn origin(&self, source: &Source, uuid: &Uuid) -> Result<Value, SourceError> {
        self.manifest(source, uuid)
            .await?
            .ok_or_else(|| SourceError::OriginNotFound { uuid: *uuid, source_url: source.url.clone() })
    }

    /// `GET /images/:uuid`: `None` on 404.
    async fn manifest(&self, source: &Source, uuid: &Uuid) -> Result<Option<Value>, SourceError> {
        let path = format!("/images/{uuid}");
        let response = source
            .request(&self.client, &path)
            .send()
            .await
            .map_err(|e| SourceError::Unreachable { source_url: source.url.clone(), source: e })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| SourceError::Unreachable { source_url: source.url.clone(), source: e })?;
        if !status.is_success() {
            return Err(status_error(source, &path, status, &body));
        }
        let manifest: Value = serde_json::from_slice(&body).map_err(|e| SourceError::BadManifest {
            source_url: source.url.clone(),
            uuid: *uuid,
            message: format!("not JSON: {e}"),
        })?;
        if manifest.get("uuid").and_then(Value::as_str) != Some(uuid.to_string().as_str()) {
            return Err(SourceError::BadManifest {
                source_url: source.url.clone(),
                uuid: *uuid,
                message: "its uuid is not the one asked for".into(),
            });
        }
        Ok(Some(manifest))
    }

    /// `GET /images/:uuid/file`, from byte `offset` on (a Range request when resuming).
    pub async fn file(
        &self,
        source: &Source,
        uuid: &Uuid,
        offset: u64,
    ) -> Result<reqwest::Response, SourceError> {
        let path = format!("/images/{uuid}/file");
        let mut request = source.request(&self.client, &path);
        if offset > 0 {
            request = request.header("range", format!("bytes={offset}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| SourceError::Unreachable { source_url: source.url.clone(), source: e })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(status_error(source, &path, status, &body))
    }
}

fn status_error(source: &Source, path: &str, status: StatusCode, body: &[u8]) -> SourceError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| {
            let code = v.get("code").and_then(Value::as_str)?;
            let message = v.get("message").and_then(Value::as_str).unwrap_or("");
            Some(format!("{code}: {message}"))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string());
    SourceError::Status {
        source_url: source.url.clone(),
        path: path.into(),
        status: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        let s = Source::parse("http://admin:s%40cret@images.example.com:8080/prefix/", None, None).unwrap();
        assert_eq!(s.url, "http://images.example.com:8080/prefix");
        assert_eq!((s.user.as_deref(), s.password.as_deref()), (Some("admin"), Some("s@cret")));
        assert!(!format!("{s:?}").contains("s@cret"));
        let s = Source::parse("https://images.smartos.org", Some("u"), Some("p")).unwrap();
        assert_eq!(s.url, "https://images.smartos.org");
        assert_eq!(s.user.as_deref(), Some("u"));
        let s = Source::parse("http://h/?channel=dev", None, None).unwrap();
        assert_eq!((s.url.as_str(), s.channel.as_deref()), ("http://h", Some("dev")));
    }

    #[test]
    fn bad_urls_never_echo_passwords() {
        for bad in ["ftp://h/", "not a url", "http://user:pw@", "file:///etc"] {
            let err = Source::parse(bad, None, None).unwrap_err().to_string();
            assert!(!err.contains(":pw@"), "{err}");
        }
    }
}
