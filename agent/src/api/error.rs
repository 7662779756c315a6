//! The one place the agent's errors become HTTP answers, in IMGAPI's `{"code","message"}` shape:
//! the status of every [`ErrorCode`] ([`status`]), and how a domain error becomes an answer.
//!
//! An internal failure (a host command, the disk, the network set-up: see
//! [`ErrorCode::internal_message`]) is answered with a curated message and the request id; its
//! whole chain, argv and stderr included, goes to the log with that id, never to the client.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use imgapi_client::ErrorBody;
use service_kit::ErrorChain;

use crate::error_code::ErrorCode;

/// The HTTP status of each error code.
pub fn status(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    use StatusCode as S;
    match code {
        C::InvalidContent => S::BAD_REQUEST,
        C::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
        C::InvalidParameter | C::UnsupportedImage | C::NotSupported | C::ChecksumMismatch => {
            S::UNPROCESSABLE_ENTITY
        }
        C::UnauthorizedError => S::UNAUTHORIZED,
        C::ResourceNotFound
        | C::ImageNotFound
        | C::InstanceNotFound
        | C::SnapshotNotFound
        | C::IsoNotFound
        | C::SwitchNotFound => S::NOT_FOUND,
        C::ImageAlreadyExists
        | C::ImageInUse
        | C::MissingOrigin
        | C::NoSources
        | C::InstanceProvisioning
        | C::InstanceAlreadyProvisioned
        | C::InstanceAlreadyRunning
        | C::InstanceNotRunning
        | C::InstanceRunning
        | C::InstanceDestroyed
        | C::ConsoleNotConnected
        | C::RebootFailed
        | C::SnapshotExists
        | C::IsoExists
        | C::IsoInUse
        | C::SwitchExists
        | C::SwitchFromConfig
        | C::SwitchInUse => S::CONFLICT,
        // The source or the image server sent something wrong, or could not be reached.
        C::SourceError
        | C::SourceUnauthorized
        | C::InvalidManifest
        | C::VerificationFailed
        | C::OriginFailed
        | C::PublishFailed
        | C::DownloadFailed => S::BAD_GATEWAY,
        C::StopTimeout => S::GATEWAY_TIMEOUT,
        C::InsufficientStorage => S::INSUFFICIENT_STORAGE,
        C::StorageError | C::NetworkError | C::InternalError => S::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    /// What the client reads.
    pub message: String,
    /// An internal failure's whole chain, for the log only.
    detail: Option<String>,
}

impl ApiError {
    /// An answer whose message is for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), detail: None }
    }

    /// The answer for a domain error: its message, or, for an internal failure, the curated one
    /// (the error itself goes to the log).
    pub fn from_error(code: ErrorCode, error: &(dyn std::error::Error + 'static)) -> Self {
        let chain = ErrorChain(error).to_string();
        match code.internal_message() {
            Some(message) => ApiError { code, message: message.into(), detail: Some(chain) },
            None => ApiError::new(code, chain),
        }
    }

    /// `InvalidParameter`: a query, parameter or action that is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter, message)
    }

    pub fn status(&self) -> StatusCode {
        status(self.code)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = service_kit::request_id::current();
        let message = match &self.detail {
            Some(detail) => {
                tracing::error!(req_id = %request_id, code = %self.code, error = %detail, "request failed");
                format!("{} (request {request_id}: the agent's log has the details)", self.message)
            }
            None => self.message.clone(),
        };
        let mut response = HttpResponse::build(self.status());
        if self.status() == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"agent\""));
        }
        response.json(ErrorBody { code: self.code.as_str().into(), message, errors: None })
    }
}

/// Lets a handler return a bare error (the fallback route).
impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}

/// A domain error that names its code.
pub trait Coded: std::error::Error + 'static {
    fn code(&self) -> ErrorCode;
}

impl<E: Coded> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::from_error(e.code(), &e)
    }
}

macro_rules! coded {
    ($($error:ty),*) => {
        $(impl Coded for $error {
            fn code(&self) -> ErrorCode {
                <$error>::code(self)
            }
        })*
    };
}

coded!(
    crate::storage::StorageError,
    crate::import::ImportError,
    crate::iso::IsoError,
    crate::network::SwitchError,
    crate::instance::manager::InstanceError,
    crate::publish::PublishError
);

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(response: HttpResponse) -> serde_json::Value {
        let bytes = response.into_body().try_into_bytes().expect("a sized body");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_documented_table_is_this_table() {
        let doc = include_str!("../../../docs/agent/api.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
        for &code in ErrorCode::ALL {
            let row = format!("| `{code}` | {} |", status(code).as_u16());
            assert!(rows.iter().any(|r| r.starts_with(&row)), "docs/agent/api.md lacks {row}");
        }
    }

    #[test]
    fn every_code_answers_its_status_and_the_error_body_shape() {
        let secret = std::io::Error::other("`/usr/sbin/zfs create tank/x` failed: cannot open '/dev/zfs'");
        for &code in ErrorCode::ALL {
            let error = ApiError::from_error(code, &secret);
            let response = error.error_response();
            assert_eq!(response.status(), status(code), "{code}");
            let body = body_of(response);
            let object = body.as_object().unwrap();
            assert_eq!(object.len(), 2, "{code}: {body}");
            assert_eq!(body["code"], code.as_str());
            let message = body["message"].as_str().unwrap();
            assert!(!message.is_empty());
            // Internal failures hide their details; no other code is a 500.
            let internal = code.internal_message().is_some();
            assert_eq!(internal, !message.contains("/dev/zfs"), "{code}: {message}");
            let server_side = matches!(status(code).as_u16(), 500 | 507);
            assert_eq!(internal, server_side, "{code}: internal codes are exactly the 500s and 507s");
        }
    }
}
