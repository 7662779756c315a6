//! What every service of the workspace is built from, written once: API credentials
//! ([`auth`]), the agent–cloudapi wire types ([`cluster`]), error answers ([`api_error`]),
//! small request bodies read with a limit ([`body`]), durable file writes ([`durable`]), sparse
//! writes of disk images ([`sparse`]), config files with errors that name the key at fault
//! ([`config`]), error chains for logs ([`ErrorChain`]), poison-tolerant locks ([`lock`]), log
//! set-up ([`logging`]), reads in large blocks ([`read_full`]), request ids ([`request_id`]),
//! Prometheus metrics and the HTTP ones every service has ([`metrics`]),
//! OpenAPI documents ([`openapi`]), bounded waits for tests ([`testing`]) and a server on a thread of its own for tests and embedding
//! ([`ServerThread`]).

pub mod api_error;
pub mod auth;
pub mod body;
pub mod cluster;
pub mod config;
pub mod durable;
mod error_chain;
pub mod logging;
pub mod metrics;
pub mod openapi;
mod read;
pub mod request_id;
pub mod server;
pub mod sparse;
mod sync;
pub mod testing;

pub use error_chain::ErrorChain;
pub use read::read_full;
pub use server::{Bound, ServerThread};
pub use sync::lock;
