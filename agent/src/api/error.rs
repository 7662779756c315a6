//! The one place the agent's domain errors become HTTP answers, in IMGAPI's
//! `{"code","message"}` shape.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use service_kit::ErrorChain;

use crate::import::ImportError;
use crate::instance::manager::InstanceError;
use crate::iso::IsoError;
use crate::network::SwitchError;
use crate::publish::PublishError;
use crate::storage::StorageError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedError",
            "this call needs a token or Basic credentials",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"agent\""));
        }
        response.json(json!({"code": self.code, "message": self.message}))
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        let message = ErrorChain(&e).to_string();
        let (status, code) = match &e {
            StorageError::NotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            StorageError::AlreadyExists(_) => (StatusCode::CONFLICT, "ImageAlreadyExists"),
            StorageError::InUse { .. } => (StatusCode::CONFLICT, "ImageInUse"),
            StorageError::MissingOrigin(_) => (StatusCode::CONFLICT, "MissingOrigin"),
            StorageError::Unsupported(_) | StorageError::InvalidContent(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "UnsupportedImage")
            }
            StorageError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage"),
            StorageError::Command(_) | StorageError::Parse { .. } | StorageError::Io { .. } => {
                tracing::error!(error = %message, "storage failure");
                (StatusCode::INTERNAL_SERVER_ERROR, "StorageError")
            }
        };
        ApiError::new(status, code, message)
    }
}

impl From<&ImportError> for ApiError {
    fn from(e: &ImportError) -> Self {
        let status = match e.code() {
            "ImageNotFound" => StatusCode::NOT_FOUND,
            "NoSources" => StatusCode::CONFLICT,
            "InsufficientStorage" => StatusCode::INSUFFICIENT_STORAGE,
            // The source sent something wrong, or could not be reached: a gateway problem.
            "SourceError" | "InvalidManifest" | "VerificationFailed" | "OriginFailed" => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), ErrorChain(e).to_string())
    }
}

impl From<&IsoError> for ApiError {
    fn from(e: &IsoError) -> Self {
        let message = ErrorChain(e).to_string();
        let (status, code) = match e {
            IsoError::NotFound(_) => (StatusCode::NOT_FOUND, "IsoNotFound"),
            IsoError::Exists(_) => (StatusCode::CONFLICT, "IsoExists"),
            IsoError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "InvalidParameter"),
            IsoError::Checksum { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "ChecksumMismatch"),
            IsoError::Download(_) => (StatusCode::BAD_GATEWAY, "DownloadFailed"),
            IsoError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage")
            }
            IsoError::Io { .. } => {
                tracing::error!(error = %message, "ISO storage failure");
                (StatusCode::INTERNAL_SERVER_ERROR, "StorageError")
            }
        };
        ApiError::new(status, code, message)
    }
}

impl From<&SwitchError> for ApiError {
    fn from(e: &SwitchError) -> Self {
        let message = ErrorChain(e).to_string();
        let (status, code) = match e {
            SwitchError::NotFound(_) => (StatusCode::NOT_FOUND, "SwitchNotFound"),
            SwitchError::Exists(_) => (StatusCode::CONFLICT, "SwitchExists"),
            SwitchError::FromConfig(_) => (StatusCode::CONFLICT, "SwitchFromConfig"),
            SwitchError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "InvalidParameter"),
            SwitchError::Host { .. } | SwitchError::Save { .. } | SwitchError::Load { .. } => {
                tracing::error!(error = %message, "switch operation failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "NetworkError")
            }
        };
        ApiError::new(status, code, message)
    }
}

impl From<SwitchError> for ApiError {
    fn from(e: SwitchError) -> Self {
        ApiError::from(&e)
    }
}

impl From<IsoError> for ApiError {
    fn from(e: IsoError) -> Self {
        ApiError::from(&e)
    }
}

impl From<InstanceError> for ApiError {
    fn from(e: InstanceError) -> Self {
        let message = ErrorChain(&e).to_string();
        let (status, code) = match &e {
            InstanceError::NotFound(_) => (StatusCode::NOT_FOUND, "InstanceNotFound"),
            InstanceError::ImageNotFound(_) => (StatusCode::UNPROCESSABLE_ENTITY, "ImageNotFound"),
            InstanceError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "InvalidParameter"),
            InstanceError::Refused(refused) => (StatusCode::CONFLICT, refused.code()),
            InstanceError::ImageInUse { .. } => (StatusCode::CONFLICT, "ImageInUse"),
            InstanceError::IsoInUse { .. } => (StatusCode::CONFLICT, "IsoInUse"),
            InstanceError::SwitchInUse { .. } => (StatusCode::CONFLICT, "SwitchInUse"),
            InstanceError::Switch(switch) => return ApiError::from(switch),
            InstanceError::SnapshotNotFound { .. } => (StatusCode::NOT_FOUND, "SnapshotNotFound"),
            InstanceError::SnapshotExists { .. } => (StatusCode::CONFLICT, "SnapshotExists"),
            InstanceError::Publish(p) => match p {
                PublishError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "InvalidParameter"),
                PublishError::Server(_) | PublishError::Mismatch { .. } => {
                    (StatusCode::BAD_GATEWAY, "PublishFailed")
                }
                PublishError::Disk(_) => {
                    tracing::error!(error = %message, "publishing failed");
                    (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
                }
            },
            InstanceError::Iso(iso) => return ApiError::from(iso),
            InstanceError::Hypervisor(h)
                if matches!(**h, crate::hypervisor::HypervisorError::Unsupported { .. }) =>
            {
                (StatusCode::UNPROCESSABLE_ENTITY, "NotSupported")
            }
            InstanceError::Storage(s) if matches!(**s, StorageError::NoSpace(_)) => {
                (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage")
            }
            InstanceError::Disk(_)
            | InstanceError::Hypervisor(_)
            | InstanceError::Storage(_)
            | InstanceError::Console(_) => {
                tracing::error!(error = %message, "instance operation failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
        };
        ApiError::new(status, code, message)
    }
}
