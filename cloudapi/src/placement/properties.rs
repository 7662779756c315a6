//! Property tests of placement over random fleets and requests: huge and zero capacities,
//! every host state, overcommit ratios the config would refuse, tags, images and neighbours.
//! Each filter is checked against an oracle written here again, plainly, so that a refusal is
//! right and not only consistent with itself.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::select;
use uuid::Uuid;

use super::affinity::glob_matches;
use super::filters::overcommitted;
use super::{
    place, Affinity, Candidate, Decision, ImagePart, Keyword, Neighbour, Policy, Relation, Request,
    Strategy as Filling,
};
use crate::hosts::{Allocation, CachedImage, Capacity, HostState};

const NAMES: [&str; 8] = ["alpha", "bravo", "charlie", "delta", "echo", "fox", "golf", "hotel"];
const ALIASES: [&str; 6] = ["web-1", "web-2", "db-1", "db-2", "cache", ""];
const TAG_KEYS: [&str; 3] = ["zone", "rack", "ssd"];
const TAG_VALUES: [&str; 2] = ["a", "b"];
const HYPERVISORS: [&str; 3] = ["qemu", "bhyve", "kvm"];
/// Neighbours' uuids are drawn from so few that rules name some by uuid.
const NEIGHBOUR_UUIDS: u128 = 6;

fn image(index: u8) -> Uuid {
    Uuid::from_u128(0x1a6e_0000 + u128::from(index))
}

/// What a host has: mostly room for a few requests, with zero and the extremes.
fn capacity() -> impl Strategy<Value = u64> {
    prop_oneof![16 => 1_000..1_000_000u64, 1 => Just(0), 1 => Just(u64::MAX), 1 => any::<u64>()]
}

/// What is taken on a host: mostly part of a capacity, with zero and the extremes.
fn reserved() -> impl Strategy<Value = u64> {
    prop_oneof![16 => 0..100_000u64, 1 => Just(0), 1 => Just(u64::MAX), 1 => any::<u64>()]
}

fn vcpus() -> impl Strategy<Value = u32> {
    prop_oneof![16 => 1..128u32, 1 => Just(0), 1 => Just(u32::MAX), 1 => any::<u32>()]
}

fn ratio() -> impl Strategy<Value = f64> {
    // Mostly ratios the config accepts, so that hosts get through and are scored.
    prop_oneof![
        48 => 0.25..8.0f64,
        30 => Just(1.0),
        1 => Just(1e300),
        1 => Just(0.0),
        1 => Just(-1.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

fn tags(most: usize) -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        select(&TAG_KEYS[..]).prop_map(String::from),
        select(&TAG_VALUES[..]).prop_map(String::from),
        0..=most,
    )
}

fn neighbour() -> impl Strategy<Value = Neighbour> {
    (select(&ALIASES[..]), 0..NEIGHBOUR_UUIDS)
        .prop_map(|(alias, uuid)| Neighbour { uuid: Uuid::from_u128(uuid), alias: alias.to_string() })
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        prop_oneof![
            6 => Just(HostState::Running),
            1 => Just(HostState::Draining),
            1 => Just(HostState::Unknown),
        ],
        select(&NAMES[..]),
        select(&HYPERVISORS[..2]),
        tags(3),
        (vcpus(), capacity(), capacity()),
        (prop_oneof![16 => 0..16u64, 1 => any::<u64>(), 1 => Just(u64::MAX)], reserved(), reserved()),
        prop::collection::vec(0..5u8, 0..4),
        prop::collection::vec(neighbour(), 0..4),
    )
        .prop_map(|(state, name, hypervisor, tags, capacity, reserved, images, instances)| Candidate {
            id: Uuid::nil(),
            name: name.to_string(),
            state,
            hypervisor: hypervisor.to_string(),
            tags,
            capacity: Capacity { vcpus: capacity.0, memory_mib: capacity.1, disk_free_mib: capacity.2 },
            reserved: Allocation { vcpus: reserved.0, memory_mib: reserved.1, disk_mib: reserved.2 },
            images: images
                .into_iter()
                .map(|index| CachedImage { uuid: image(index), origin: None, size: 0 })
                .collect(),
            instances,
        })
}

/// Up to 28 hosts; names may repeat (the tie-break falls to ids), ids do not (the database's).
/// Some hosts are copies of others under another name, so that totals tie often.
fn fleet() -> impl Strategy<Value = Vec<Candidate>> {
    let copies = prop::collection::vec((any::<prop::sample::Index>(), select(&NAMES[..])), 0..15);
    (prop::collection::vec(candidate(), 0..15), copies, any::<u64>()).prop_map(|(mut hosts, copies, seed)| {
        if !hosts.is_empty() {
            for (original, name) in copies {
                let copy = Candidate { name: name.to_string(), ..original.get(&hosts).clone() };
                hosts.push(copy);
            }
        }
        for (index, host) in hosts.iter_mut().enumerate() {
            host.id = Uuid::from_u128((u128::from(seed) << 64) | index as u128);
        }
        hosts
    })
}

fn affinity_rule() -> impl Strategy<Value = Affinity> {
    let names = prop_oneof![
        select(&["web-*", "db-1", "*", "cache", "nope", "*-2", "w*b*"][..]).prop_map(String::from),
        (0..NEIGHBOUR_UUIDS).prop_map(|uuid| Uuid::from_u128(uuid).to_string()),
    ];
    (any::<bool>(), any::<bool>(), prop::bool::weighted(0.75), names).prop_map(
        |(container, apart, soft, name)| Affinity {
            keyword: if container { Keyword::Container } else { Keyword::Instance },
            relation: if apart { Relation::Apart } else { Relation::Together },
            soft,
            name,
        },
    )
}

/// Which host a request is pinned to, resolved against the fleet once there is one.
#[derive(Debug, Clone)]
enum Pin {
    Nowhere,
    ByName(prop::sample::Index),
    ById(prop::sample::Index),
    Absent,
}

fn request() -> impl Strategy<Value = (Request, Pin)> {
    let small = |most: u64| prop_oneof![40 => 0..most, 1 => Just(u64::MAX), 1 => any::<u64>()];
    (
        prop_oneof![40 => 0..8u32, 1 => any::<u32>()],
        small(50_000),
        small(200_000),
        prop::collection::vec((0..5u8, prop_oneof![4 => 0..(20u64 << 30), 1 => Just(u64::MAX)]), 0..4),
        prop::option::weighted(
            0.25,
            prop::collection::btree_set(select(&HYPERVISORS[..]).prop_map(String::from), 0..=3),
        ),
        prop_oneof![
            8 => Just(Pin::Nowhere),
            1 => any::<prop::sample::Index>().prop_map(Pin::ByName),
            1 => any::<prop::sample::Index>().prop_map(Pin::ById),
            1 => Just(Pin::Absent),
        ],
        prop_oneof![3 => Just(Default::default()), 1 => tags(2)],
        prop::collection::vec(affinity_rule(), 0..3),
    )
        .prop_map(|(vcpus, memory_mib, disk_mib, chain, hypervisors, pin, host_tags, affinity)| {
            let image_chain: Vec<ImagePart> =
                chain.into_iter().map(|(index, size)| ImagePart { uuid: image(index), size }).collect();
            let request = Request {
                vcpus,
                memory_mib,
                disk_mib,
                image: image_chain.first().map_or(Uuid::nil(), |part| part.uuid),
                image_chain,
                hypervisors,
                host: None,
                host_tags,
                affinity,
            };
            (request, pin)
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (prop_oneof![Just(Filling::Spread), Just(Filling::Pack)], ratio(), ratio(), ratio()).prop_map(
        |(strategy, cpu_overcommit, memory_overcommit, disk_overcommit)| Policy {
            strategy,
            cpu_overcommit,
            memory_overcommit,
            disk_overcommit,
        },
    )
}

fn case() -> impl Strategy<Value = (Vec<Candidate>, Request, Policy)> {
    (fleet(), request(), policy()).prop_map(|(hosts, (mut request, pin), policy)| {
        request.host = match pin {
            Pin::Nowhere => None,
            Pin::Absent => Some("no-such-host".to_string()),
            Pin::ByName(_) | Pin::ById(_) if hosts.is_empty() => Some("no-such-host".to_string()),
            Pin::ByName(index) => Some(index.get(&hosts).name.clone()),
            Pin::ById(index) => Some(index.get(&hosts).id.to_string()),
        };
        (hosts, request, policy)
    })
}

/// The same fleet twice, the second shuffled.
fn shuffled_case() -> impl Strategy<Value = (Vec<Candidate>, Vec<Candidate>, Request, Policy)> {
    case().prop_flat_map(|(hosts, request, policy)| {
        (Just(hosts.clone()), Just(hosts).prop_shuffle(), Just(request), Just(policy))
    })
}

/// What a request needs of a host, what the host has, its ratio, and what is taken.
struct Resource {
    need: u64,
    capacity: u64,
    ratio: f64,
    reserved: u64,
}

/// vCPUs, memory and disk.
fn resources(request: &Request, host: &Candidate, policy: &Policy) -> [Resource; 3] {
    [
        Resource {
            need: request.vcpus.into(),
            capacity: host.capacity.vcpus.into(),
            ratio: policy.cpu_overcommit,
            reserved: host.reserved.vcpus,
        },
        Resource {
            need: request.memory_mib,
            capacity: host.capacity.memory_mib,
            ratio: policy.memory_overcommit,
            reserved: host.reserved.memory_mib,
        },
        Resource {
            need: request.disk_mib,
            capacity: host.capacity.disk_free_mib,
            ratio: policy.disk_overcommit,
            reserved: host.reserved.disk_mib,
        },
    ]
}

/// Exact: the need fits beside what is reserved in capacity × ratio (rounded down).
fn fits(resource: Resource) -> bool {
    let Resource { need, capacity, ratio, reserved } = resource;
    need == 0 || u128::from(reserved) + u128::from(need) <= u128::from(overcommitted(capacity, ratio))
}

/// A glob matcher as plain as can be (exponential, fine for these short names).
fn naive_glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| naive_glob(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && naive_glob(rest, &text[1..]),
    }
}

fn rule_names(rule: &Affinity, neighbour: &Neighbour) -> bool {
    naive_glob(rule.name.as_bytes(), neighbour.alias.as_bytes())
        || naive_glob(rule.name.as_bytes(), neighbour.uuid.to_string().as_bytes())
}

/// The first filter that should refuse `host`, by the oracle.
fn expected_refusal(request: &Request, host: &Candidate, policy: &Policy) -> Option<&'static str> {
    let pinned_elsewhere =
        request.host.as_ref().is_some_and(|pin| *pin != host.name && *pin != host.id.to_string());
    let [vcpus, memory, disk] = resources(request, host, policy);
    let checks = [
        ("state", host.state != HostState::Running),
        ("host", pinned_elsewhere),
        (
            "hypervisor",
            request.hypervisors.as_ref().is_some_and(|bootable| !bootable.contains(&host.hypervisor)),
        ),
        ("vcpus", !fits(vcpus)),
        ("memory", !fits(memory)),
        ("disk", !fits(disk)),
        ("host_tags", request.host_tags.iter().any(|(key, value)| host.tags.get(key) != Some(value))),
        (
            "affinity",
            request.affinity.iter().filter(|rule| !rule.soft).any(|rule| {
                let here = host.instances.iter().any(|neighbour| rule_names(rule, neighbour));
                here == (rule.relation == Relation::Apart)
            }),
        ),
    ];
    checks.into_iter().find(|(_, refuses)| *refuses).map(|(filter, _)| filter)
}

fn is_accepted(decision: &Decision, id: Uuid) -> bool {
    decision.hosts.iter().any(|verdict| verdict.id == id && verdict.refused.is_none())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_host_is_refused_by_the_first_filter_it_fails_and_only_then((hosts, request, policy) in case()) {
        let decision = place(&request, &hosts, &policy);
        prop_assert_eq!(decision.hosts.len(), hosts.len());
        for host in &hosts {
            let verdict = decision.hosts.iter().find(|verdict| verdict.id == host.id).unwrap();
            prop_assert_eq!(&verdict.name, &host.name);
            let filter = verdict.refused.as_ref().map(|refusal| refusal.filter.as_str());
            prop_assert_eq!(filter, expected_refusal(&request, host, &policy), "{:?}", verdict);
            if let Some(refusal) = &verdict.refused {
                prop_assert!(!refusal.reason.is_empty());
                prop_assert!(verdict.scores.is_empty());
            }
        }
    }

    #[test]
    fn the_chosen_host_passed_every_filter_and_fits_the_request((hosts, request, policy) in case()) {
        let decision = place(&request, &hosts, &policy);
        if let Some(chosen) = decision.chosen {
            prop_assert_eq!(decision.hosts[0].id, chosen);
            prop_assert!(is_accepted(&decision, chosen));
            let host = hosts.iter().find(|host| host.id == chosen).unwrap();
            prop_assert_eq!(expected_refusal(&request, host, &policy), None);
            let [vcpus, memory, disk] = resources(&request, host, &policy);
            prop_assert!(fits(vcpus) && fits(memory) && fits(disk));
        }
    }

    #[test]
    fn a_host_is_chosen_exactly_when_one_passes_every_filter((hosts, request, policy) in case()) {
        let decision = place(&request, &hosts, &policy);
        let some_passes = hosts.iter().any(|host| expected_refusal(&request, host, &policy).is_none());
        prop_assert_eq!(decision.chosen.is_some(), some_passes);
        if decision.chosen.is_none() {
            prop_assert!(decision.hosts.iter().all(|verdict| verdict.refused.is_some()));
            prop_assert_eq!(decision.reasons().len(), hosts.len());
        }
    }

    #[test]
    fn the_chosen_host_has_the_highest_total_and_the_verdicts_are_ranked((hosts, request, policy) in case()) {
        let decision = place(&request, &hosts, &policy);
        let accepted: Vec<_> = decision.hosts.iter().filter(|verdict| verdict.refused.is_none()).collect();
        for verdict in &accepted {
            prop_assert!(verdict.total.is_finite(), "{:?}", verdict);
            prop_assert!(verdict.scores.iter().all(|score| score.value.is_finite() && score.value >= 0.0));
            prop_assert_eq!(verdict.total, verdict.scores.iter().map(|score| score.value).sum::<f64>());
        }
        if let Some(chosen) = decision.chosen {
            let best = accepted.iter().map(|verdict| verdict.total).fold(f64::NEG_INFINITY, f64::max);
            prop_assert_eq!(decision.hosts[0].total, best);
            prop_assert!(is_accepted(&decision, chosen));
        }
        // Accepted first, by total then name then id; then the refused, by name then id.
        prop_assert!(decision.hosts[..accepted.len()].iter().all(|verdict| verdict.refused.is_none()));
        for pair in decision.hosts[..accepted.len()].windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            prop_assert!(a.total > b.total || (a.total == b.total && (&a.name, a.id) < (&b.name, b.id)));
        }
        for pair in decision.hosts[accepted.len()..].windows(2) {
            prop_assert!((&pair[0].name, pair[0].id) < (&pair[1].name, pair[1].id));
        }
    }

    #[test]
    fn the_same_fleet_in_any_order_gives_the_same_decision(
        (hosts, shuffled, request, policy) in shuffled_case(),
    ) {
        let decision = place(&request, &hosts, &policy);
        prop_assert_eq!(&decision, &place(&request, &hosts, &policy));
        prop_assert_eq!(&decision, &place(&request, &shuffled, &policy));
    }

    #[test]
    fn place_never_panics_and_totals_stay_finite_whatever_the_ratios(
        (hosts, request, _) in case(),
        ratios in (any::<f64>(), any::<f64>(), any::<f64>()),
        pack in any::<bool>(),
    ) {
        let strategy = if pack { Filling::Pack } else { Filling::Spread };
        let (cpu_overcommit, memory_overcommit, disk_overcommit) = ratios;
        let policy = Policy { strategy, cpu_overcommit, memory_overcommit, disk_overcommit };
        let decision = place(&request, &hosts, &policy);
        prop_assert!(decision.hosts.iter().all(|verdict| verdict.total.is_finite()), "{:?}", decision);
    }

    #[test]
    fn affinity_display_and_parse_round_trip(rule in affinity_rule()) {
        prop_assert_eq!(Affinity::parse(&rule.to_string()), Ok(rule));
    }

    #[test]
    fn affinity_parse_never_panics(text in "[a-z=!~/* -]{0,20}") {
        let _ = Affinity::parse(&text);
    }

    #[test]
    fn the_glob_matcher_agrees_with_a_naive_one(pattern in "[ab*é]{0,7}", text in "[abé]{0,9}") {
        prop_assert_eq!(glob_matches(&pattern, &text), naive_glob(pattern.as_bytes(), text.as_bytes()));
    }
}

#[test]
fn the_oracle_agrees_on_a_hand_made_case() {
    // Guards the oracle itself: a case whose answer is known.
    let host = super::fixtures::host("h");
    let mut request = super::fixtures::request();
    request.hypervisors = Some(BTreeSet::from(["bhyve".to_string()]));
    let policy = super::fixtures::policy(Filling::Spread);
    assert_eq!(expected_refusal(&request, &host, &policy), Some("hypervisor"));
    request.hypervisors = None;
    assert_eq!(expected_refusal(&request, &host, &policy), None);
}

#[test]
fn the_generated_cases_reach_every_filter_and_both_outcomes() {
    // Guards the generators: properties over cases that never refuse, or never choose, prove
    // little. Deterministic, so that it cannot flake.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut chosen, mut none_chosen) = (0, 0);
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..256 {
        let (hosts, request, policy) = case().new_tree(&mut runner).unwrap().current();
        let decision = place(&request, &hosts, &policy);
        if decision.chosen.is_some() {
            chosen += 1;
        } else {
            none_chosen += 1;
        }
        for refusal in decision.hosts.iter().filter_map(|verdict| verdict.refused.as_ref()) {
            *refusals.entry(refusal.filter.clone()).or_default() += 1;
        }
    }
    // About half and half (127 and 129 when written).
    assert!(chosen >= 64 && none_chosen >= 64, "chosen {chosen}, none chosen {none_chosen}");
    for filter in ["state", "host", "hypervisor", "vcpus", "memory", "disk", "host_tags", "affinity"] {
        assert!(refusals.get(filter).is_some_and(|&count| count >= 20), "{filter}: {refusals:?}");
    }
}
