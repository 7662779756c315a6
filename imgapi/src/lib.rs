//! `imgapi`: an IMGAPI server (the Joyent/Triton image API) that `imgadm`, the Triton clients,
//! curl and our agent can use. `main.rs` only parses flags; everything else is here so that
//! tests run exactly what production runs.

pub mod auth;
pub mod config;
pub mod http;
pub mod manifest;
pub mod mirror;
pub mod params;
pub mod service;
pub mod store;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{middleware::from_fn, web, App, HttpServer};

use auth::Authenticator;
use config::Config;
use http::AppState;
use service::Service;
pub use service_kit::Bound;
use store::Store;

/// Start-up failures, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the data directory")]
    Store(#[from] store::StoreError),
    #[error("invalid credentials in the config")]
    Auth(#[from] auth::AuthSetupError),
    #[error("invalid mirror")]
    Mirror(#[from] imgapi_client::ClientError),
    #[error("cannot load the TLS certificate or key: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Opens the store and builds the shared state.
pub fn build_state(config: Config) -> Result<AppState, StartError> {
    let store = Arc::new(Store::open(&config.datadir)?);
    let store_root = &store.root().to_path_buf();
    let auth = Authenticator::from_config(&config)?;
    if !auth.has_users() {
        tracing::warn!("no users in \"userdb\" or \"auth_keys\": every write will be refused");
    }
    let service = Service {
        store,
        channels: config.channels.clone(),
        anonymous_reads: config.anonymous_reads,
        max_file_size: config.max_file_size,
        copies: Arc::default(),
    };
    let server_name =
        config.server_name.clone().unwrap_or_else(|| format!("imgapi/{}", env!("CARGO_PKG_VERSION")));
    let mirrors = Arc::new(mirror::Mirrors::new(&config.mirrors, store_root)?);
    Ok(AppState {
        service,
        mirrors,
        auth: std::sync::RwLock::new(Arc::new(auth)),
        config: Arc::new(config),
        server_name,
        host_name: host_name(),
    })
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "imgapi".into())
}

/// Binds the listening socket (plain or TLS) and prepares the server; once it has stopped, the
/// mirror syncs stop too.
pub fn bind(config: Config) -> Result<Bound, StartError> {
    let addr = config.listen_addr();
    let tls = config.tls.clone();
    let state = web::Data::new(build_state(config)?);
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(from_fn(http::middleware::standard))
            .configure(http::configure)
    })
    .on_connect(http::stall::on_connect)
    // Clients keep connections open between the requests of an import.
    .keep_alive(std::time::Duration::from_secs(75))
    .shutdown_timeout(5);
    let server = match tls {
        None => server.bind(addr),
        Some(tls) => server.bind_rustls_0_23(addr, tls_config(&tls)?),
    }
    .map_err(|source| StartError::Bind { addr, source })?;
    let addrs = server.addrs();
    // Only once the server could bind: a failed start leaves no sync threads behind.
    state.mirrors.start(&state.service);
    let mirrors = state.mirrors.clone();
    Ok(Bound { server: server.run(), addrs, after_stop: Box::new(move || mirrors.stop()) })
}

fn tls_config(tls: &config::TlsConfig) -> Result<rustls::ServerConfig, StartError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))
    };
    let cert_pem = read(&tls.cert)?;
    let key_pem = read(&tls.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!("{}: no certificate found", tls.cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| StartError::Tls(format!("{}: {e}", tls.key.display())))?
        .ok_or_else(|| StartError::Tls(format!("{}: no private key found", tls.key.display())))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))
}

/// A server running on its own thread (see [`start`]). Stops when dropped.
pub type RunningServer = service_kit::ServerThread;

/// Binds and starts `config` on a thread of its own, for tests and embedding.
pub fn start(config: Config) -> Result<RunningServer, StartError> {
    RunningServer::start(move || bind(config))
}
