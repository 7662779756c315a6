//! The hypervisor host agent: imports images from IMGAPI sources into ZFS or disk files
//! (and, in a later part, runs instances from them). `main.rs` only parses arguments; this
//! builds the daemon so that tests run exactly what production runs.

pub mod api;
pub mod cli;
pub mod config;
pub mod host;
pub mod hypervisor;
pub mod import;
pub mod instance;
pub mod source;
pub mod storage;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use api::{AgentState, Credentials};
use config::{Config, StorageConfig, ZfsDialectConfig};
use host::runner::{CommandRunner, HostRunner};
use import::Importer;
use source::SourceClient;
use storage::ImageStorage;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid sources")]
    Sources(#[from] source::SourceParseError),
    #[error("cannot open the image storage")]
    Storage(#[from] storage::StorageError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The storage backend the config names, ready to use (crash leftovers removed).
pub fn open_storage(
    config: &Config,
    runner: Arc<dyn CommandRunner>,
) -> Result<Arc<dyn ImageStorage>, StartError> {
    let dialect = |d: ZfsDialectConfig| match d {
        ZfsDialectConfig::Openzfs => host::zfs::Dialect::OpenZfs,
        ZfsDialectConfig::ZfsFuse => host::zfs::Dialect::ZfsFuse,
    };
    let storage: Arc<dyn ImageStorage> = match &config.storage {
        StorageConfig::Files { dir } => Arc::new(storage::files::FilesStorage::new(dir)?),
        StorageConfig::Zfs { parent, zvol_dir, dialect: d } => {
            let zfs = host::zfs::Zfs::new(runner, &config.commands.zfs, dialect(*d));
            Arc::new(
                storage::zfs::ZfsStorage::new(zfs, parent.clone(), storage::zfs::ZfsMode::Zvol)
                    .with_zvol_dir(zvol_dir),
            )
        }
        StorageConfig::ZfsFiles { parent, dialect: d } => {
            let zfs = host::zfs::Zfs::new(runner, &config.commands.zfs, dialect(*d));
            Arc::new(storage::zfs::ZfsStorage::new(zfs, parent.clone(), storage::zfs::ZfsMode::Files))
        }
    };
    for leftover in storage.recover()? {
        tracing::info!(leftover = %leftover, "removed an unfinished import");
    }
    Ok(storage)
}

/// A bound, not yet running agent.
pub struct Bound {
    pub server: actix_web::dev::Server,
    pub addrs: Vec<SocketAddr>,
}

/// Opens storage, recovers from a crash, and binds the API.
pub fn bind(config: Config) -> Result<Bound, StartError> {
    let storage = open_storage(&config, Arc::new(HostRunner))?;
    let importer = Importer::new(SourceClient::new(config.sources()?), storage);
    let state = web::Data::new(AgentState { importer, auth: Credentials::new(&config.auth) });
    let addr = config.listen;
    let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(api::configure))
        .bind(addr)
        .map_err(|source| StartError::Bind { addr, source })?;
    let addrs = server.addrs();
    Ok(Bound { server: server.run(), addrs })
}

/// An agent running on its own thread, for tests. Stops when dropped.
pub struct RunningAgent {
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl RunningAgent {
    pub fn start(config: Config) -> Result<Self, StartError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match bind(config) {
                    Ok(bound) => {
                        let _ = tx.send(Ok((bound.addrs[0], bound.server.handle())));
                        bound.server.await
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        Ok(())
                    }
                }
            })
        });
        let (addr, handle) = rx.recv().map_err(|_| StartError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source: io::Error::other("agent thread died"),
        })??;
        Ok(RunningAgent { addr, handle, thread: Some(thread) })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(handle.stop(false));
            }
        })
        .join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
