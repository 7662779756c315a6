//! `agent switches ...`: clients of `/api/v1/switches`.

use serde_json::{json, Value};

use super::{str_of, CliResult, Connection};

fn print_switches(list: &Value) {
    println!("{:<20}  {:<15}  {:<15}  {:<6}  {:<7}  NICS", "NAME", "BRIDGE", "UPLINK", "FROM", "PRESENT");
    for switch in list.as_array().into_iter().flatten() {
        let present = match switch["bridge_present"].as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let nics: Vec<String> = switch["nics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|nic| match nic["vlan"].as_u64() {
                Some(vlan) => format!("{} (vlan {vlan})", str_of(nic, "mac")),
                None => str_of(nic, "mac").to_string(),
            })
            .collect();
        println!(
            "{:<20}  {:<15}  {:<15}  {:<6}  {:<7}  {}",
            str_of(switch, "name"),
            str_of(switch, "bridge"),
            switch["uplink"].as_str().unwrap_or("-"),
            str_of(switch, "origin"),
            present,
            if nics.is_empty() { "-".to_string() } else { nics.join(", ") }
        );
    }
}

pub fn list(conn: &Connection) -> CliResult {
    let list = conn.get("/api/v1/switches")?;
    conn.print(&list, print_switches);
    Ok(())
}

pub fn create(conn: &Connection, name: &str, bridge: Option<&str>, uplink: Option<&str>) -> CliResult {
    let body = json!({"name": name, "bridge": bridge, "uplink": uplink});
    let created = conn.send(conn.client().post(format!("{}/api/v1/switches", conn.url)).json(&body))?;
    conn.print(&created, |s| {
        println!("Created switch {} (bridge {})", str_of(s, "name"), str_of(s, "bridge"))
    });
    Ok(())
}

pub fn delete(conn: &Connection, name: &str) -> CliResult {
    conn.send(conn.client().delete(format!("{}/api/v1/switches/{name}", conn.url)))?;
    if !conn.json {
        println!("Deleted switch {name}");
    }
    Ok(())
}
