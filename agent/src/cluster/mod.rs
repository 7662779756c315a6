//! Membership of a fleet run by cloudapi: the agent joins (its join token exchanged for a
//! credential of its own, kept in the identity file), comes back as the same host after a
//! restart, and heartbeats its capacity, allocations, images and instances every few seconds.
//! cloudapi calls this agent with the host's credential, which the API accepts as it accepts
//! the config's tokens. An agent without a `cluster` section never starts any of this.

pub mod capacity;
pub mod identity;
pub mod inventory;

use std::path::PathBuf;
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use service_kit::auth::Credentials;
use service_kit::cluster::{self as wire, Registered, Registration};

use crate::config::ClusterConfig;
use crate::instance::manager::Instances;
use crate::storage::ImageStorage;
use capacity::Meter;
use identity::Identity;

/// The host's credential once it has one: the API accepts it as a bearer token.
#[derive(Clone, Default)]
pub struct HostCredential(Arc<RwLock<Option<Credentials>>>);

impl HostCredential {
    fn set(&self, credential: Option<&str>) {
        let credentials = credential.map(|c| Credentials::default().with_token(c));
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = credentials;
    }

    /// Whether `authorization` carries the host's credential.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let guard = self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref().is_some_and(|c| c.check(authorization).is_ok())
    }
}

/// What the member needs of the agent.
pub struct Parts {
    pub config: ClusterConfig,
    pub identity_file: PathBuf,
    pub hypervisor: &'static str,
    pub meter: Meter,
    pub storage: Arc<dyn ImageStorage>,
    pub instances: Arc<Instances>,
    pub credential: HostCredential,
}

/// The membership's thread; it ends when this is dropped (at the latest once its current
/// request has timed out).
pub struct Member {
    _stop: mpsc::Sender<()>,
}

/// How long one call to cloudapi may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("cloudapi cannot be reached")]
    Unreachable(#[source] reqwest::Error),
    /// The credential (or join token) was refused, or the host is not known (removed).
    #[error("cloudapi refused this host's credential ({0})")]
    Refused(StatusCode),
    #[error("cloudapi answered {status}: {body}")]
    Failed { status: StatusCode, body: String },
}

/// The identity in the file, if it was issued by this config's cloudapi.
fn load_identity(parts: &Parts) -> Option<Identity> {
    match identity::load(&parts.identity_file) {
        Ok(Some(identity)) if identity.cloudapi == parts.config.url => Some(identity),
        Ok(Some(identity)) => {
            tracing::warn!(was = %identity.cloudapi, now = %parts.config.url, "cluster.url changed: joining the new cloudapi with the join token");
            None
        }
        Ok(None) => None,
        Err(error) => {
            tracing::error!(error = %service_kit::ErrorChain(&error), "cannot read the cluster identity: joining with the join token");
            None
        }
    }
}

/// The host's name in the fleet.
fn host_name(config: &ClusterConfig) -> String {
    config.name.clone().unwrap_or_else(|| {
        nix::unistd::gethostname().ok().and_then(|n| n.into_string().ok()).unwrap_or_else(|| "agent".into())
    })
}

impl Member {
    /// Starts the membership: loads the identity (so that cloudapi's calls are accepted at
    /// once), then registers and heartbeats on a thread of its own.
    pub fn start(parts: Parts) -> Member {
        let (stop, stopped) = mpsc::channel();
        let identity = load_identity(&parts);
        parts.credential.set(identity.as_ref().map(|i| i.credential.as_str()));
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || run(parts, identity, stopped))
            .expect("a thread can be spawned at start-up");
        Member { _stop: stop }
    }
}

struct Session {
    client: Client,
    base: String,
}

impl Session {
    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, CallError> {
        let response = request.send().map_err(CallError::Unreachable)?;
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND) {
            return Err(CallError::Refused(status));
        }
        if !status.is_success() {
            let body: String = response.text().unwrap_or_default().chars().take(500).collect();
            return Err(CallError::Failed { status, body });
        }
        Ok(response)
    }

    fn register(&self, bearer: &str, registration: &Registration) -> Result<Registered, CallError> {
        let url = format!("{}{}", self.base, wire::REGISTER_PATH);
        let response = self.send(self.client.post(url).bearer_auth(bearer).json(registration))?;
        response.json().map_err(CallError::Unreachable)
    }

    fn heartbeat(&self, identity: &Identity, beat: &wire::Heartbeat) -> Result<(), CallError> {
        let url = format!("{}{}", self.base, wire::heartbeat_path(&identity.id));
        self.send(self.client.put(url).bearer_auth(&identity.credential).json(beat)).map(drop)
    }
}

fn run(parts: Parts, mut identity: Option<Identity>, stopped: mpsc::Receiver<()>) {
    let client = match Client::builder().timeout(CALL_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %service_kit::ErrorChain(&error), "no HTTP client: this host does not join its fleet");
            return;
        }
    };
    let session = Session { client, base: parts.config.url.trim_end_matches('/').to_string() };
    let name = host_name(&parts.config);
    let interval = Duration::from_secs(parts.config.heartbeat_secs);
    // Registered during this run: a restart registers again (the URL, tags or capacity may
    // have changed), with the credential.
    let mut registered = false;
    // Failures are logged when they start and when they end, not at every beat.
    let mut failing = false;
    loop {
        let outcome = if registered {
            beat(&parts, &session, identity.as_ref().expect("registered hosts have an identity"))
        } else {
            join(&parts, &session, &name, &mut identity).map(|()| registered = true)
        };
        match outcome {
            Ok(()) if failing => {
                tracing::info!(cloudapi = %parts.config.url, "cloudapi reached again");
                failing = false;
            }
            Ok(()) => {}
            Err(CallError::Refused(status)) if registered => {
                tracing::warn!(%status, "cloudapi no longer knows this host: registering again");
                registered = false;
                continue;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(cloudapi = %parts.config.url, error = %service_kit::ErrorChain(&error), "cluster: will retry every {}s", interval.as_secs());
                }
                failing = true;
            }
        }
        match stopped.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Registers: with the credential when the host has one, else with the join token. A refused
/// credential (the host was removed from the fleet, which revokes it) is forgotten, and the
/// next attempt joins anew with the join token.
fn join(
    parts: &Parts,
    session: &Session,
    name: &str,
    identity: &mut Option<Identity>,
) -> Result<(), CallError> {
    let registration = Registration {
        name: name.to_string(),
        url: parts.config.advertise_url.clone(),
        hypervisor: parts.hypervisor.to_string(),
        tags: parts.config.tags.clone(),
        capacity: parts.meter.measure(),
    };
    let bearer = identity.as_ref().map_or(parts.config.join_token.as_str(), |i| i.credential.as_str());
    match session.register(bearer, &registration) {
        Ok(registered) => {
            let fresh = Identity {
                cloudapi: parts.config.url.clone(),
                id: registered.id,
                name: name.to_string(),
                credential: registered.credential,
            };
            if identity.as_ref() != Some(&fresh) {
                if let Err(error) = identity::save(&parts.identity_file, &fresh) {
                    // Serving on is better than nothing: the next start joins again.
                    tracing::error!(error = %service_kit::ErrorChain(&error), "cannot keep the cluster identity");
                }
                parts.credential.set(Some(&fresh.credential));
            }
            tracing::info!(host = %fresh.id, name, cloudapi = %parts.config.url, "joined the fleet");
            *identity = Some(fresh);
            Ok(())
        }
        Err(CallError::Refused(status)) if identity.is_some() => {
            tracing::warn!(%status, "cloudapi refused this host's credential (removed from the fleet?): joining again with the join token");
            if let Err(error) = identity::remove(&parts.identity_file) {
                tracing::error!(error = %service_kit::ErrorChain(&error), "cannot forget the cluster identity");
            }
            parts.credential.set(None);
            *identity = None;
            Err(CallError::Refused(status))
        }
        Err(error) => Err(error),
    }
}

fn beat(parts: &Parts, session: &Session, identity: &Identity) -> Result<(), CallError> {
    let images = parts.storage.list().unwrap_or_else(|error| {
        tracing::warn!(error = %service_kit::ErrorChain(&error), "cannot list images for the heartbeat");
        Vec::new()
    });
    let beat = inventory::heartbeat(parts.meter.measure(), &images, &parts.instances.list());
    session.heartbeat(identity, &beat)
}
