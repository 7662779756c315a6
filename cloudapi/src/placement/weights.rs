//! The weights, which score the hosts every filter let through: image locality, spread or pack,
//! and soft affinity. Their scales are set against each other here.

use std::collections::{BTreeSet, HashSet};

use uuid::Uuid;

use super::filters::overcommitted;
use super::{Affinity, Candidate, Policy, Request, Score, Strategy};

/// Points per GiB of the image chain a host holds already. Spread and pack score in [0, 1],
/// so one GiB not downloaded is worth as much as the whole difference between an empty host and
/// a full one: a tiny image (100 MiB: 0.1) barely counts, a 10 GiB one beats any load.
pub const IMAGE_WEIGHT_PER_GIB: f64 = 1.0;

/// Points per soft affinity rule a host meets. A soft rule is the user's own wish, while load
/// and image locality are what placement prefers by itself: as in Triton, where a soft rule is
/// honoured whenever some host can, it outweighs both (spread or pack give at most 1, and the
/// image 100 only for a chain of 100 GiB), yet unlike a hard rule it never refuses a host.
pub const SOFT_AFFINITY_WEIGHT: f64 = 100.0;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The scores of a host the filters accepted, in a fixed order (image, load, affinity) so that
/// their sum is the same bits whatever else is in the fleet.
pub(super) fn scores(request: &Request, host: &Candidate, policy: &Policy) -> Vec<Score> {
    let mut scores = vec![image_locality(request, host), load(request, host, policy)];
    scores.extend(soft_affinity(request, host));
    scores
}

/// The bytes of the chain the host holds (each image counted once), and of the whole chain.
fn cached_bytes(request: &Request, host: &Candidate) -> (u64, u64) {
    let cached: HashSet<Uuid> = host.images.iter().map(|image| image.uuid).collect();
    let mut seen = BTreeSet::new();
    let (mut saved, mut total) = (0u64, 0u64);
    for part in request.image_chain.iter().filter(|part| seen.insert(part.uuid)) {
        total = total.saturating_add(part.size);
        if cached.contains(&part.uuid) {
            saved = saved.saturating_add(part.size);
        }
    }
    (saved, total)
}

fn image_locality(request: &Request, host: &Candidate) -> Score {
    let (saved, total) = cached_bytes(request, host);
    let why = if total == 0 {
        "no image chain: nothing to download".to_string()
    } else if saved == 0 {
        format!("none of the image chain cached ({} to download)", human_bytes(total))
    } else if saved == total {
        format!("all of the image chain cached ({})", human_bytes(total))
    } else {
        format!(
            "{} of the image chain cached, {} to download",
            human_bytes(saved),
            human_bytes(total - saved)
        )
    };
    Score { weight: "image".to_string(), value: IMAGE_WEIGHT_PER_GIB * saved as f64 / GIB as f64, why }
}

fn human_bytes(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The fractions of the host's vCPUs and memory (after overcommit) allocated once the request
/// is placed there, each in [0, 1]. A host with nothing to give counts as full.
fn allocated_after(request: &Request, host: &Candidate, policy: &Policy) -> (f64, f64) {
    let fraction = |reserved: u64, need: u64, capacity: u64, ratio: f64| {
        let limit = overcommitted(capacity, ratio);
        if limit == 0 {
            1.0
        } else {
            (reserved.saturating_add(need) as f64 / limit as f64).min(1.0)
        }
    };
    let vcpus = fraction(
        host.reserved.vcpus,
        request.vcpus.into(),
        host.capacity.vcpus.into(),
        policy.cpu_overcommit,
    );
    let memory = fraction(
        host.reserved.memory_mib,
        request.memory_mib,
        host.capacity.memory_mib,
        policy.memory_overcommit,
    );
    (vcpus, memory)
}

/// Spread scores 1 − u and pack u, where u is the mean of the vCPU and memory fractions after
/// placement (disk is left out: a host's free disk is no measure of its load).
fn load(request: &Request, host: &Candidate, policy: &Policy) -> Score {
    let (vcpus, memory) = allocated_after(request, host, policy);
    let allocated = (vcpus + memory) / 2.0;
    let (weight, value) = match policy.strategy {
        Strategy::Spread => ("spread", 1.0 - allocated),
        Strategy::Pack => ("pack", allocated),
    };
    let percent = |fraction: f64| (fraction * 100.0).round();
    let why = format!(
        "{}% allocated after placement (vCPUs {}%, memory {}%)",
        percent(allocated),
        percent(vcpus),
        percent(memory)
    );
    Score { weight: weight.to_string(), value, why }
}

/// Only when the request has soft rules.
fn soft_affinity(request: &Request, host: &Candidate) -> Option<Score> {
    let soft: Vec<&Affinity> = request.affinity.iter().filter(|rule| rule.soft).collect();
    if soft.is_empty() {
        return None;
    }
    let (met, unmet): (Vec<_>, Vec<_>) =
        soft.iter().copied().partition(|rule| rule.unmet_on(&host.instances).is_none());
    let list = |rules: &[&Affinity]| rules.iter().map(|rule| rule.to_string()).collect::<Vec<_>>().join(", ");
    let why = match (met.is_empty(), unmet.is_empty()) {
        (false, true) => format!("meets every soft rule: {}", list(&met)),
        (true, false) => format!("meets no soft rule: not {}", list(&unmet)),
        _ => {
            format!("meets {} of {} soft rules: {}; not {}", met.len(), soft.len(), list(&met), list(&unmet))
        }
    };
    Some(Score { weight: "affinity".to_string(), value: SOFT_AFFINITY_WEIGHT * met.len() as f64, why })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{host, neighbour, policy, request, IMAGE};
    use super::super::{place, ImagePart};
    use super::*;
    use crate::hosts::CachedImage;

    fn cached(uuid: Uuid) -> CachedImage {
        CachedImage { uuid, origin: None, size: 0 }
    }

    fn score<'a>(scores: &'a [Score], weight: &str) -> &'a Score {
        scores.iter().find(|score| score.weight == weight).unwrap()
    }

    #[test]
    fn the_host_with_the_image_wins_over_a_less_loaded_one() {
        let mut request = request();
        request.image_chain = vec![ImagePart { uuid: IMAGE, size: 10 * GIB }];
        let empty = host("empty");
        let mut busy_with_image = host("busy");
        busy_with_image.reserved.vcpus = 15;
        busy_with_image.reserved.memory_mib = busy_with_image.capacity.memory_mib - 1024;
        busy_with_image.images = vec![cached(IMAGE)];
        let decision = place(&request, &[empty, busy_with_image.clone()], &policy(Strategy::Spread));
        assert_eq!(decision.chosen, Some(busy_with_image.id));
        let image = score(&decision.hosts[0].scores, "image");
        assert_eq!(image.value, 10.0);
        assert_eq!(image.why, "all of the image chain cached (10.0 GiB)");
    }

    #[test]
    fn a_tiny_cached_image_counts_little() {
        let mut request = request();
        request.image_chain = vec![ImagePart { uuid: IMAGE, size: 100 * MIB }];
        let mut half_full_with_image = host("half");
        half_full_with_image.reserved.vcpus = 8;
        half_full_with_image.reserved.memory_mib = half_full_with_image.capacity.memory_mib / 2;
        half_full_with_image.images = vec![cached(IMAGE)];
        let empty = host("empty");
        let decision = place(&request, &[half_full_with_image, empty.clone()], &policy(Strategy::Spread));
        assert_eq!(decision.chosen, Some(empty.id));
        let image = score(&decision.hosts[1].scores, "image");
        assert!((image.value - 100.0 / 1024.0).abs() < 1e-12, "{image:?}");
    }

    #[test]
    fn origins_count_as_well_each_once() {
        let origin = Uuid::from_u128(0x0819);
        let mut request = request();
        request.image_chain = vec![
            ImagePart { uuid: IMAGE, size: GIB / 2 },
            ImagePart { uuid: origin, size: 3 * GIB },
            ImagePart { uuid: origin, size: 3 * GIB },
        ];
        let mut host = host("h");
        host.images = vec![cached(origin)];
        let image = image_locality(&request, &host);
        assert_eq!(image.value, 3.0);
        assert_eq!(image.why, "3.0 GiB of the image chain cached, 512 MiB to download");
        host.images.clear();
        assert_eq!(
            image_locality(&request, &host).why,
            "none of the image chain cached (3.5 GiB to download)"
        );
        request.image_chain.clear();
        assert_eq!(image_locality(&request, &host).why, "no image chain: nothing to download");
    }

    #[test]
    fn spread_prefers_the_emptier_host() {
        let mut busy = host("busy");
        busy.reserved.vcpus = 8;
        let empty = host("empty");
        let decision = place(&request(), &[busy, empty.clone()], &policy(Strategy::Spread));
        assert_eq!(decision.chosen, Some(empty.id));
        let spread = score(&decision.hosts[0].scores, "spread");
        // 1 of 16 vCPUs, 1 of 64 GiB: (6.25% + 1.5625%) / 2.
        assert_eq!(spread.value, 1.0 - (1.0 / 16.0 + 1.0 / 64.0) / 2.0);
        assert_eq!(spread.why, "4% allocated after placement (vCPUs 6%, memory 2%)");
    }

    #[test]
    fn pack_prefers_the_fuller_host() {
        let mut busy = host("busy");
        busy.reserved.vcpus = 8;
        let empty = host("empty");
        let decision = place(&request(), &[empty, busy.clone()], &policy(Strategy::Pack));
        assert_eq!(decision.chosen, Some(busy.id));
        assert_eq!(score(&decision.hosts[0].scores, "pack").value, (9.0 / 16.0 + 1.0 / 64.0) / 2.0);
    }

    #[test]
    fn utilisation_is_the_mean_of_vcpus_and_memory_after_overcommit() {
        let mut host = host("h");
        host.capacity.vcpus = 4;
        host.reserved.vcpus = 7;
        host.capacity.memory_mib = 1000;
        let mut policy = policy(Strategy::Spread);
        policy.cpu_overcommit = 2.0;
        let mut request = request();
        request.memory_mib = 250;
        assert_eq!(allocated_after(&request, &host, &policy), (1.0, 0.25));
        host.capacity.memory_mib = 0;
        request.memory_mib = 0;
        assert_eq!(allocated_after(&request, &host, &policy).1, 1.0, "nothing to give: full");
    }

    #[test]
    fn soft_affinity_outweighs_load_and_image_locality() {
        let mut request = request();
        request.image_chain = vec![ImagePart { uuid: IMAGE, size: 50 * GIB }];
        request.affinity = vec![Affinity::parse("instance!=~db-*").unwrap()];
        let mut with_db = host("with-db");
        with_db.instances = vec![neighbour("db-1", 1)];
        with_db.images = vec![cached(IMAGE)];
        let mut busy = host("busy");
        busy.reserved.vcpus = 15;
        let decision = place(&request, &[with_db, busy.clone()], &policy(Strategy::Spread));
        assert_eq!(decision.chosen, Some(busy.id));
        let affinity = score(&decision.hosts[0].scores, "affinity");
        assert_eq!(affinity.value, SOFT_AFFINITY_WEIGHT);
        assert_eq!(affinity.why, "meets every soft rule: instance!=~db-*");
        let loser = &decision.hosts[1];
        assert_eq!(loser.refused, None, "a soft rule never refuses");
        assert_eq!(score(&loser.scores, "affinity").why, "meets no soft rule: not instance!=~db-*");
    }

    #[test]
    fn each_soft_rule_met_counts_and_hard_rules_do_not_weigh() {
        let mut request = request();
        request.affinity = vec![
            Affinity::parse("instance==~web").unwrap(),
            Affinity::parse("instance!=~db").unwrap(),
            Affinity::parse("instance!=cache").unwrap(),
        ];
        let mut host = host("h");
        host.instances = vec![neighbour("web", 1), neighbour("db", 2)];
        let affinity = soft_affinity(&request, &host).unwrap();
        assert_eq!(affinity.value, SOFT_AFFINITY_WEIGHT);
        assert_eq!(affinity.why, "meets 1 of 2 soft rules: instance==~web; not instance!=~db");
        request.affinity.retain(|rule| !rule.soft);
        assert_eq!(soft_affinity(&request, &host), None, "no soft rules: no affinity score");
    }

    #[test]
    fn the_total_is_the_sum_of_the_scores() {
        let mut request = request();
        request.affinity = vec![Affinity::parse("instance==~web").unwrap()];
        let mut host = host("h");
        host.images = vec![cached(IMAGE)];
        host.instances = vec![neighbour("web", 1)];
        let decision = place(&request, &[host], &policy(Strategy::Pack));
        let verdict = &decision.hosts[0];
        let weights: Vec<&str> = verdict.scores.iter().map(|score| score.weight.as_str()).collect();
        assert_eq!(weights, ["image", "pack", "affinity"]);
        assert_eq!(verdict.total, verdict.scores.iter().map(|score| score.value).sum::<f64>());
    }
}
