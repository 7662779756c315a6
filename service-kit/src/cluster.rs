//! The wire types between an agent and cloudapi: what a host says when it registers, what it
//! gets back, and what each heartbeat carries. Both sides use these very types, so that they
//! cannot drift apart. Unknown fields are ignored, so that an agent and a cloudapi of different
//! versions still understand each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The route an agent registers at (`POST`, bearer: a join token or its credential).
pub const REGISTER_PATH: &str = "/api/v1/hosts";

/// The route of host `id`'s heartbeats (`PUT`, bearer: its credential).
pub fn heartbeat_path(id: &Uuid) -> String {
    format!("/api/v1/hosts/{id}/heartbeat")
}

/// What a host can give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capacity {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Free space of the host's image and instance storage.
    pub disk_free_mib: u64,
}

/// What the instances on a host take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Allocation {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_mib: u64,
}

/// An image a host holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CachedImage {
    pub uuid: Uuid,
    #[serde(default)]
    pub origin: Option<Uuid>,
    /// Bytes of its file.
    #[serde(default)]
    pub size: u64,
}

/// An instance as its host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportedInstance {
    pub uuid: Uuid,
    pub alias: String,
    pub state: String,
    #[serde(default)]
    pub image: Option<Uuid>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
}

/// What an agent says when it registers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    /// Unique in the fleet (the agent's host name by default).
    pub name: String,
    /// Where cloudapi reaches the agent's API.
    pub url: String,
    /// `qemu` or `bhyve`.
    pub hypervisor: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub capacity: Capacity,
}

/// What a registration returns: the host's id and its own credential.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    pub id: Uuid,
    pub credential: String,
}

/// A heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    pub capacity: Capacity,
    #[serde(default)]
    pub allocated: Allocation,
    #[serde(default)]
    pub images: Vec<CachedImage>,
    #[serde(default)]
    pub instances: Vec<ReportedInstance>,
}
