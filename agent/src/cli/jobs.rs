//! `agent jobs ...`: clients of `/api/v1/jobs`, the import jobs; `follow` is also what
//! `images import` waits with.

use std::time::Duration;

use imgapi_client::ErrorBody;
use serde_json::Value;
use uuid::Uuid;

use super::progress::{pending, Transfer};
use super::{failure, human_size, images, str_of, CliResult, Connection, Failure};

/// How far a job is, for people: `12.0 MiB of 40.0 MiB`, or what is known.
fn progress_of(job: &Value) -> String {
    let downloaded = human_size(job["downloaded"].as_u64().unwrap_or(0));
    match job["total"].as_u64() {
        Some(total) => format!("{downloaded} of {}", human_size(total)),
        None => downloaded,
    }
}

fn print_jobs(list: &Value) {
    println!("{:<36}  {:<36}  {:<9}  {:<12}  {:<22}  STARTED", "ID", "IMAGE", "STATE", "PHASE", "PROGRESS");
    for job in list.as_array().into_iter().flatten() {
        println!(
            "{:<36}  {:<36}  {:<9}  {:<12}  {:<22}  {}",
            str_of(job, "id"),
            str_of(job, "image"),
            str_of(job, "state"),
            str_of(job, "phase"),
            progress_of(job),
            str_of(job, "started_at"),
        );
    }
}

fn print_job(job: &Value) {
    for key in ["id", "image", "state", "phase"] {
        println!("{key:<11} {}", str_of(job, key));
    }
    println!("{:<11} {}", "progress", progress_of(job));
    println!("{:<11} {}", "written", human_size(job["written"].as_u64().unwrap_or(0)));
    println!("{:<11} {}", "started_at", str_of(job, "started_at"));
    println!("{:<11} {}", "finished_at", str_of(job, "finished_at"));
    if let Some(error) = job.get("error").filter(|e| !e.is_null()) {
        println!("{:<11} {}: {}", "error", str_of(error, "code"), str_of(error, "message"));
    }
}

pub fn list(conn: &Connection) -> CliResult {
    let jobs = conn.get("/api/v1/jobs")?;
    conn.print(&jobs, print_jobs);
    Ok(())
}

pub fn get(conn: &Connection, id: &Uuid) -> CliResult {
    let job = conn.get(&format!("/api/v1/jobs/{id}"))?;
    conn.print(&job, print_job);
    Ok(())
}

/// Follows a job to its end; then shows the image it imported.
pub fn wait(conn: &Connection, id: &Uuid) -> CliResult {
    let job = follow(conn, &id.to_string())?;
    if conn.json {
        conn.print(&job, |_| {});
    } else {
        images::print_imported(&conn.get(&format!("/api/v1/images/{}", str_of(&job, "image")))?);
    }
    Ok(())
}

/// Polls job `id` until it ends, with a progress bar for people; its last state, or the
/// failure it ended with (its error code gives the exit code, as for any API error).
pub(super) fn follow(conn: &Connection, id: &str) -> Result<Value, Failure> {
    let _pending =
        pending(format!("the import goes on on the agent; `agent jobs wait {id}` follows it again"));
    let mut bar = (!conn.json).then(|| Transfer::new("import"));
    let job = loop {
        let job = conn.get(&format!("/api/v1/jobs/{id}"))?;
        if let Some(bar) = &mut bar {
            bar.update(str_of(&job, "phase"), job["downloaded"].as_u64().unwrap_or(0), job["total"].as_u64());
        }
        if str_of(&job, "state") != "running" {
            break job;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(bar) = bar {
        bar.finish();
    }
    if str_of(&job, "state") == "failed" {
        let error = serde_json::from_value::<ErrorBody>(job["error"].clone()).unwrap_or_else(|_| ErrorBody {
            code: "Error".into(),
            message: "the job failed (it gave no reason)".into(),
            errors: None,
        });
        return Err(failure(None, &error));
    }
    Ok(job)
}
