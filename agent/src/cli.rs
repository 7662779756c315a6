//! The command-line client: each subcommand is one or two calls to the agent's REST API (it
//! never touches the host itself), or to cloudapi's, which has the same shapes for the whole
//! fleet (`hosts` only there). People get tables and a progress bar; scripts get `--json`
//! and exit codes that say what failed.

pub mod args;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod isos;
pub mod jobs;
pub mod progress;
pub mod switches;

use std::process::ExitCode;

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
    /// Ctrl-C: the request goes on on the agent.
    pub const INTERRUPTED: u8 = 130;
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
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// The API's error code, when the failure is its answer: what callers that treat one
    /// answer specially (`hosts` and a lone agent's `ResourceNotFound`) look at.
    pub api_code: Option<String>,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into(), api_code: None }
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
        answer(response).map_err(|mut failure| {
            if failure.code == exit::UNAUTHORIZED && self.token.is_none() && self.user.is_none() {
                failure.message.push_str(" (give --token or --user USER:PASSWORD, or set AGENT_TOKEN)");
            }
            failure
        })
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

/// A failure reported by the API (the agent's or cloudapi's): its code and message, and the
/// exit code they mean.
fn failure(status: Option<StatusCode>, error: &ErrorBody) -> Failure {
    Failure {
        api_code: Some(error.code.clone()),
        ..Failure::new(exit_code(status, &error.code), format!("{}: {}", error.code, error.message))
    }
}

/// The exit code of an error answer (`status`) or of a failed job (no status).
fn exit_code(status: Option<StatusCode>, code: &str) -> u8 {
    use ErrorCode as C;
    match (status, ErrorCode::parse(code)) {
        (_, Some(C::VerificationFailed | C::ChecksumMismatch)) => exit::VERIFICATION,
        (_, Some(C::UnauthorizedError | C::SourceUnauthorized)) => exit::UNAUTHORIZED,
        (_, Some(C::SourceError | C::InvalidManifest | C::OriginFailed | C::NoSources)) => exit::SOURCE,
        (_, Some(C::RebootFailed)) => exit::ERROR,
        (_, Some(C::ImageNotFound)) | (Some(StatusCode::NOT_FOUND), _) => exit::NOT_FOUND,
        (Some(StatusCode::CONFLICT), _) => exit::CONFLICT,
        (Some(StatusCode::UNAUTHORIZED), _) => exit::UNAUTHORIZED,
        _ => exit::ERROR,
    }
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
