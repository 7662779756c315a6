//! `agent instances ...` and `agent console`: clients of `/api/v1/instances`, the agent's or
//! cloudapi's (the same shapes, with where each instance is). An instance is named by uuid or
//! by alias.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use serde_json::{json, Value};
use uuid::Uuid;

use super::progress::{pending, Waiting};
use super::{exit, human_size, str_of, CliResult, Connection, Failure};

/// What `instances create` sends.
pub struct CreateArgs {
    /// `None`: a blank disk.
    pub image: Option<Uuid>,
    pub alias: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_mib: Option<u64>,
    pub nics: Vec<String>,
    pub firmware: Option<String>,
    pub guest: GuestArgs,
    /// An installer ISO attached as a CD, and `cd` to boot from it.
    pub cdrom: Option<String>,
    pub boot: Option<String>,
    pub start: bool,
}

/// What the guest is told about itself, from the command line (`create` and `update`).
#[derive(Debug, Default, clap::Args)]
pub struct GuestArgs {
    /// The guest's hostname (default: the alias, when it is a valid host name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// A file of OpenSSH public keys, one per line; repeat for more files.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// cloud-init user-data (#cloud-config, a script ...) from a file.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// cloud-init network config (v1 or v2 YAML) from a file.
    #[arg(long, value_name = "FILE")]
    pub network_config: Option<PathBuf>,
    /// Metadata for the guest; repeat for more.
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
}

impl GuestArgs {
    /// The JSON fields these arguments set (files read here, so errors name the file).
    fn fields(&self) -> Result<serde_json::Map<String, Value>, Failure> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", path.display())))
        };
        let mut fields = serde_json::Map::new();
        if let Some(hostname) = &self.hostname {
            fields.insert("hostname".into(), json!(hostname));
        }
        if !self.ssh_keys.is_empty() {
            let mut keys = Vec::new();
            for path in &self.ssh_keys {
                let text = read(path)?;
                keys.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(String::from),
                );
            }
            fields.insert("ssh_keys".into(), json!(keys));
        }
        if let Some(path) = &self.user_data {
            fields.insert("user_data".into(), json!(read(path)?));
        }
        if let Some(path) = &self.network_config {
            fields.insert("network_config".into(), json!(read(path)?));
        }
        if !self.metadata.is_empty() {
            let mut metadata = serde_json::Map::new();
            for pair in &self.metadata {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    Failure::new(exit::USAGE, format!("--metadata {pair:?}: expected KEY=VALUE"))
                })?;
                metadata.insert(key.to_string(), json!(value));
            }
            fields.insert("metadata".into(), Value::Object(metadata));
        }
        Ok(fields)
    }
}

impl Connection {
    /// The uuid of the instance named `id` (a uuid, or an alias).
    fn instance_uuid(&self, id: &str) -> Result<String, Failure> {
        if uuid::Uuid::parse_str(id).is_ok() {
            return Ok(id.to_string());
        }
        let list = self.get("/api/v1/instances")?;
        let matches: Vec<&Value> =
            list.as_array().into_iter().flatten().filter(|i| str_of(i, "alias") == id).collect();
        match matches.as_slice() {
            [one] => Ok(str_of(one, "uuid").to_string()),
            [] => Err(Failure::new(exit::NOT_FOUND, format!("no instance with uuid or alias {id:?}"))),
            _ => {
                Err(Failure::new(exit::USAGE, format!("several instances have the alias {id:?}; use a uuid")))
            }
        }
    }

    pub(super) fn instance_url(&self, id: &str) -> Result<String, Failure> {
        Ok(format!("{}/api/v1/instances/{}", self.url, self.instance_uuid(id)?))
    }
}

/// Why an instance is in its state: the agent's `reason`; from cloudapi, which has none, what
/// it knows instead (a failed create's error, a silent host, how far provisioning is).
fn reason_of(i: &Value) -> String {
    let text = |key: &str| i.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(reason) = text("reason").or_else(|| text("error")) {
        return reason.to_string();
    }
    if text("host_state") == Some("unknown") {
        return "its host sent no heartbeat: the last state it reported".into();
    }
    if text("phase") == Some("provisioning") {
        return progress_of(i.get("progress").unwrap_or(&Value::Null));
    }
    "-".into()
}

/// Where cloudapi's provisioning is: `importing 12.0 MiB of 40.0 MiB`, `creating`, ...
fn progress_of(progress: &Value) -> String {
    let step = str_of(progress, "step");
    let downloaded = progress.get("downloaded").and_then(Value::as_u64).unwrap_or(0);
    match progress.get("total").and_then(Value::as_u64) {
        Some(total) => format!("{step} {} of {}", human_size(downloaded), human_size(total)),
        None if downloaded > 0 => format!("{step} {}", human_size(downloaded)),
        None => step.to_string(),
    }
}

/// The `instances list` table; with a HOST column when the list is cloudapi's (it names each
/// instance's host).
fn instances_table(list: &Value) -> String {
    let instances = list.as_array().map_or(&[][..], Vec::as_slice);
    let fleet = instances.iter().any(|i| i.get("host_name").is_some());
    let host = |text: &str| if fleet { format!("{text:<16}  ") } else { String::new() };
    let mut out = format!(
        "{:<36}  {:<16}  {}{:<10}  {:>4}  {:>8}  {:<36}  REASON\n",
        "UUID",
        "ALIAS",
        host("HOST"),
        "STATE",
        "CPUS",
        "MEMORY",
        "IMAGE"
    );
    for i in instances {
        out.push_str(&format!(
            "{:<36}  {:<16}  {}{:<10}  {:>4}  {:>6}Mi  {:<36}  {}\n",
            str_of(i, "uuid"),
            str_of(i, "alias"),
            host(str_of(i, "host_name")),
            str_of(i, "state"),
            i.get("vcpus").and_then(Value::as_u64).unwrap_or(0),
            i.get("memory_mib").and_then(Value::as_u64).unwrap_or(0),
            str_of(i, "image"),
            reason_of(i),
        ));
    }
    out
}

/// `instances get`: the fields the answer has, in this order (the agent's and cloudapi's
/// views share most; each lacks some of the other's, which are left out rather than shown
/// as `-`), then the NICs, the history and the placement where there are.
fn instance_details(i: &Value) -> String {
    let mut lines = Vec::new();
    for key in [
        "uuid",
        "alias",
        "host",
        "host_state",
        "state",
        "phase",
        "reason",
        "progress",
        "error",
        "adopted",
        "image",
        "vcpus",
        "memory_mib",
        "disk_mib",
        "firmware",
        "vm_name",
        "pid",
        "created_at",
    ] {
        let value = match (key, i.get(key)) {
            (_, None) => continue,
            ("host", Some(id)) => match i.get("host_name").and_then(Value::as_str) {
                Some(name) => format!("{name} ({})", id.as_str().unwrap_or("-")),
                None => id.as_str().unwrap_or("-").to_string(),
            },
            ("progress", Some(progress)) => progress_of(progress),
            (_, Some(Value::String(s))) => s.clone(),
            (_, Some(Value::Null)) => "-".into(),
            (_, Some(other)) => other.to_string(),
        };
        lines.push(format!("{key:<11} {value}"));
    }
    for (n, nic) in i.get("nics").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let vlan = nic["vlan"].as_u64().map(|v| format!(", vlan {v}")).unwrap_or_default();
        lines.push(format!(
            "{:<11} {} on {}{vlan}",
            format!("nic{n}"),
            str_of(nic, "mac"),
            str_of(nic, "network")
        ));
    }
    if let Some(history) = i.get("history").and_then(Value::as_array) {
        lines.push("history".into());
        for t in history {
            lines.push(format!("  {}  {:<12} {}", str_of(t, "at"), str_of(t, "state"), str_of(t, "reason")));
        }
    }
    if let Some(placement) = i.get("placement").filter(|p| p.is_object()) {
        lines.extend(placement_lines(placement));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// cloudapi's placement decision: the host chosen, then each host with its scores or the
/// filter that refused it.
fn placement_lines(decision: &Value) -> Vec<String> {
    let verdicts = decision.get("hosts").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let chosen = decision.get("chosen").and_then(Value::as_str);
    let chosen_name = verdicts.iter().find(|v| v.get("id").and_then(Value::as_str) == chosen);
    let mut lines = vec![format!(
        "{:<11} {}",
        "placement",
        match (chosen, chosen_name) {
            (Some(_), Some(verdict)) => format!("chose {}", str_of(verdict, "name")),
            (Some(id), None) => format!("chose {id}"),
            (None, _) => "no host passed".to_string(),
        }
    )];
    for verdict in verdicts {
        let outcome = match verdict.get("refused").filter(|r| r.is_object()) {
            Some(refusal) => {
                format!("refused by {}: {}", str_of(refusal, "filter"), str_of(refusal, "reason"))
            }
            None => {
                let scores: Vec<String> = verdict
                    .get("scores")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        let value = s.get("value").and_then(Value::as_f64).unwrap_or(0.0);
                        format!("{} {value:.2} ({})", str_of(s, "weight"), str_of(s, "why"))
                    })
                    .collect();
                let total = verdict.get("total").and_then(Value::as_f64).unwrap_or(0.0);
                format!("{total:.2}: {}", scores.join(", "))
            }
        };
        lines.push(format!("  {:<16}  {outcome}", str_of(verdict, "name")));
    }
    lines
}

pub fn list(conn: &Connection, destroyed: bool) -> CliResult {
    let path = if destroyed { "/api/v1/instances?destroyed=true" } else { "/api/v1/instances" };
    let list = conn.get(path)?;
    conn.print(&list, |l| print!("{}", instances_table(l)));
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> CliResult {
    let instance = conn.send(conn.client().get(conn.instance_url(id)?))?;
    conn.print(&instance, |i| print!("{}", instance_details(i)));
    Ok(())
}

pub fn create(conn: &Connection, args: CreateArgs) -> CliResult {
    let mut body = json!({"image": args.image, "start": args.start});
    let mut set = |key: &str, value: Value| {
        body[key] = value;
    };
    if let Some(alias) = args.alias {
        set("alias", json!(alias));
    }
    if let Some(vcpus) = args.vcpus {
        set("vcpus", json!(vcpus));
    }
    if let Some(memory) = args.memory_mib {
        set("memory_mib", json!(memory));
    }
    if let Some(disk) = args.disk_mib {
        set("disk_mib", json!(disk));
    }
    if !args.nics.is_empty() {
        set("nics", json!(args.nics));
    }
    if let Some(firmware) = args.firmware {
        set("firmware", json!(firmware));
    }
    for (key, value) in args.guest.fields()? {
        set(&key, value);
    }
    if let Some(cdrom) = args.cdrom {
        set("cdrom", json!(cdrom));
    }
    if let Some(boot) = args.boot {
        set("boot", json!(boot));
    }
    let instance = conn
        .send(conn.client().post(format!("{}/api/v1/instances", conn.url)).json(&body))
        .map_err(with_flags)?;
    conn.print(&instance, |i| {
        println!("Created instance {} ({}): {}", str_of(i, "uuid"), str_of(i, "alias"), str_of(i, "state"))
    });
    Ok(())
}

/// The API's names of what `create` and `update` send, and the flags that set them.
const FLAGS: [(&str, &str); 11] = [
    ("vcpus", "--vcpus"),
    ("memory_mib", "--memory"),
    ("disk_mib", "--disk"),
    ("nics", "--nic"),
    ("firmware", "--firmware"),
    ("hostname", "--hostname"),
    ("ssh_keys", "--ssh-key"),
    ("user_data", "--user-data"),
    ("network_config", "--network-config"),
    ("cdrom", "--cdrom"),
    ("boot", "--boot"),
];

/// A refusal of `create` or `update` as the CLI user sees it: naming the flags they gave
/// rather than the API fields the CLI filled in (`--disk`, not `disk_mib`).
fn with_flags(mut failure: Failure) -> Failure {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    for (field, flag) in FLAGS {
        let mut out = String::with_capacity(failure.message.len());
        let mut rest = failure.message.as_str();
        while let Some(at) = rest.find(field) {
            let before = rest[..at].chars().next_back();
            let after = rest[at + field.len()..].chars().next();
            out.push_str(&rest[..at]);
            if before.is_some_and(is_word) || after.is_some_and(is_word) {
                out.push_str(field);
            } else {
                out.push_str(flag);
            }
            rest = &rest[at + field.len()..];
        }
        out.push_str(rest);
        failure.message = out;
    }
    failure
}

/// Changes what the guest is told (from its next start): the given fields replace, `unset`
/// metadata keys go, `clear_user_data` removes the user-data.
pub fn update(
    conn: &Connection,
    id: &str,
    guest: &GuestArgs,
    unset: &[String],
    clear_user_data: bool,
) -> CliResult {
    let mut body = guest.fields()?;
    if clear_user_data {
        body.insert("user_data".into(), Value::Null);
    }
    if !unset.is_empty() {
        let metadata = body.entry("metadata").or_insert_with(|| json!({}));
        for key in unset {
            metadata[key.as_str()] = Value::Null;
        }
    }
    let url = format!("{}/guest", conn.instance_url(id)?);
    let guest = conn.send(conn.client().patch(url).json(&body)).map_err(with_flags)?;
    conn.print(&guest, |g| {
        println!("Updated the guest configuration of {id} (the guest sees it from its next start)");
        println!("hostname    {}", g.get("hostname").and_then(Value::as_str).unwrap_or("(the alias)"));
        println!("ssh keys    {}", g.get("ssh_keys").and_then(Value::as_array).map_or(0, Vec::len));
        println!("user-data   {} bytes", g.get("user_data").and_then(Value::as_str).map_or(0, str::len));
        for (key, value) in g.get("metadata").and_then(Value::as_object).into_iter().flatten() {
            println!("metadata    {key}={}", value.as_str().unwrap_or_default());
        }
    });
    Ok(())
}

/// Publishes a stopped instance's disk as a new image on a source (waits until it is active).
pub fn publish(conn: &Connection, id: &str, image: Value) -> CliResult {
    let url = format!("{}/publish", conn.instance_url(id)?);
    let manifest = conn.send(conn.client().post(url).json(&image))?;
    conn.print(&manifest, |m| {
        println!(
            "Published {id} as image {} ({} {})",
            str_of(m, "uuid"),
            str_of(m, "name"),
            str_of(m, "version")
        )
    });
    Ok(())
}

/// Lists, takes, rolls back to or deletes disk snapshots (the instance must be stopped to change them).
pub fn snapshots(conn: &Connection, id: &str, change: Option<(&str, &str)>) -> CliResult {
    let base = format!("{}/snapshots", conn.instance_url(id)?);
    let client = conn.client();
    let list = match change {
        None => conn.send(client.get(&base))?,
        Some(("create", name)) => conn.send(client.post(&base).json(&json!({"name": name})))?,
        Some(("rollback", name)) => conn.send(client.post(format!("{base}/{name}?action=rollback")))?,
        Some((_, name)) => {
            conn.send(client.delete(format!("{base}/{name}")))?;
            conn.send(conn.client().get(&base))?
        }
    };
    conn.print(&list, |l| {
        match change {
            Some(("create", name)) => println!("Snapshot {name} of {id} taken"),
            Some(("rollback", name)) => println!("{id} is back at snapshot {name}"),
            Some((_, name)) => println!("Snapshot {name} of {id} deleted"),
            None => {}
        }
        for name in l.as_array().into_iter().flatten().filter_map(Value::as_str) {
            println!("{name}");
        }
    });
    Ok(())
}

/// What `instances start|stop|reboot` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Reboot,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Reboot => "reboot",
        }
    }
}

/// The guest's grace period after the power button, from the agent's ping.
fn stop_timeout_secs(conn: &Connection) -> Result<u64, Failure> {
    Ok(conn.get("/api/v1/ping")?["stop_timeout_secs"].as_u64().unwrap_or(0))
}

/// Starts, stops or reboots. A stop or reboot waits (unless `wait` is false) and says, while
/// it waits, for how long the guest may take and that `--force` would not wait.
pub fn action(conn: &Connection, id: &str, action: Action, force: bool, wait: bool) -> CliResult {
    let uuid = conn.instance_uuid(id)?;
    let url =
        format!("{}/api/v1/instances/{uuid}?action={}&force={force}&wait={wait}", conn.url, action.name());
    let _waiting = if action != Action::Start && wait && !force && !conn.json {
        let timeout = stop_timeout_secs(conn)?;
        Some(Waiting::start(format!(
            "Waiting up to {timeout} s for {id} to power off (the guest was sent the power button; \
             --force cuts the power now)"
        )))
    } else {
        None
    };
    let _pending = pending(format!(
        "the {} goes on on the agent; `agent instances get {id}` shows how it ends",
        action.name()
    ));
    let instance = conn.send(conn.client().post(url))?;
    drop(_waiting);
    conn.print(&instance, |i| {
        let done = match (action, wait) {
            (Action::Start, _) => "Started",
            (Action::Stop, true) => "Stopped",
            (Action::Reboot, true) => "Rebooted",
            (Action::Stop, false) => "Stopping",
            (Action::Reboot, false) => "Rebooting",
        };
        println!("{done} instance {} ({}): {}", str_of(i, "uuid"), str_of(i, "alias"), str_of(i, "reason"));
        if !wait {
            println!("`agent instances get {id}` shows how it ends");
        }
    });
    Ok(())
}

/// Destroys an instance. A running one is powered off first, or with `graceful` sent the power
/// button and given the stop timeout.
pub fn delete(conn: &Connection, id: &str, graceful: bool) -> CliResult {
    let uuid = conn.instance_uuid(id)?;
    let instance = conn.get(&format!("/api/v1/instances/{uuid}"))?;
    let _waiting = (graceful && str_of(&instance, "state") == "running" && !conn.json)
        .then(|| {
            stop_timeout_secs(conn).map(|timeout| {
                Waiting::start(format!(
                    "Waiting up to {timeout} s for {id} to power off before it is destroyed \
                     (without --graceful the power is cut at once)"
                ))
            })
        })
        .transpose()?;
    let _pending =
        pending(format!("the delete goes on on the agent; `agent instances list` shows when {id} is gone"));
    conn.send(conn.client().delete(format!("{}/api/v1/instances/{uuid}?graceful={graceful}", conn.url)))?;
    drop(_waiting);
    if conn.json {
        println!("{}", json!({"uuid": uuid, "state": "destroyed"}));
    } else {
        println!("Destroyed instance {uuid}");
    }
    Ok(())
}

/// Prints the console (what the agent kept); `follow` streams new output until interrupted;
/// `attach` also sends each line typed on stdin to the guest (Ctrl-D detaches).
pub fn console(conn: &Connection, id: &str, follow: bool, attach: bool) -> CliResult {
    let url = format!("{}/console", conn.instance_url(id)?);
    let follow = follow || attach;
    let response = conn.authed(conn.client().get(format!("{url}?follow={follow}"))).send().map_err(|e| {
        Failure::new(exit::UNREACHABLE, format!("cannot reach the agent at {}: {e}", conn.url))
    })?;
    if !response.status().is_success() {
        return super::answer(response).map(drop);
    }
    if attach {
        let sender = conn.clone();
        let input_url = url.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(mut line) = line else { break };
                // A serial terminal's Enter is a carriage return.
                line.push('\r');
                let request = sender.client().post(&input_url).body(line);
                if let Err(failure) = sender.send(request) {
                    eprintln!("agent: {}", failure.message);
                }
            }
            std::process::exit(0);
        });
    }
    let mut response = response;
    let mut stdout = std::io::stdout();
    let mut buffer = [0u8; 8192];
    loop {
        match response.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let _ = stdout.write_all(&buffer[..n]);
                let _ = stdout.flush();
            }
            Err(e) => return Err(Failure::new(exit::ERROR, format!("console stream broke: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instance as cloudapi shows it: the agent's common fields, where it is, no NICs,
    /// history, pid or reason.
    fn from_cloudapi() -> Value {
        json!({
            "uuid": "7e57a1b2-0000-4000-8000-000000000001", "alias": "web-1",
            "host": "3f0c7c1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f", "host_name": "h1", "host_state": "running",
            "state": "provisioning", "phase": "provisioning", "image": null,
            "vcpus": 2, "memory_mib": 1024, "disk_mib": 2048,
            "progress": {"step": "importing", "downloaded": 1048576, "total": 4194304},
            "error": null, "adopted": false, "created_at": "2025-01-01T12:00:00.000Z",
            "placement": {"chosen": "3f0c7c1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f", "hosts": [
                {"id": "3f0c7c1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f", "name": "h1", "refused": null,
                 "scores": [{"weight": "spread", "value": 0.75, "why": "25% used after"}], "total": 0.75},
                {"id": "5a0c7c1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f", "name": "h2",
                 "refused": {"filter": "memory", "reason": "needs 1024 MiB; 512 MiB free"}, "scores": [], "total": 0.0}
            ]}
        })
    }

    fn from_agent() -> Value {
        json!({
            "uuid": "7e57a1b2-0000-4000-8000-000000000002", "alias": "db", "image": null,
            "vcpus": 1, "memory_mib": 512, "disk_mib": 1024, "firmware": "bios", "vm_name": "vm-db",
            "state": "running", "reason": "started on request", "pid": 4242,
            "created_at": "2025-01-01T12:00:00.000Z",
            "nics": [{"mac": "52:54:00:00:00:01", "network": "user"}],
            "history": [{"at": "2025-01-01T12:00:01.000Z", "state": "running", "reason": "started on request"}]
        })
    }

    #[test]
    fn the_list_has_a_host_column_only_for_cloudapis_instances() {
        let fleet = instances_table(&json!([from_cloudapi()]));
        let (header, row) = (fleet.lines().next().unwrap(), fleet.lines().nth(1).unwrap());
        assert!(header.contains("  HOST  ") && header.find("HOST") < header.find("STATE"), "{fleet}");
        assert!(row.contains("  h1  "), "{fleet}");
        // No reason from cloudapi: how far provisioning is instead.
        assert!(row.trim_end().ends_with("importing 1.0 MiB of 4.0 MiB"), "{fleet}");

        let host = instances_table(&json!([from_agent()]));
        assert!(!host.contains("HOST"), "{host}");
        assert!(host.lines().nth(1).unwrap().trim_end().ends_with("started on request"), "{host}");
        // An empty list is the header alone; something that is no list, no panic.
        assert_eq!(instances_table(&json!([])).lines().count(), 1);
        assert_eq!(instances_table(&json!("nope")).lines().count(), 1);
    }

    #[test]
    fn cloudapis_reasons_come_from_what_it_knows() {
        let mut i = from_cloudapi();
        i["phase"] = json!("failed");
        i["error"] = json!("ImageNotFound: no source has it");
        assert_eq!(reason_of(&i), "ImageNotFound: no source has it");
        i["error"] = Value::Null;
        i["phase"] = json!("created");
        i["host_state"] = json!("unknown");
        assert!(reason_of(&i).contains("no heartbeat"), "{}", reason_of(&i));
        i["host_state"] = json!("running");
        assert_eq!(reason_of(&i), "-");
        assert_eq!(progress_of(&json!({"step": "creating"})), "creating");
    }

    #[test]
    fn details_show_the_fields_each_api_has_and_skip_the_others() {
        let fleet = instance_details(&from_cloudapi());
        for expected in [
            "host        h1 (3f0c7c1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f)",
            "phase       provisioning",
            "progress    importing 1.0 MiB of 4.0 MiB",
            "adopted     false",
            "placement   chose h1",
            "  h1                0.75: spread 0.75 (25% used after)",
            "  h2                refused by memory: needs 1024 MiB; 512 MiB free",
        ] {
            assert!(fleet.contains(expected), "{expected:?} in:\n{fleet}");
        }
        for absent in ["pid", "vm_name", "history", "nic0", "reason"] {
            assert!(!fleet.contains(absent), "{absent} in:\n{fleet}");
        }

        let host = instance_details(&from_agent());
        for expected in
            ["pid         4242", "nic0        52:54:00:00:00:01 on user", "history", "reason      started"]
        {
            assert!(host.contains(expected), "{expected:?} in:\n{host}");
        }
        assert!(!host.contains("host ") && !host.contains("placement"), "{host}");
    }

    #[test]
    fn refusals_name_the_flags_not_the_api_fields() {
        let failure = |m: &str| with_flags(Failure::new(exit::ERROR, m)).message;
        assert_eq!(
            failure("InvalidParameter: disk_mib must be at least the image's 64 MiB, not 1"),
            "InvalidParameter: --disk must be at least the image's 64 MiB, not 1"
        );
        assert_eq!(
            failure("an instance without an image needs disk_mib: the size of its blank disk"),
            "an instance without an image needs --disk: the size of its blank disk"
        );
        assert_eq!(
            failure("memory_mib must be between 32 and 1048576, not 1"),
            "--memory must be between 32 and 1048576, not 1"
        );
        // Only whole names: a word that contains one is left alone.
        assert_eq!(failure("reboots and bootstrap and vcpus_max"), "reboots and bootstrap and vcpus_max");
        assert_eq!(
            failure("nics: at most 8; boot must be cd or disk"),
            "--nic: at most 8; --boot must be cd or disk"
        );
    }
}
