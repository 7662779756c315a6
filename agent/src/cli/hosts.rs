//! `agent hosts ...`: clients of cloudapi's `/api/v1/hosts`, the hosts of a fleet. Only
//! cloudapi has them (a lone agent answers `ResourceNotFound`), so `--url` must be its URL. A
//! host is named by id or by name.

use chrono::{DateTime, Utc};
use reqwest::blocking::RequestBuilder;
use serde_json::{json, Value};

use super::{exit, human_size, str_of, CliResult, Connection, Failure};

/// cloudapi counts memory and disk in MiB.
const MIB: u64 = 1 << 20;

/// `mib` MiB for people (`16.0 GiB`); zero is `0`, shorter than `0 B` in a `used/total`.
fn mib_size(mib: u64) -> String {
    if mib == 0 {
        "0".into()
    } else {
        human_size(mib.saturating_mul(MIB))
    }
}

/// `host[group][key]` as a number, if it is one.
fn number(host: &Value, group: &str, key: &str) -> Option<u64> {
    host.get(group).and_then(|g| g.get(key)).and_then(Value::as_u64)
}

/// How long ago `at` (RFC 3339) was at `now`: `4 s ago`, `3 min ago`, ...; the text itself if
/// it is no time (a clock behind cloudapi's counts as just now).
fn age(at: &str, now: DateTime<Utc>) -> String {
    let Ok(then) = DateTime::parse_from_rfc3339(at) else {
        return at.to_string();
    };
    let secs = (now - then.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86400),
    }
}

/// What is allocated of a resource, and how much there is: `2/8`, `1.0 GiB/16.0 GiB`; `-`
/// for a part cloudapi did not say.
fn used_of(used: Option<u64>, total: Option<u64>, show: impl Fn(u64) -> String) -> String {
    let part = |n: Option<u64>| n.map(&show).unwrap_or_else(|| "-".into());
    format!("{}/{}", part(used), part(total))
}

/// The instances a host reported.
fn instances_of(host: &Value) -> &[Value] {
    host.get("instances").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The `hosts list` table, by name (cloudapi's order is none in particular), with
/// heartbeats' ages as of `now`.
fn hosts_table(list: &Value, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{:<20}  {:<8}  {:<10}  {:<7}  {:<19}  {:>10}  {:>9}  LAST HEARTBEAT\n",
        "NAME", "STATE", "HYPERVISOR", "VCPUS", "MEMORY", "DISK FREE", "INSTANCES"
    );
    let mut hosts: Vec<&Value> = list.as_array().into_iter().flatten().collect();
    hosts.sort_by_key(|host| str_of(host, "name"));
    for host in hosts {
        let vcpus =
            used_of(number(host, "allocated", "vcpus"), number(host, "capacity", "vcpus"), |n| n.to_string());
        let memory = used_of(
            number(host, "allocated", "memory_mib"),
            number(host, "capacity", "memory_mib"),
            mib_size,
        );
        let disk_free = number(host, "capacity", "disk_free_mib").map_or_else(|| "-".into(), mib_size);
        out.push_str(&format!(
            "{:<20}  {:<8}  {:<10}  {:<7}  {:<19}  {:>10}  {:>9}  {}\n",
            str_of(host, "name"),
            str_of(host, "state"),
            str_of(host, "hypervisor"),
            vcpus,
            memory,
            disk_free,
            instances_of(host).len(),
            age(str_of(host, "last_heartbeat"), now),
        ));
    }
    out
}

/// `hosts get`: the host, then the images and instances it reported.
fn host_details(host: &Value, now: DateTime<Utc>) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = |key: &str, value: String| lines.push(format!("{key:<14} {value}"));
    for key in ["id", "name", "url", "state", "hypervisor"] {
        line(key, str_of(host, key).to_string());
    }
    let tags: Vec<String> = host
        .get("tags")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    line("tags", if tags.is_empty() { "-".into() } else { tags.join(", ") });
    let shown = |n: Option<u64>, show: fn(u64) -> String| n.map_or_else(|| "-".into(), show);
    line(
        "vcpus",
        format!(
            "{} of {} allocated",
            shown(number(host, "allocated", "vcpus"), |n| n.to_string()),
            shown(number(host, "capacity", "vcpus"), |n| n.to_string())
        ),
    );
    line(
        "memory",
        format!(
            "{} of {} allocated",
            shown(number(host, "allocated", "memory_mib"), mib_size),
            shown(number(host, "capacity", "memory_mib"), mib_size)
        ),
    );
    line(
        "disk",
        format!(
            "{} allocated, {} free",
            shown(number(host, "allocated", "disk_mib"), mib_size),
            shown(number(host, "capacity", "disk_free_mib"), mib_size)
        ),
    );
    line("registered_at", str_of(host, "registered_at").to_string());
    let heartbeat = str_of(host, "last_heartbeat");
    line("last_heartbeat", format!("{heartbeat} ({})", age(heartbeat, now)));

    let images = host.get("images").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    line("images", images.len().to_string());
    for image in images {
        let origin = image["origin"].as_str().map(|o| format!("  origin {o}")).unwrap_or_default();
        lines.push(format!(
            "  {:<36}  {:>10}{origin}",
            str_of(image, "uuid"),
            human_size(image["size"].as_u64().unwrap_or(0))
        ));
    }
    let instances = instances_of(host);
    lines.push(format!("{:<14} {}", "instances", instances.len()));
    for instance in instances {
        lines.push(format!(
            "  {:<36}  {:<16}  {:<10}  {:>2} vCPUs  {:>10}",
            str_of(instance, "uuid"),
            str_of(instance, "alias"),
            str_of(instance, "state"),
            instance["vcpus"].as_u64().unwrap_or(0),
            mib_size(instance["memory_mib"].as_u64().unwrap_or(0)),
        ));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// What `drain` or `undrain` did, from the host cloudapi answered with. An `unknown` host
/// keeps that state whatever its drain: say so rather than claim it takes instances.
fn drained_message(host: &Value, draining: bool) -> String {
    let name = str_of(host, "name");
    match (draining, str_of(host, "state")) {
        (true, _) => format!(
            "Host {name} is draining: no new instances are placed there (`agent hosts undrain {name}` \
             takes it back)"
        ),
        (false, "unknown") => format!(
            "Host {name} is no longer draining, but it is unknown (no recent heartbeat): nothing is \
             placed there until it is back"
        ),
        (false, state) => format!("Host {name} is {state}: new instances may be placed there"),
    }
}

impl Connection {
    /// A call to `/api/v1/hosts...`. A URL without that route is no cloudapi: the failure
    /// says so (and whether it is an agent, which its ping tells) instead of `ResourceNotFound`.
    fn fleet(&self, request: RequestBuilder) -> Result<Value, Failure> {
        self.send(request).map_err(|failure| {
            if failure.api_code.as_deref() != Some(crate::error_code::ErrorCode::ResourceNotFound.as_str()) {
                return failure;
            }
            let is_agent = self.get("/api/v1/ping").is_ok_and(|ping| ping["agent"] == json!(true));
            let what = if is_agent { "an agent, not cloudapi" } else { "not cloudapi (it has no hosts)" };
            Failure::usage(format!(
                "{} is {what}: `agent hosts` needs cloudapi's URL (--url or AGENT_URL)",
                self.url
            ))
        })
    }

    /// The id of the host named `id` (an id, or a name: looked up in the list).
    fn host_id(&self, id: &str) -> Result<String, Failure> {
        if uuid::Uuid::parse_str(id).is_ok() {
            return Ok(id.to_string());
        }
        let list = self.fleet(self.client().get(format!("{}/api/v1/hosts", self.url)))?;
        list.as_array()
            .into_iter()
            .flatten()
            .find(|host| str_of(host, "name") == id)
            .map(|host| str_of(host, "id").to_string())
            .ok_or_else(|| Failure::new(exit::NOT_FOUND, format!("no host with id or name {id:?}")))
    }

    fn host_url(&self, id: &str) -> Result<String, Failure> {
        Ok(format!("{}/api/v1/hosts/{}", self.url, self.host_id(id)?))
    }
}

pub fn list(conn: &Connection) -> CliResult {
    let list = conn.fleet(conn.client().get(format!("{}/api/v1/hosts", conn.url)))?;
    conn.print(&list, |l| print!("{}", hosts_table(l, Utc::now())));
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> CliResult {
    let host = conn.fleet(conn.client().get(conn.host_url(id)?))?;
    conn.print(&host, |h| print!("{}", host_details(h, Utc::now())));
    Ok(())
}

/// Drains a host (`draining`: no new instances go there) or takes it back.
pub fn drain(conn: &Connection, id: &str, draining: bool) -> CliResult {
    let action = if draining { "drain" } else { "undrain" };
    let host = conn.fleet(conn.client().post(format!("{}?action={action}", conn.host_url(id)?)))?;
    conn.print(&host, |h| println!("{}", drained_message(h, draining)));
    Ok(())
}

/// Removes a host from the fleet (its credential with it). cloudapi refuses while it has
/// instances; `force` lets an `unknown` one go with them.
pub fn remove(conn: &Connection, id: &str, force: bool) -> CliResult {
    let host = conn.host_id(id)?;
    let url = format!("{}/api/v1/hosts/{host}{}", conn.url, if force { "?force=true" } else { "" });
    conn.fleet(conn.client().delete(url))?;
    if conn.json {
        println!("{}", json!({"id": host, "removed": true}));
    } else if host == id {
        println!("Removed host {host}");
    } else {
        println!("Removed host {id} ({host})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn host() -> Value {
        json!({
            "id": "3f0c7c1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f", "name": "h1", "url": "http://10.0.0.1:9090",
            "state": "draining", "hypervisor": "qemu", "tags": {"rack": "a", "zone": "z1"},
            "capacity": {"vcpus": 8, "memory_mib": 16384, "disk_free_mib": 90000},
            "allocated": {"vcpus": 2, "memory_mib": 1024, "disk_mib": 2048},
            "images": [{"uuid": "0d8cf0a4-3a1b-4c5e-9d3e-1b2c3d4e5f60", "origin": null, "size": 1048576}],
            "instances": [{"uuid": "7e57a1b2-0000-4000-8000-000000000001", "alias": "web-1",
                           "state": "running", "image": null, "vcpus": 2, "memory_mib": 1024, "disk_mib": 2048}],
            "registered_at": "2025-01-01T10:00:00.000Z", "last_heartbeat": "2025-01-01T12:00:03.000Z"
        })
    }

    #[test]
    fn ages_read_as_people_say_them() {
        let now = at("2025-01-01T12:00:05Z");
        assert_eq!(age("2025-01-01T12:00:03.000Z", now), "2 s ago");
        assert_eq!(age("2025-01-01T11:57:00Z", now), "3 min ago");
        assert_eq!(age("2025-01-01T09:00:00Z", now), "3 h ago");
        assert_eq!(age("2024-12-30T12:00:00Z", now), "2 d ago");
        // A clock behind cloudapi's, and a time that is none.
        assert_eq!(age("2025-01-01T12:00:09Z", now), "0 s ago");
        assert_eq!(age("-", now), "-");
    }

    #[test]
    fn the_list_shows_used_of_total_and_the_heartbeats_age() {
        let mut other = host();
        other["name"] = json!("a0");
        let table = hosts_table(&json!([host(), other]), at("2025-01-01T12:00:05Z"));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].starts_with("a0 ") && lines[2].starts_with("h1 "), "by name: {table}");
        for column in
            ["NAME", "STATE", "HYPERVISOR", "VCPUS", "MEMORY", "DISK FREE", "INSTANCES", "LAST HEARTBEAT"]
        {
            assert!(lines[0].contains(column), "{column}: {table}");
        }
        let row: Vec<&str> = lines[2].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(row, ["h1", "draining", "qemu", "2/8", "1.0 GiB/16.0 GiB", "87.9 GiB", "1", "2 s ago"]);
    }

    #[test]
    fn a_host_cloudapi_says_little_about_still_makes_a_row() {
        let table = hosts_table(&json!([{"name": "bare"}]), Utc::now());
        let row = table.lines().nth(1).unwrap();
        assert!(row.starts_with("bare ") && row.contains("-/-") && row.trim_end().ends_with('-'), "{row}");
        assert_eq!(hosts_table(&json!([]), Utc::now()).lines().count(), 1);
        // Not a list at all: the header, and no panic.
        assert_eq!(hosts_table(&json!({"weird": true}), Utc::now()).lines().count(), 1);
    }

    #[test]
    fn details_have_the_resources_images_and_instances() {
        let text = host_details(&host(), at("2025-01-01T12:00:05Z"));
        for expected in [
            "name           h1",
            "tags           rack=a, zone=z1",
            "vcpus          2 of 8 allocated",
            "memory         1.0 GiB of 16.0 GiB allocated",
            "disk           2.0 GiB allocated, 87.9 GiB free",
            "last_heartbeat 2025-01-01T12:00:03.000Z (2 s ago)",
            "images         1",
            "  0d8cf0a4-3a1b-4c5e-9d3e-1b2c3d4e5f60     1.0 MiB",
            "instances      1",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
        let instance = text.lines().last().unwrap();
        assert!(instance.contains("web-1") && instance.contains("running") && instance.contains("2 vCPUs"));
        let empty = host_details(&json!({"name": "new"}), Utc::now());
        assert!(empty.contains("tags           -") && empty.contains("instances      0"), "{empty}");
    }

    #[test]
    fn drain_messages_say_what_placement_does_now() {
        let mut h = host();
        assert!(drained_message(&h, true).starts_with("Host h1 is draining: no new instances"));
        h["state"] = json!("running");
        assert_eq!(drained_message(&h, false), "Host h1 is running: new instances may be placed there");
        h["state"] = json!("unknown");
        assert!(drained_message(&h, false).contains("no longer draining, but it is unknown"));
    }
}
