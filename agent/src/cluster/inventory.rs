//! What a heartbeat tells cloudapi, built from the host's images and instances: a pure
//! function, so that what the fleet sees of a host is tested without one.

use service_kit::cluster::{Allocation, CachedImage, Capacity, Heartbeat, ReportedInstance};

use crate::instance::record::InstanceRecord;
use crate::instance::state::InstanceState;
use crate::storage::LocalImage;

/// The name of a state as the API shows it.
fn state_name(state: InstanceState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The heartbeat for these images and instances. Every instance that still exists takes its
/// share, stopped or failed ones too: they keep their disk and may start again at any time.
pub fn heartbeat(capacity: Capacity, images: &[LocalImage], instances: &[InstanceRecord]) -> Heartbeat {
    let live: Vec<&InstanceRecord> =
        instances.iter().filter(|r| r.state != InstanceState::Destroyed).collect();
    let allocated = live.iter().fold(Allocation::default(), |sum, r| Allocation {
        vcpus: sum.vcpus + u64::from(r.vcpus),
        memory_mib: sum.memory_mib.saturating_add(r.memory_mib),
        disk_mib: sum.disk_mib.saturating_add(r.disk_mib),
    });
    Heartbeat {
        capacity,
        allocated,
        images: images
            .iter()
            .map(|i| CachedImage { uuid: i.meta.uuid, origin: i.meta.origin, size: i.meta.size })
            .collect(),
        instances: live
            .iter()
            .map(|r| ReportedInstance {
                uuid: r.uuid,
                alias: r.alias.clone(),
                state: state_name(r.state),
                image: r.image,
                vcpus: r.vcpus,
                memory_mib: r.memory_mib,
                disk_mib: r.disk_mib,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn record(alias: &str, state: InstanceState, memory_mib: u64) -> InstanceRecord {
        let text = serde_json::json!({
            "uuid": Uuid::new_v4(), "alias": alias, "image": null, "vcpus": 2, "memory_mib": memory_mib,
            "disk_mib": 1024, "nics": [], "firmware": "bios", "vm_name": "i-x", "state": state,
            "reason": "", "pid": null, "created_at": "2026-12-03T00:00:00Z", "history": []
        });
        serde_json::from_value(text).unwrap()
    }

    #[test]
    fn allocations_count_every_instance_that_keeps_a_disk() {
        let instances = [
            record("a", InstanceState::Running, 512),
            record("b", InstanceState::Stopped, 1024),
            record("c", InstanceState::Failed, 256),
            record("gone", InstanceState::Destroyed, 4096),
        ];
        let capacity = Capacity { vcpus: 8, memory_mib: 16384, disk_free_mib: 100 };
        let beat = heartbeat(capacity, &[], &instances);
        assert_eq!(beat.allocated, Allocation { vcpus: 6, memory_mib: 1792, disk_mib: 3072 });
        let states: Vec<(&str, &str)> =
            beat.instances.iter().map(|i| (i.alias.as_str(), i.state.as_str())).collect();
        assert_eq!(states, [("a", "running"), ("b", "stopped"), ("c", "failed")]);
        assert_eq!(beat.capacity, capacity);
    }
}
