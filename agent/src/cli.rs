//! The command-line client: each subcommand is one or two calls to the agent's REST API (it
//! never touches the host itself). People get tables and a progress bar; scripts get `--json`
//! and exit codes that say what failed.

pub mod instances;
pub mod isos;
pub mod switches;

use std::process::ExitCode;
use std::time::Duration;

use imgapi_client::ErrorBody;

use crate::error_code::ErrorCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::Value;

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const CONFLICT: u8 = 4;
    pub const VERIFICATION: u8 = 5;
    pub const SOURCE: u8 = 6;
    pub const UNAUTHORIZED: u8 = 7;
    pub const UNREACHABLE: u8 = 8;
}

/// How to reach the agent.
#[derive(Clone)]
pub struct Connection {
    pub url: String,
    pub token: Option<String>,
    pub user: Option<(String, String)>,
    pub json: bool,
}

/// A failed command: message for people, exit code for scripts.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(exit::USAGE, message)
    }
}

pub type CliResult = Result<(), Failure>;

impl Connection {
    fn client(&self) -> Client {
        Client::builder().timeout(None).build().expect("a TLS backend is compiled in")
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        match (&self.token, &self.user) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Some((user, password))) => request.basic_auth(user, Some(password)),
            (None, None) => request,
        }
    }

    fn send(&self, request: RequestBuilder) -> Result<Value, Failure> {
        let response = self.authed(request).send().map_err(|e| {
            Failure::new(exit::UNREACHABLE, format!("cannot reach the agent at {}: {e}", self.url))
        })?;
        answer(response)
    }

    fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.client().get(format!("{}{path}", self.url)))
    }

    fn print(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            human(value);
        }
    }
}

/// Turns an API answer into its JSON body or a failure with the right exit code.
fn answer(response: Response) -> Result<Value, Failure> {
    let status = response.status();
    let bytes = response.bytes().unwrap_or_default();
    if status.is_success() {
        return Ok(if status == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        });
    }
    let error = ErrorBody::parse(&bytes).unwrap_or_else(|| ErrorBody {
        code: "Error".into(),
        message: format!("{status} (no error body)"),
        errors: None,
    });
    Err(failure(Some(status), &error))
}

/// A failure reported by the agent: its code and message, and the exit code they mean.
fn failure(status: Option<StatusCode>, error: &ErrorBody) -> Failure {
    Failure::new(exit_code(status, &error.code), format!("{}: {}", error.code, error.message))
}

/// The exit code of an error answer (`status`) or of a failed job (no status).
fn exit_code(status: Option<StatusCode>, code: &str) -> u8 {
    use ErrorCode as C;
    match (status, ErrorCode::parse(code)) {
        (_, Some(C::VerificationFailed)) => exit::VERIFICATION,
        (_, Some(C::SourceError | C::InvalidManifest | C::OriginFailed | C::NoSources)) => exit::SOURCE,
        (_, Some(C::ImageNotFound)) | (Some(StatusCode::NOT_FOUND), _) => exit::NOT_FOUND,
        (Some(StatusCode::CONFLICT), _) => exit::CONFLICT,
        (Some(StatusCode::UNAUTHORIZED), _) => exit::UNAUTHORIZED,
        _ => exit::ERROR,
    }
}

/// A byte-count progress bar, for long work the agent does (imports, ISO fetches).
fn progress_bar(message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

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

pub fn images_list(conn: &Connection) -> CliResult {
    let images = conn.get("/api/v1/images")?;
    conn.print(&images, print_images);
    Ok(())
}

pub fn images_get(conn: &Connection, uuid: &str) -> CliResult {
    let image = conn.get(&format!("/api/v1/images/{uuid}"))?;
    conn.print(&image, print_image);
    Ok(())
}

pub fn images_delete(conn: &Connection, uuid: &str) -> CliResult {
    conn.send(conn.client().delete(format!("{}/api/v1/images/{uuid}", conn.url)))?;
    if !conn.json {
        println!("Deleted image {uuid}");
    }
    Ok(())
}

pub fn sources_list(conn: &Connection) -> CliResult {
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
pub fn images_import(conn: &Connection, uuid: &str, wait: bool) -> CliResult {
    let body = serde_json::json!({"uuid": uuid, "wait": false});
    let started = conn.send(conn.client().post(format!("{}/api/v1/images", conn.url)).json(&body))?;
    // Already on the host: the answer is the image itself.
    if started.get("location").is_some() {
        conn.print(&started, |image| println!("Image {} is already on this host", str_of(image, "uuid")));
        return Ok(());
    }
    let job_id = str_of(&started, "id").to_string();
    if !wait {
        conn.print(&started, |job| println!("Import job {} started", str_of(job, "id")));
        return Ok(());
    }
    let bar = (!conn.json).then(|| progress_bar(""));
    let job = loop {
        let job = conn.get(&format!("/api/v1/jobs/{job_id}"))?;
        if let Some(bar) = &bar {
            if let Some(total) = job.get("total").and_then(Value::as_u64) {
                bar.set_length(total);
            }
            bar.set_position(job.get("downloaded").and_then(Value::as_u64).unwrap_or(0));
            bar.set_message(str_of(&job, "phase").to_string());
        }
        if str_of(&job, "state") != "running" {
            break job;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if str_of(&job, "state") == "failed" {
        let error = job
            .get("error")
            .and_then(|e| serde_json::from_value::<ErrorBody>(e.clone()).ok())
            .unwrap_or_else(|| ErrorBody {
                code: "Error".into(),
                message: "(no message)".into(),
                errors: None,
            });
        return Err(failure(None, &error));
    }
    let image = conn.get(&format!("/api/v1/images/{uuid}"))?;
    conn.print(&image, |image| {
        println!(
            "Imported {} {} ({})",
            str_of(image, "name"),
            str_of(image, "version"),
            str_of(image, "uuid")
        );
    });
    Ok(())
}

/// Prints a failure and turns it into the process exit code.
pub fn finish(result: CliResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            eprintln!("agent: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_error_codes() {
        assert_eq!(
            exit_code(Some(StatusCode::NOT_FOUND), ErrorCode::ImageNotFound.as_str()),
            exit::NOT_FOUND
        );
        assert_eq!(
            exit_code(Some(StatusCode::BAD_GATEWAY), ErrorCode::VerificationFailed.as_str()),
            exit::VERIFICATION
        );
        assert_eq!(exit_code(Some(StatusCode::BAD_GATEWAY), ErrorCode::SourceError.as_str()), exit::SOURCE);
        assert_eq!(exit_code(Some(StatusCode::CONFLICT), ErrorCode::ImageInUse.as_str()), exit::CONFLICT);
        assert_eq!(
            exit_code(Some(StatusCode::UNAUTHORIZED), ErrorCode::UnauthorizedError.as_str()),
            exit::UNAUTHORIZED
        );
        assert_eq!(
            exit_code(Some(StatusCode::INTERNAL_SERVER_ERROR), ErrorCode::StorageError.as_str()),
            exit::ERROR
        );
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10 << 30), "10.0 GiB");
    }
}
