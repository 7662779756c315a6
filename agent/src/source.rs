//! The agent's IMGAPI sources, looked up with imgadm's rules: sources are asked in order, a
//! 404 means "try the next one", any other failure stops the lookup with a message naming the
//! source; an image must be active there; its origins are looked up on the source that had the
//! image (where they need not be active). The protocol itself is `imgapi_client`'s.

use std::time::Duration;

use imgapi_client::{Client, ClientError, ClientOptions, KeyError};
use serde_json::Value;
use uuid::Uuid;

pub use imgapi_client::Source;

/// A configured source that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceSetupError {
    #[error(transparent)]
    Url(#[from] imgapi_client::SourceError),
    #[error("source {url}: cannot use its signing key")]
    Key {
        url: String,
        #[source]
        source: KeyError,
    },
    #[error("cannot set up the HTTP client")]
    Client(#[source] ClientError),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("image {uuid} was not found on any source ({})", tried.join(", "))]
    NotFound { uuid: Uuid, tried: Vec<String> },
    #[error("image {uuid} on {source_url} is {state}, not active")]
    NotActive { uuid: Uuid, source_url: String, state: String },
    #[error("origin image {uuid} is not on source {source_url}")]
    OriginNotFound { uuid: Uuid, source_url: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no IMGAPI sources are configured")]
    NoSources,
}

/// Reads manifests and files from the configured sources, in lookup order.
#[derive(Clone)]
pub struct SourceClient {
    clients: Vec<Client>,
}

impl SourceClient {
    pub fn new(sources: Vec<Source>) -> Result<Self, SourceSetupError> {
        let options = ClientOptions {
            user_agent: concat!("imgapi-agent/", env!("CARGO_PKG_VERSION")).into(),
            connect_timeout: Duration::from_secs(15),
            // No overall timeout: image files are large. Stalls are caught per read.
            read_timeout: Duration::from_secs(60),
            ..ClientOptions::default()
        };
        let clients = sources
            .into_iter()
            .map(|source| Client::with_options(source, options.clone()))
            .collect::<Result<_, _>>()
            .map_err(SourceSetupError::Client)?;
        Ok(SourceClient { clients })
    }

    /// The sources, in lookup order.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.clients.iter().map(Client::source)
    }

    /// The client of the source with this base URL.
    pub fn client(&self, url: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.url() == url.trim_end_matches('/'))
    }

    /// The clients, in lookup order.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// The manifest of an image from the first source that has it (imgadm's lookup), with the
    /// client of that source. The image must be active there.
    pub async fn find(&self, uuid: &Uuid) -> Result<(Client, Value), SourceError> {
        if self.clients.is_empty() {
            return Err(SourceError::NoSources);
        }
        let mut tried = Vec::new();
        for client in &self.clients {
            match client.get_image(*uuid).await {
                Ok(manifest) => {
                    let state = manifest.get("state").and_then(Value::as_str).unwrap_or("unknown");
                    if state != "active" {
                        return Err(SourceError::NotActive {
                            uuid: *uuid,
                            source_url: client.url().into(),
                            state: state.to_string(),
                        });
                    }
                    return Ok((client.clone(), manifest));
                }
                Err(ClientError::NotFound { .. }) => tried.push(client.url().to_string()),
                Err(other) => return Err(other.into()),
            }
        }
        Err(SourceError::NotFound { uuid: *uuid, tried })
    }

    /// An origin's manifest from the source of the image that names it (need not be active).
    pub async fn origin(&self, client: &Client, uuid: &Uuid) -> Result<Value, SourceError> {
        client.get_image(*uuid).await.map_err(|e| match e {
            ClientError::NotFound { .. } => {
                SourceError::OriginNotFound { uuid: *uuid, source_url: client.url().into() }
            }
            other => other.into(),
        })
    }
}
