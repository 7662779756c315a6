//! `agent images ...` and `agent sources list`: clients of `/api/v1/images` and
//! `/api/v1/sources`.

use serde_json::Value;
use uuid::Uuid;

use super::{human_size, jobs, str_of, CliResult, Connection};

fn print_images(images: &Value) {
    println!(
        "{:<36}  {:<24}  {:<14}  {:<8}  {:<12}  {:>10}",
        "UUID", "NAME", "VERSION", "OS", "TYPE", "SIZE"
    );
    for image in images.as_array().into_iter().flatten() {
        println!(
            "{:<36}  {:<24}  {:<14}  {:<8}  {:<12}  {:>10}",
            str_of(image, "uuid"),
            str_of(image, "name"),
            str_of(image, "version"),
            str_of(image, "os"),
            str_of(image, "type"),
            human_size(image.get("content_size").and_then(Value::as_u64).unwrap_or(0)),
        );
    }
}

fn print_image(image: &Value) {
    for key in [
        "uuid",
        "name",
        "version",
        "os",
        "type",
        "origin",
        "content",
        "location",
        "sha1",
        "compression",
        "source",
        "imported_at",
    ] {
        let value = match image.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(other) => other.to_string(),
        };
        println!("{key:<12} {value}");
    }
}

pub fn list(conn: &Connection) -> CliResult {
    let images = conn.get("/api/v1/images")?;
    conn.print(&images, print_images);
    Ok(())
}

pub fn get(conn: &Connection, uuid: &Uuid) -> CliResult {
    let image = conn.get(&format!("/api/v1/images/{uuid}"))?;
    conn.print(&image, print_image);
    Ok(())
}

pub fn delete(conn: &Connection, uuid: &Uuid) -> CliResult {
    conn.send(conn.client().delete(format!("{}/api/v1/images/{uuid}", conn.url)))?;
    if !conn.json {
        println!("Deleted image {uuid}");
    }
    Ok(())
}

pub fn sources(conn: &Connection) -> CliResult {
    let sources = conn.get("/api/v1/sources")?;
    conn.print(&sources, |list| {
        for source in list.as_array().into_iter().flatten() {
            let creds = if source.get("credentials").and_then(Value::as_bool) == Some(true) {
                " (with credentials)"
            } else {
                ""
            };
            println!("{}{creds}", str_of(source, "url"));
        }
    });
    Ok(())
}

/// Starts an import job and follows it with a progress bar (or waits quietly with `--json`).
pub fn import(conn: &Connection, uuid: &Uuid, wait: bool) -> CliResult {
    let body = serde_json::json!({"uuid": uuid, "wait": false});
    let started = conn.send(conn.client().post(format!("{}/api/v1/images", conn.url)).json(&body))?;
    // Already on the host: the answer is the image itself.
    if started.get("location").is_some() {
        conn.print(&started, |image| println!("Image {} is already on this host", str_of(image, "uuid")));
        return Ok(());
    }
    let job_id = str_of(&started, "id").to_string();
    if !wait {
        conn.print(&started, |job| {
            println!(
                "Import job {} started (`agent jobs wait {}` follows it)",
                str_of(job, "id"),
                str_of(job, "id")
            )
        });
        return Ok(());
    }
    jobs::follow(conn, &job_id)?;
    let image = conn.get(&format!("/api/v1/images/{uuid}"))?;
    conn.print(&image, print_imported);
    Ok(())
}

/// The line that says an import is done.
pub(super) fn print_imported(image: &Value) {
    println!("Imported {} {} ({})", str_of(image, "name"), str_of(image, "version"), str_of(image, "uuid"));
}
