//! Hosts, requests and policies for the placement tests: a roomy running host and a small
//! request that fits it, which each test changes in the one way it is about.

use uuid::Uuid;

use super::{Candidate, ImagePart, Neighbour, Policy, Request, Strategy};
use crate::hosts::{Allocation, Capacity, HostState};

/// The image of [`request`] (1 GiB, no origin).
pub const IMAGE: Uuid = Uuid::from_u128(0x1a6e);

/// A running qemu host of 16 vCPUs, 64 GiB of memory and 1 TiB of free disk, with nothing on
/// it; its id follows from its name, so that tests can name hosts only.
pub fn host(name: &str) -> Candidate {
    let id = name.bytes().fold(0x5eed_u128, |id, byte| id.wrapping_mul(257).wrapping_add(byte.into()));
    Candidate {
        id: Uuid::from_u128(id),
        name: name.to_string(),
        state: HostState::Running,
        hypervisor: "qemu".to_string(),
        tags: Default::default(),
        capacity: Capacity { vcpus: 16, memory_mib: 64 << 10, disk_free_mib: 1 << 20 },
        reserved: Allocation::default(),
        images: Vec::new(),
        instances: Vec::new(),
    }
}

/// 1 vCPU, 1 GiB of memory, 10 GiB of disk, from [`IMAGE`].
pub fn request() -> Request {
    Request {
        vcpus: 1,
        memory_mib: 1024,
        disk_mib: 10 << 10,
        image: IMAGE,
        image_chain: vec![ImagePart { uuid: IMAGE, size: 1 << 30 }],
        ..Default::default()
    }
}

/// No overcommit.
pub fn policy(strategy: Strategy) -> Policy {
    Policy { strategy, cpu_overcommit: 1.0, memory_overcommit: 1.0, disk_overcommit: 1.0 }
}

pub fn neighbour(alias: &str, uuid: u128) -> Neighbour {
    Neighbour { uuid: Uuid::from_u128(uuid), alias: alias.to_string() }
}
