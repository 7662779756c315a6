//! `agent isos ...`: clients of `/api/v1/isos` (installer ISOs) and of an instance's CD.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::progress::{pending, Transfer};
use super::{exit, human_size, str_of, CliResult, Connection, Failure};

fn print_isos(list: &Value) {
    println!("{:<40}  {:>10}  {:<16}  ATTACHED TO", "NAME", "SIZE", "SHA256");
    for iso in list.as_array().into_iter().flatten() {
        let attached: Vec<&str> =
            iso["attached_to"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!(
            "{:<40}  {:>10}  {:<16}  {}",
            str_of(iso, "name"),
            human_size(iso["size"].as_u64().unwrap_or(0)),
            &str_of(iso, "sha256")[..16.min(str_of(iso, "sha256").len())],
            if attached.is_empty() { "-".to_string() } else { attached.join(", ") }
        );
    }
}

pub fn list(conn: &Connection) -> CliResult {
    let list = conn.get("/api/v1/isos")?;
    conn.print(&list, print_isos);
    Ok(())
}

/// Fetches `url` on the agent's host, showing progress until it is done (or returns at once
/// with `wait` false).
pub fn fetch(
    conn: &Connection,
    url: &str,
    name: Option<&str>,
    sha256: Option<&str>,
    wait: bool,
) -> CliResult {
    let mut body = json!({"url": url});
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    if let Some(sha256) = sha256 {
        body["sha256"] = json!(sha256);
    }
    let started = conn.send(conn.client().post(format!("{}/api/v1/isos", conn.url)).json(&body))?;
    let name = str_of(&started, "name").to_string();
    if !wait {
        conn.print(&started, |s| println!("Fetching {} from {}", str_of(s, "name"), str_of(s, "url")));
        return Ok(());
    }
    let _pending =
        pending(format!("the fetch goes on on the agent; `agent isos list` shows when {name} is there"));
    let mut bar = (!conn.json).then(|| Transfer::new(&name));
    let status = loop {
        let fetches = conn.get("/api/v1/isos/fetches")?;
        let status = fetches
            .as_array()
            .and_then(|all| all.iter().find(|f| str_of(f, "name") == name))
            .cloned()
            .ok_or_else(|| Failure::new(exit::ERROR, format!("the fetch of {name} disappeared")))?;
        if let Some(bar) = &mut bar {
            let (bytes, total) = (status["bytes"].as_u64().unwrap_or(0), status["total"].as_u64());
            let phase = if bytes == 0 && total.is_none() { "connecting" } else { "downloading" };
            bar.update(phase, bytes, total);
        }
        if str_of(&status, "state") != "running" {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(bar) = bar {
        bar.finish();
    }
    if str_of(&status, "state") == "failed" {
        let message = str_of(&status, "error");
        let code = if message.contains("checksum") { exit::VERIFICATION } else { exit::SOURCE };
        return Err(Failure::new(code, format!("fetching {name}: {message}")));
    }
    let iso = conn.get(&format!("/api/v1/isos/{name}"))?;
    conn.print(&iso, |i| {
        println!(
            "Fetched {} ({}, sha256 {})",
            str_of(i, "name"),
            human_size(i["size"].as_u64().unwrap_or(0)),
            str_of(i, "sha256")
        )
    });
    Ok(())
}

/// Uploads a local file (streamed, not read into memory).
pub fn upload(conn: &Connection, file: &Path, name: Option<&str>, sha256: Option<&str>) -> CliResult {
    let name = match name {
        Some(name) => name.to_string(),
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Failure::new(exit::USAGE, format!("{} has no file name", file.display())))?,
    };
    let body = std::fs::File::open(file)
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", file.display())))?;
    let mut url = format!("{}/api/v1/isos/{name}", conn.url);
    if let Some(sha256) = sha256 {
        url.push_str(&format!("?sha256={sha256}"));
    }
    let iso = conn.send(conn.client().put(url).body(body))?;
    conn.print(&iso, |i| {
        println!("Uploaded {} ({})", str_of(i, "name"), human_size(i["size"].as_u64().unwrap_or(0)))
    });
    Ok(())
}

pub fn rename(conn: &Connection, from: &str, to: &str) -> CliResult {
    let url = format!("{}/api/v1/isos/{from}?action=rename&to={to}", conn.url);
    let iso = conn.send(conn.client().post(url))?;
    conn.print(&iso, |i| println!("Renamed {from} to {}", str_of(i, "name")));
    Ok(())
}

pub fn delete(conn: &Connection, name: &str) -> CliResult {
    conn.send(conn.client().delete(format!("{}/api/v1/isos/{name}", conn.url)))?;
    if conn.json {
        println!("{}", json!({"name": name, "deleted": true}));
    } else {
        println!("Deleted {name}");
    }
    Ok(())
}

/// Attaches an ISO as the instance's CD (`None`: ejects it), from its next start.
pub fn set_cdrom(conn: &Connection, id: &str, iso: Option<&str>, boot: Option<&str>) -> CliResult {
    let url = format!("{}/cdrom", conn.instance_url(id)?);
    let mut body = json!({"iso": iso});
    if let Some(boot) = boot {
        body["boot"] = json!(boot);
    }
    let answer = conn.send(conn.client().put(url).json(&body))?;
    conn.print(&answer, |a| match a["cdrom"].as_str() {
        Some(iso) => println!(
            "{id}: CD {iso}{} (from its next start)",
            if a["boot_from_cdrom"] == json!(true) { ", booting from it" } else { "" }
        ),
        None => println!("{id}: no CD (from its next start)"),
    });
    Ok(())
}
