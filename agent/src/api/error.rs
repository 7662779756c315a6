//! The one place the agent's errors become HTTP answers, in IMGAPI's `{"code","message"}` shape:
//! the status of every [`ErrorCode`] ([`status`]), and how a domain error becomes an answer.
//!
//! An internal failure (a host command, the disk, the network set-up: see
//! [`ErrorCode::internal_message`]) is answered with a curated message and the request id; its
//! whole chain, argv and stderr included, goes to the log with that id, never to the client.

use actix_web::http::StatusCode;

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
        | C::InstanceExists
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
pub type ApiError = service_kit::api_error::ApiError<ErrorCode>;

/// Domain errors that name their code become answers.
macro_rules! coded {
    ($($error:ty),*) => {
        $(impl From<$error> for ApiError {
            fn from(e: $error) -> Self {
                ApiError::from_error(e.code(), &e)
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
    use actix_web::{HttpResponse, ResponseError};

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
