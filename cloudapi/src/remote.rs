//! Calls from cloudapi to the agents: each with the host's own credential, bounded in time,
//! and an answer that says whether the host could not be reached (the caller then answers 503
//! `HostUnavailable`) or what it said.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where a host is and how to call it.
#[derive(Debug, Clone)]
pub struct HostTarget {
    pub id: uuid::Uuid,
    pub name: String,
    pub url: String,
    pub credential: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("host {host} cannot be reached")]
    Unreachable {
        host: String,
        #[source]
        source: reqwest::Error,
    },
}

/// What an agent answered: its status and its JSON body (`null` if none or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The agent's error code, if it answered one.
    pub fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }
}

/// The HTTP client for every agent.
#[derive(Clone)]
pub struct Remote {
    client: reqwest::Client,
}

/// How long a short call (not a console stream) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Remote {
    pub fn new() -> Remote {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client can be built");
        Remote { client }
    }

    /// A request to `path` (under the agent's URL) with the host's credential, which may
    /// take [`CALL_TIMEOUT`] at most (a host that accepts and never answers must not hold a
    /// create or a handler forever); `.timeout()` again to allow more.
    pub fn request(&self, host: &HostTarget, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.stream_request(host, method, path).timeout(CALL_TIMEOUT)
    }

    /// As [`Remote::request`], without a time limit: for answers that stream as long as the
    /// client wants (a console that follows).
    pub fn stream_request(&self, host: &HostTarget, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", host.url.trim_end_matches('/'));
        self.client.request(method, url).bearer_auth(&host.credential)
    }

    /// Sends `request`, mapping a transport failure to `Unreachable`.
    pub async fn send(
        &self,
        host: &HostTarget,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RemoteError> {
        request.send().await.map_err(|source| RemoteError::Unreachable { host: host.name.clone(), source })
    }

    /// A short JSON call.
    pub async fn call(
        &self,
        host: &HostTarget,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, RemoteError> {
        let mut request = self.request(host, method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(host, request).await
    }

    /// Sends `request` and reads its whole (short) answer.
    pub async fn answer(
        &self,
        host: &HostTarget,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, RemoteError> {
        let response = self.send(host, request).await?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| RemoteError::Unreachable { host: host.name.clone(), source })?;
        Ok(Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }
}

impl Default for Remote {
    fn default() -> Self {
        Remote::new()
    }
}
