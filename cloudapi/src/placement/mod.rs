//! Placement: which host of the fleet a new instance goes to, and why each other host did not.
//!
//! As Triton's DAPI does, filters come first (each may refuse a host, saying why; the first
//! that refuses is the host's refusal), then weights score the hosts left, and the highest
//! total wins. Unlike DAPI, every decision is explained: the [`Decision`] lists, for every host,
//! the filter that refused it and why, or the score it got from each weight. It is stored with
//! the instance and is what a dry run returns.
//!
//! [`place`] is a pure function (no I/O, no clock, no randomness) so that a dry run shows what a
//! real placement does, and so that every replica of cloudapi picks the same host: the same
//! input gives the same decision, whatever the order of the hosts in it.

mod affinity;
mod filters;
mod weights;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod properties;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::config::Strategy;
use crate::hosts::{Allocation, CachedImage, Capacity, HostState};
pub use affinity::{Affinity, Keyword, Relation};
pub use weights::{IMAGE_WEIGHT_PER_GIB, SOFT_AFFINITY_WEIGHT};

/// One host, as the database knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: Uuid,
    pub name: String,
    pub state: HostState,
    pub hypervisor: String,
    pub tags: BTreeMap<String, String>,
    pub capacity: Capacity,
    /// What the instances placed there take, in-flight reservations included. For disk, only
    /// what is not yet written (in-flight reservations): `capacity.disk_free_mib` is the free
    /// space the host reports, which already leaves out what its instances hold on disk.
    pub reserved: Allocation,
    /// The images it holds.
    pub images: Vec<CachedImage>,
    /// The instances on it, for affinity rules.
    pub instances: Vec<Neighbour>,
}

/// An instance on a host, as affinity rules name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub uuid: Uuid,
    pub alias: String,
}

/// One image of the chain a new instance boots from: the image itself, or one of its origins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagePart {
    pub uuid: Uuid,
    /// Bytes of its file.
    pub size: u64,
}

/// What a new instance needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    /// The image to boot.
    pub image: Uuid,
    /// The image and its origins, each with its size: what of it a host holds need not be
    /// downloaded there. Empty for an instance without an image (a blank disk).
    pub image_chain: Vec<ImagePart>,
    /// The hypervisors that can boot the image; `None`: any.
    pub hypervisors: Option<BTreeSet<String>>,
    /// Pinned to one host, by id or by name: every other host is refused.
    pub host: Option<String>,
    /// Every pair must be among the host's tags.
    pub host_tags: BTreeMap<String, String>,
    pub affinity: Vec<Affinity>,
}

/// How the fleet is filled: the config's `placement` section, whose ratios it has checked
/// (finite and positive). [`place`] does not panic on other ratios: a ratio that is not finite
/// or not positive gives no capacity at all, so a bad policy refuses hosts rather than
/// overfilling them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub strategy: Strategy,
    /// vCPUs allocated per vCPU of the host, at most.
    pub cpu_overcommit: f64,
    pub memory_overcommit: f64,
    pub disk_overcommit: f64,
}

/// Where an instance goes, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    /// The host with the highest total; `None` when every host was refused.
    pub chosen: Option<Uuid>,
    /// Every host of the fleet: the chosen one first, then the other accepted ones by rank,
    /// then the refused ones by name.
    pub hosts: Vec<Verdict>,
}

/// What placement made of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdict {
    pub id: Uuid,
    pub name: String,
    /// The first filter that refused the host; `None`: it passed them all, and was scored.
    pub refused: Option<Refusal>,
    /// One per weight, for an accepted host; none for a refused one.
    pub scores: Vec<Score>,
    /// The sum of the scores (0 for a refused host).
    pub total: f64,
}

/// Why a filter refused a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refusal {
    /// `state`, `host`, `hypervisor`, `vcpus`, `memory`, `disk`, `host_tags` or `affinity`.
    pub filter: String,
    /// For a person, e.g. `needs 4096 MiB; 1024 MiB free of 8192 MiB x1.0, 7168 MiB reserved`.
    pub reason: String,
}

/// What one weight gave an accepted host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Score {
    /// `image`, `spread` or `pack`, or `affinity`.
    pub weight: String,
    pub value: f64,
    /// For a person, e.g. `3.2 GiB of the image chain cached`.
    pub why: String,
}

impl Decision {
    /// One line per refused host, `name: filter: reason`, for the message of a `NoCapacity`
    /// answer.
    pub fn reasons(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter_map(|verdict| {
                let refusal = verdict.refused.as_ref()?;
                Some(format!("{}: {}: {}", verdict.name, refusal.filter, refusal.reason))
            })
            .collect()
    }
}

/// Chooses the host of `hosts` for `request`, explaining the choice (see the module's doc).
///
/// Ties of the total go to the host whose name sorts first, then whose id does: an order of
/// the hosts themselves, so that it holds whatever order they come in.
pub fn place(request: &Request, hosts: &[Candidate], policy: &Policy) -> Decision {
    let (mut accepted, mut refused): (Vec<Verdict>, Vec<Verdict>) = hosts
        .iter()
        .map(|host| match filters::first_refusal(request, host, policy) {
            Some(refusal) => Verdict {
                id: host.id,
                name: host.name.clone(),
                refused: Some(refusal),
                scores: Vec::new(),
                total: 0.0,
            },
            None => {
                let scores = weights::scores(request, host, policy);
                let total = scores.iter().map(|score| score.value).sum();
                Verdict { id: host.id, name: host.name.clone(), refused: None, scores, total }
            }
        })
        .partition(|verdict| verdict.refused.is_none());
    accepted.sort_by(by_rank);
    refused.sort_by(by_name);
    let chosen = accepted.first().map(|verdict| verdict.id);
    accepted.append(&mut refused);
    Decision { chosen, hosts: accepted }
}

/// The highest total first (totals are finite: every score is).
fn by_rank(a: &Verdict, b: &Verdict) -> Ordering {
    b.total.total_cmp(&a.total).then_with(|| by_name(a, b))
}

fn by_name(a: &Verdict, b: &Verdict) -> Ordering {
    a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::fixtures::{host, policy, request};
    use super::*;

    #[test]
    fn an_empty_fleet_chooses_nothing() {
        let decision = place(&request(), &[], &policy(Strategy::Spread));
        assert_eq!(decision, Decision { chosen: None, hosts: Vec::new() });
        assert!(decision.reasons().is_empty());
    }

    #[test]
    fn ties_are_broken_by_name_then_id() {
        let (b, a) = (host("b"), host("a"));
        let decision = place(&request(), &[b.clone(), a.clone()], &policy(Strategy::Spread));
        assert_eq!(decision.chosen, Some(a.id));

        let mut twin = a.clone();
        twin.id = Uuid::from_u128(0);
        let decision = place(&request(), &[a.clone(), twin.clone()], &policy(Strategy::Spread));
        assert_eq!(decision.chosen, Some(twin.id), "same name and total: the smaller id");
    }

    #[test]
    fn verdicts_list_the_chosen_host_first_then_by_rank_then_the_refused_by_name() {
        let mut full = host("full");
        full.reserved.memory_mib = full.capacity.memory_mib / 2;
        let mut zed = host("zed");
        zed.state = HostState::Draining;
        let mut abe = host("abe");
        abe.state = HostState::Unknown;
        let empty = host("empty");
        let decision = place(&request(), &[zed, full, abe, empty.clone()], &policy(Strategy::Spread));
        let order: Vec<&str> = decision.hosts.iter().map(|verdict| verdict.name.as_str()).collect();
        assert_eq!(order, ["empty", "full", "abe", "zed"]);
        assert_eq!(decision.chosen, Some(empty.id));
        assert!(decision.hosts[0].total > decision.hosts[1].total);
    }

    #[test]
    fn reasons_give_one_line_per_refused_host() {
        let mut drained = host("drained");
        drained.state = HostState::Draining;
        let mut small = host("small");
        small.capacity.memory_mib = 512;
        let decision = place(&request(), &[small, drained, host("fine")], &policy(Strategy::Spread));
        assert_eq!(
            decision.reasons(),
            [
                "drained: state: draining: takes no new instances",
                "small: memory: needs 1024 MiB; 512 MiB free of 512 MiB x1.0, 0 MiB reserved",
            ]
        );
    }

    #[test]
    fn the_decision_round_trips_through_json() {
        let mut drained = host("drained");
        drained.state = HostState::Draining;
        let decision = place(&request(), &[drained, host("fine")], &policy(Strategy::Pack));
        let json = serde_json::to_string(&decision).unwrap();
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), decision);
    }
}
