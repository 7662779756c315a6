//! Creating an instance: the request split into what placement needs and the agent's own
//! body, the image's facts, and the placement decision taken with its reservation in one
//! database transaction (under an advisory lock on PostgreSQL, so that concurrent creates on
//! any replicas never over-commit a host).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{InstanceError, InstanceView, Instances, Phase, Progress};
use crate::db::{now_ms, Dialect};
use crate::metrics::PlacementOutcome;
use crate::placement::{self, Affinity, Decision, ImagePart};

/// An arbitrary constant: the advisory lock every placement takes on PostgreSQL.
const PLACEMENT_LOCK: i64 = 0x636c_6f75_6461_7069;

/// A create, as the API took it.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The agent's body (without cloudapi's keys); `uuid` and `alias` are set by `create`.
    pub body: Map<String, Value>,
    pub host: Option<String>,
    pub host_tags: BTreeMap<String, String>,
    pub affinity: Vec<Affinity>,
    pub dry_run: bool,
}

/// What `create` did.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// A dry run: the decision, nothing reserved.
    DryRun(Decision),
    /// Placed and reserved; provisioning goes on in the background.
    Placed(Box<InstanceView>),
}

/// The fields of the agent's body that placement needs (the agent's names and aliases).
#[derive(Deserialize)]
struct Sizes {
    #[serde(default)]
    uuid: Option<Uuid>,
    #[serde(default, alias = "ima")]
    image: Option<Uuid>,
    #[serde(default, alias = "mem", alias = "memory")]
    memory_mib: Option<u64>,
    #[serde(default, alias = "cpu")]
    vcpus: Option<u32>,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default, alias = "disk")]
    disk_mib: Option<u64>,
}

impl CreateRequest {
    /// Splits a create body.
    pub fn parse(body: Value) -> Result<CreateRequest, InstanceError> {
        let invalid = |m: String| InstanceError::Invalid(m);
        let Value::Object(mut body) = body else {
            return Err(invalid("the body must be a JSON object".into()));
        };
        let host = match body.remove("host") {
            None | Some(Value::Null) => None,
            Some(Value::String(host)) => Some(host),
            Some(other) => return Err(invalid(format!("host must be a host's id or name, not {other}"))),
        };
        let host_tags = match body.remove("host_tags") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(tags) => serde_json::from_value(tags)
                .map_err(|e| invalid(format!("host_tags must be an object of strings: {e}")))?,
        };
        let affinity = match body.remove("affinity") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(rule)) => vec![rule],
            Some(rules) => serde_json::from_value(rules)
                .map_err(|e| invalid(format!("affinity must be a rule or a list of rules: {e}")))?,
        };
        let affinity = affinity
            .iter()
            .map(|rule| Affinity::parse(rule).map_err(|e| invalid(format!("affinity {rule:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let dry_run = match body.remove("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(other) => return Err(invalid(format!("dry_run must be true or false, not {other}"))),
        };
        Ok(CreateRequest { body, host, host_tags, affinity, dry_run })
    }

    fn sizes(&self) -> Result<Sizes, InstanceError> {
        serde_json::from_value(Value::Object(self.body.clone()))
            .map_err(|e| InstanceError::Invalid(format!("invalid instance request: {e}")))
    }
}

/// The agent's own checks of sizes and aliases, made before anything is reserved.
fn check_sizes(vcpus: u32, memory_mib: u64, alias: Option<&str>) -> Result<(), InstanceError> {
    let invalid = |m: String| Err(InstanceError::Invalid(m));
    if !(1..=64).contains(&vcpus) {
        return invalid(format!("vcpus must be between 1 and 64, not {vcpus}"));
    }
    if !(32..=1024 * 1024).contains(&memory_mib) {
        return invalid(format!("memory_mib must be between 32 and 1048576, not {memory_mib}"));
    }
    if let Some(alias) = alias {
        if alias.is_empty() || alias.len() > 64 || alias.chars().any(|c| c.is_control()) {
            return invalid("alias must be 1 to 64 printable characters".into());
        }
    }
    Ok(())
}

impl Instances {
    /// Places an instance and reserves its share of the host (or, for a dry run, only says
    /// where it would go), then provisions it in the background.
    pub async fn create(self: &Arc<Self>, request: CreateRequest) -> Result<CreateOutcome, InstanceError> {
        let sizes = request.sizes()?;
        let vcpus = sizes.vcpus.unwrap_or(1);
        let memory_mib = sizes.memory_mib.unwrap_or(512);
        check_sizes(vcpus, memory_mib, sizes.alias.as_deref())?;
        let uuid = sizes.uuid.unwrap_or_else(Uuid::new_v4);
        // The agent's default alias, set here so that it is unique in the fleet too.
        let alias = sizes.alias.clone().unwrap_or_else(|| format!("i-{}", &uuid.simple().to_string()[..12]));
        let (chain, image_size_mib) = match sizes.image {
            Some(image) => self.image_chain(image).await?,
            None => (Vec::new(), None),
        };
        let disk_mib = match (sizes.disk_mib, image_size_mib) {
            (Some(disk), _) => disk,
            (None, Some(image)) => image,
            (None, None) if sizes.image.is_none() => {
                return Err(InstanceError::Invalid(
                    "an instance without an image needs disk_mib: the size of its blank disk".into(),
                ))
            }
            (None, None) => 0,
        };
        let wanted = placement::Request {
            vcpus,
            memory_mib,
            disk_mib,
            image: sizes.image.unwrap_or_default(),
            image_chain: chain,
            hypervisors: None,
            host: request.host.clone(),
            host_tags: request.host_tags.clone(),
            affinity: request.affinity.clone(),
        };

        let mut tx = self.db.pool.begin().await?;
        if self.db.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(PLACEMENT_LOCK).execute(&mut *tx).await?;
        }
        let candidates = self.hosts.candidates(&mut tx, &request.affinity).await?;
        let decision = placement::place(&wanted, &candidates, &self.policy);
        if request.dry_run {
            tx.rollback().await?;
            self.metrics.placement(PlacementOutcome::DryRun);
            return Ok(CreateOutcome::DryRun(decision));
        }
        let Some(host) = decision.chosen else {
            self.metrics.placement(PlacementOutcome::NoCapacity);
            return Err(InstanceError::NoCapacity(decision.reasons()));
        };
        let taken = sqlx::query("SELECT uuid FROM instances WHERE uuid = $1 OR alias = $2")
            .bind(uuid.to_string())
            .bind(&alias)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(InstanceError::Exists(format!(
                "an instance of uuid {uuid} or alias {alias:?} exists"
            )));
        }
        let mut body = request.body.clone();
        body.insert("uuid".into(), Value::String(uuid.to_string()));
        body.insert("alias".into(), Value::String(alias.clone()));
        let at = now_ms();
        let progress = Progress { step: "placed".into(), ..Progress::default() };
        sqlx::query("INSERT INTO instances (uuid, alias, host_id, phase, adopted, vcpus, memory_mib, disk_mib, image, request, placement, progress, error, lease_owner, lease_until_ms, created_ms, updated_ms) VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $13, $14, $15)")
            .bind(uuid.to_string())
            .bind(&alias)
            .bind(host.to_string())
            .bind(Phase::Provisioning.as_str())
            .bind(i64::from(vcpus))
            .bind(memory_mib as i64)
            .bind(disk_mib as i64)
            .bind(sizes.image.map(|u| u.to_string()))
            .bind(Value::Object(body).to_string())
            .bind(serde_json::to_string(&decision).expect("decisions serialise"))
            .bind(serde_json::to_string(&progress).expect("progress serialises"))
            .bind(&self.replica)
            .bind(at + super::provision::LEASE_MS)
            .bind(at)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        let sizes = super::reservations::Sizes {
            vcpus: i64::from(vcpus),
            memory_mib: memory_mib as i64,
            disk_mib: disk_mib as i64,
        };
        super::reservations::shift(&mut tx, &host.to_string(), sizes, None, Some(Phase::Provisioning))
            .await?;
        tx.commit().await?;
        self.metrics.placement(PlacementOutcome::Placed);
        tracing::info!(%uuid, alias, %host, "instance placed");
        self.spawn_provision(uuid);
        Ok(CreateOutcome::Placed(Box::new(self.get(&uuid.to_string()).await?)))
    }

    /// The image and its origins with their sizes, and its disk size: from the sources, or,
    /// for an image no source has, from the hosts that hold it.
    async fn image_chain(&self, image: Uuid) -> Result<(Vec<ImagePart>, Option<u64>), InstanceError> {
        if let Some(facts) = self.catalogue.facts(image).await? {
            if facts.image_type != "zvol" {
                return Err(InstanceError::UnsupportedImage(format!(
                    "image {image} is a {:?} image, not a disk: instances boot only \"zvol\" images",
                    facts.image_type
                )));
            }
            return Ok((facts.chain, facts.image_size_mib));
        }
        match self.hosts.cached_image(&image).await? {
            Some(cached) => Ok((vec![ImagePart { uuid: image, size: cached.size }], None)),
            None => Err(crate::catalogue::CatalogueError::NotFound(image).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_body_is_split_into_placement_and_the_agent_body() {
        let body = serde_json::json!({"image": "0d8cf0a4-3a1b-4c5e-9d3e-1b2c3d4e5f60", "mem": 1024,
            "host_tags": {"rack": "a"}, "affinity": "instance!=web-*", "dry_run": true, "nics": ["user"]});
        let request = CreateRequest::parse(body).unwrap();
        assert!(request.dry_run);
        assert_eq!(request.host_tags, [("rack".to_string(), "a".to_string())].into());
        assert_eq!(request.affinity.len(), 1);
        assert_eq!(request.body.keys().collect::<Vec<_>>(), ["image", "mem", "nics"]);
        assert_eq!(request.sizes().unwrap().memory_mib, Some(1024));
        for (bad, needle) in [
            (serde_json::json!([]), "JSON object"),
            (serde_json::json!({"host": 3}), "host must be"),
            (serde_json::json!({"affinity": "instance<>x"}), "affinity"),
            (serde_json::json!({"dry_run": "yes"}), "dry_run"),
            (serde_json::json!({"host_tags": ["a"]}), "host_tags"),
        ] {
            let error = CreateRequest::parse(bad.clone()).unwrap_err().to_string();
            assert!(error.contains(needle), "{bad}: {error}");
        }
        assert!(check_sizes(0, 512, None).is_err() && check_sizes(1, 16, None).is_err());
        assert!(check_sizes(1, 512, Some("")).is_err() && check_sizes(2, 512, Some("web-1")).is_ok());
    }
}
