//! The filters, in the order they run: each refuses a host or lets it through, and the first
//! that refuses a host names its refusal. Also the overcommit arithmetic the weights share.

use uuid::Uuid;

use super::{Candidate, Policy, Refusal, Request};
use crate::hosts::HostState;

/// A filter: `Err(reason)` refuses the host.
type Filter = fn(&Request, &Candidate, &Policy) -> Result<(), String>;

/// Every filter, by the name a refusal gives, in order: the cheap and the absolute first, so
/// that a drained host says it is drained rather than that it is full.
const FILTERS: [(&str, Filter); 8] = [
    ("state", state),
    ("host", pinned_host),
    ("hypervisor", hypervisor),
    ("vcpus", vcpus),
    ("memory", memory),
    ("disk", disk),
    ("host_tags", host_tags),
    ("affinity", hard_affinity),
];

/// The first refusal of `host`, or `None` when every filter lets it through.
pub(super) fn first_refusal(request: &Request, host: &Candidate, policy: &Policy) -> Option<Refusal> {
    FILTERS.iter().find_map(|(filter, check)| {
        check(request, host, policy).err().map(|reason| Refusal { filter: filter.to_string(), reason })
    })
}

/// `capacity` × `ratio`, rounded down. A ratio of 1 is exact whatever the capacity (f64 would
/// round one above 2^53); `as` saturates, so that no capacity and ratio overflow. A ratio that
/// is not finite or not positive (the config refuses those) gives nothing: hosts are refused
/// rather than overfilled.
pub(super) fn overcommitted(capacity: u64, ratio: f64) -> u64 {
    if !(ratio.is_finite() && ratio > 0.0) {
        0
    } else if ratio == 1.0 {
        capacity
    } else {
        (capacity as f64 * ratio).floor() as u64
    }
}

/// One resource of a host against what a request needs of it.
struct Resource {
    need: u64,
    capacity: u64,
    ratio: f64,
    reserved: u64,
}

impl Resource {
    fn free(&self) -> u64 {
        overcommitted(self.capacity, self.ratio).saturating_sub(self.reserved)
    }

    /// E.g. `needs 4096 MiB; 1024 MiB free of 8192 MiB x1.0, 7168 MiB reserved`, so that the
    /// arithmetic can be checked by whoever reads it.
    fn check(&self, unit: &str, reserved: &str) -> Result<(), String> {
        let free = self.free();
        if self.need <= free {
            return Ok(());
        }
        let Resource { need, capacity, ratio, reserved: taken } = self;
        Err(format!(
            "needs {need}{unit}; {free}{unit} free of {capacity}{unit} x{ratio:?}, {taken}{unit} {reserved}"
        ))
    }
}

fn state(_: &Request, host: &Candidate, _: &Policy) -> Result<(), String> {
    match host.state {
        HostState::Running => Ok(()),
        HostState::Draining => Err("draining: takes no new instances".to_string()),
        HostState::Unknown => Err("unknown: no heartbeat within the host timeout".to_string()),
    }
}

fn pinned_host(request: &Request, host: &Candidate, _: &Policy) -> Result<(), String> {
    let Some(pinned) = &request.host else { return Ok(()) };
    let by_id = Uuid::parse_str(pinned).is_ok_and(|id| id == host.id);
    if by_id || *pinned == host.name {
        Ok(())
    } else {
        Err(format!("the request is pinned to host {pinned}"))
    }
}

fn hypervisor(request: &Request, host: &Candidate, _: &Policy) -> Result<(), String> {
    let Some(bootable) = &request.hypervisors else { return Ok(()) };
    if bootable.contains(&host.hypervisor) {
        return Ok(());
    }
    let wanted = if bootable.is_empty() {
        "none is known to".to_string()
    } else {
        format!("only {} can", bootable.iter().cloned().collect::<Vec<_>>().join(" or "))
    };
    Err(format!("{}: {wanted} boot the image", host.hypervisor))
}

fn vcpus(request: &Request, host: &Candidate, policy: &Policy) -> Result<(), String> {
    Resource {
        need: request.vcpus.into(),
        capacity: host.capacity.vcpus.into(),
        ratio: policy.cpu_overcommit,
        reserved: host.reserved.vcpus,
    }
    .check(" vCPUs", "reserved")
}

fn memory(request: &Request, host: &Candidate, policy: &Policy) -> Result<(), String> {
    Resource {
        need: request.memory_mib,
        capacity: host.capacity.memory_mib,
        ratio: policy.memory_overcommit,
        reserved: host.reserved.memory_mib,
    }
    .check(" MiB", "reserved")
}

/// The host reports its free space, which leaves out what its instances hold already: only the
/// reservations not yet written (in flight) are taken off it, after overcommit like the rest.
fn disk(request: &Request, host: &Candidate, policy: &Policy) -> Result<(), String> {
    Resource {
        need: request.disk_mib,
        capacity: host.capacity.disk_free_mib,
        ratio: policy.disk_overcommit,
        reserved: host.reserved.disk_mib,
    }
    .check(" MiB", "in flight")
}

fn host_tags(request: &Request, host: &Candidate, _: &Policy) -> Result<(), String> {
    let mismatches: Vec<String> = request
        .host_tags
        .iter()
        .filter_map(|(key, wanted)| match host.tags.get(key) {
            None => Some(format!("no tag {key} (wants {key}={wanted})")),
            Some(value) if value != wanted => Some(format!("{key}={value}, wants {key}={wanted}")),
            Some(_) => None,
        })
        .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches.join("; "))
    }
}

/// The hard rules only: soft ones never refuse, they weigh (see `weights`).
fn hard_affinity(request: &Request, host: &Candidate, _: &Policy) -> Result<(), String> {
    let unmet: Vec<String> = request
        .affinity
        .iter()
        .filter(|rule| !rule.soft)
        .filter_map(|rule| rule.unmet_on(&host.instances))
        .collect();
    if unmet.is_empty() {
        Ok(())
    } else {
        Err(unmet.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{host, neighbour, policy, request};
    use super::super::{Affinity, Strategy};
    use super::*;

    fn refusal(request: &Request, host: &Candidate, policy: &Policy) -> Option<(String, String)> {
        first_refusal(request, host, policy).map(|refusal| (refusal.filter, refusal.reason))
    }

    fn refused_by(filter: &str, reason: &str) -> Option<(String, String)> {
        Some((filter.to_string(), reason.to_string()))
    }

    #[test]
    fn a_running_host_that_fits_passes_every_filter() {
        assert_eq!(refusal(&request(), &host("h"), &policy(Strategy::Spread)), None);
    }

    #[test]
    fn a_draining_host_is_refused() {
        let mut drained = host("h");
        drained.state = HostState::Draining;
        assert_eq!(
            refusal(&request(), &drained, &policy(Strategy::Spread)),
            refused_by("state", "draining: takes no new instances")
        );
    }

    #[test]
    fn an_unknown_host_is_refused() {
        let mut silent = host("h");
        silent.state = HostState::Unknown;
        assert_eq!(
            refusal(&request(), &silent, &policy(Strategy::Spread)),
            refused_by("state", "unknown: no heartbeat within the host timeout")
        );
    }

    #[test]
    fn the_first_filter_that_refuses_names_the_refusal() {
        let mut host = host("h");
        host.state = HostState::Draining;
        host.capacity.memory_mib = 0;
        host.hypervisor = "bhyve".into();
        let mut request = request();
        request.hypervisors = Some(["qemu".to_string()].into());
        assert_eq!(refusal(&request, &host, &policy(Strategy::Spread)).unwrap().0, "state");
        host.state = HostState::Running;
        assert_eq!(refusal(&request, &host, &policy(Strategy::Spread)).unwrap().0, "hypervisor");
        host.hypervisor = "qemu".into();
        assert_eq!(refusal(&request, &host, &policy(Strategy::Spread)).unwrap().0, "memory");
    }

    #[test]
    fn pinning_by_name_refuses_every_other_host() {
        let mut request = request();
        request.host = Some("wanted".into());
        let policy = policy(Strategy::Spread);
        assert_eq!(refusal(&request, &host("wanted"), &policy), None);
        assert_eq!(
            refusal(&request, &host("other"), &policy),
            refused_by("host", "the request is pinned to host wanted")
        );
    }

    #[test]
    fn pinning_by_id_refuses_every_other_host() {
        let wanted = host("wanted");
        let mut request = request();
        request.host = Some(wanted.id.to_string());
        let policy = policy(Strategy::Spread);
        assert_eq!(refusal(&request, &wanted, &policy), None);
        request.host = Some(wanted.id.simple().to_string().to_uppercase());
        assert_eq!(refusal(&request, &wanted, &policy), None, "any form of the uuid");
        assert_eq!(refusal(&request, &host("other"), &policy).unwrap().0, "host");
    }

    #[test]
    fn a_host_whose_hypervisor_cannot_boot_the_image_is_refused() {
        let mut bhyve = host("h");
        bhyve.hypervisor = "bhyve".into();
        let mut request = request();
        let policy = policy(Strategy::Spread);
        assert_eq!(refusal(&request, &bhyve, &policy), None, "no list: any hypervisor");
        request.hypervisors = Some(["qemu".to_string(), "kvm".to_string()].into());
        assert_eq!(
            refusal(&request, &bhyve, &policy),
            refused_by("hypervisor", "bhyve: only kvm or qemu can boot the image")
        );
        request.hypervisors = Some(Default::default());
        assert_eq!(
            refusal(&request, &bhyve, &policy),
            refused_by("hypervisor", "bhyve: none is known to boot the image")
        );
        request.hypervisors = Some(["bhyve".to_string()].into());
        assert_eq!(refusal(&request, &bhyve, &policy), None);
    }

    #[test]
    fn memory_refusal_says_what_is_needed_and_what_is_free() {
        let mut host = host("h");
        host.capacity.memory_mib = 8192;
        host.reserved.memory_mib = 7168;
        let mut request = request();
        request.memory_mib = 4096;
        assert_eq!(
            refusal(&request, &host, &policy(Strategy::Spread)),
            refused_by("memory", "needs 4096 MiB; 1024 MiB free of 8192 MiB x1.0, 7168 MiB reserved")
        );
        request.memory_mib = 1024;
        assert_eq!(refusal(&request, &host, &policy(Strategy::Spread)), None, "exactly what is free fits");
    }

    #[test]
    fn overcommit_lets_more_vcpus_fit_than_the_host_has() {
        let mut host = host("h");
        host.capacity.vcpus = 4;
        host.reserved.vcpus = 14;
        let mut request = request();
        request.vcpus = 2;
        let mut policy = policy(Strategy::Spread);
        policy.cpu_overcommit = 4.0;
        assert_eq!(refusal(&request, &host, &policy), None, "16 - 14 = 2 free");
        request.vcpus = 3;
        assert_eq!(
            refusal(&request, &host, &policy),
            refused_by("vcpus", "needs 3 vCPUs; 2 vCPUs free of 4 vCPUs x4.0, 14 vCPUs reserved")
        );
    }

    #[test]
    fn overcommit_below_one_keeps_headroom() {
        let mut host = host("h");
        host.capacity.memory_mib = 1000;
        let mut request = request();
        request.memory_mib = 901;
        let mut policy = policy(Strategy::Spread);
        policy.memory_overcommit = 0.9;
        assert_eq!(refusal(&request, &host, &policy).unwrap().0, "memory");
        request.memory_mib = 900;
        assert_eq!(refusal(&request, &host, &policy), None);
    }

    #[test]
    fn disk_counts_in_flight_reservations_against_the_reported_free_space() {
        let mut host = host("h");
        host.capacity.disk_free_mib = 20480;
        host.reserved.disk_mib = 10240;
        let mut request = request();
        request.disk_mib = 10241;
        assert_eq!(
            refusal(&request, &host, &policy(Strategy::Spread)),
            refused_by("disk", "needs 10241 MiB; 10240 MiB free of 20480 MiB x1.0, 10240 MiB in flight")
        );
        request.disk_mib = 10240;
        assert_eq!(refusal(&request, &host, &policy(Strategy::Spread)), None);
    }

    #[test]
    fn huge_values_neither_overflow_nor_fit_by_wrapping() {
        let mut host = host("h");
        host.capacity.memory_mib = u64::MAX;
        host.reserved.memory_mib = u64::MAX;
        let mut request = request();
        request.memory_mib = 1;
        let mut policy = policy(Strategy::Spread);
        assert_eq!(refusal(&request, &host, &policy).unwrap().0, "memory");
        host.reserved.memory_mib = u64::MAX - 1;
        assert_eq!(refusal(&request, &host, &policy), None, "x1.0 is exact even at u64::MAX");
        policy.memory_overcommit = 1e300;
        host.reserved.memory_mib = u64::MAX;
        assert_eq!(refusal(&request, &host, &policy).unwrap().0, "memory", "overcommit saturates");
        host.reserved.memory_mib = 0;
        request.memory_mib = u64::MAX;
        assert_eq!(refusal(&request, &host, &policy), None);
    }

    #[test]
    fn a_ratio_the_config_would_refuse_leaves_no_capacity() {
        for ratio in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut policy = policy(Strategy::Spread);
            policy.disk_overcommit = ratio;
            let refused = refusal(&request(), &host("h"), &policy).unwrap();
            assert_eq!(refused.0, "disk", "x{ratio:?}");
            assert!(refused.1.contains(&format!("x{ratio:?}")), "{}", refused.1);
            assert_eq!(overcommitted(u64::MAX, ratio), 0);
        }
    }

    #[test]
    fn host_tags_mismatch_names_the_missing_and_the_different_tag() {
        let mut host = host("h");
        host.tags = [("zone".to_string(), "west".to_string()), ("ssd".to_string(), "yes".to_string())].into();
        let mut request = request();
        request.host_tags = [("ssd", "yes"), ("zone", "east"), ("rack", "r1")]
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .into();
        assert_eq!(
            refusal(&request, &host, &policy(Strategy::Spread)),
            refused_by("host_tags", "no tag rack (wants rack=r1); zone=west, wants zone=east")
        );
        request.host_tags.retain(|key, _| key == "ssd");
        assert_eq!(refusal(&request, &host, &policy(Strategy::Spread)), None);
    }

    #[test]
    fn hard_affinity_refuses_hosts_with_or_without_the_named_instances() {
        let mut with_db = host("with-db");
        with_db.instances = vec![neighbour("db-1", 1), neighbour("web-1", 2)];
        let empty = host("empty");
        let policy = policy(Strategy::Spread);

        let mut apart = request();
        apart.affinity = vec![Affinity::parse("instance!=db-*").unwrap()];
        assert_eq!(
            refusal(&apart, &with_db, &policy),
            refused_by("affinity", &format!("instance!=db-*: db-1 ({}) is here", Uuid::from_u128(1)))
        );
        assert_eq!(refusal(&apart, &empty, &policy), None);

        let mut together = request();
        together.affinity = vec![Affinity::parse("container==web-1").unwrap()];
        assert_eq!(refusal(&together, &with_db, &policy), None);
        assert_eq!(
            refusal(&together, &empty, &policy),
            refused_by("affinity", "container==web-1: no such instance here")
        );
    }

    #[test]
    fn soft_affinity_never_refuses_a_host() {
        let mut with_db = host("with-db");
        with_db.instances = vec![neighbour("db-1", 1)];
        let mut request = request();
        request.affinity =
            vec![Affinity::parse("instance!=~db-*").unwrap(), Affinity::parse("instance==~web").unwrap()];
        assert_eq!(refusal(&request, &with_db, &policy(Strategy::Spread)), None);
    }
}
