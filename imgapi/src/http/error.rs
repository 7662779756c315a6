//! The one place errors become HTTP: IMGAPI's `{"code","message"[,"errors"]}` body with the
//! reference server's statuses (sdc-imgapi `lib/errors.js` and restify's built-ins).
//! Internal failures get a curated message; the full chain goes to the log.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
pub use service_kit::ErrorChain;

use crate::auth::AuthError;
use crate::manifest::validate::FieldError;
use crate::params::ParamError;
use crate::service::ImageError;
use crate::store::StoreError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub errors: Option<Vec<FieldError>>,
    /// `Allow` for 405s.
    pub allow: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), errors: None, allow: None }
    }

    /// `ResourceNotFound` for a path no route serves, worded as restify words it.
    pub fn no_route(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", format!("{path} does not exist"))
    }

    pub fn method_not_allowed(method: &str, allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowedError",
                format!("{method} is not allowed"),
            )
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UnauthorizedError", message)
    }

    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidContent", message)
    }

    pub fn invalid_action(action: &str) -> Self {
        ImageError::invalid_param(format!("\"{action}\" is not a valid action"), "action", "Invalid").into()
    }

    pub fn internal(context: &str, error: &dyn std::error::Error) -> Self {
        let request_id = service_kit::request_id::current();
        tracing::error!(req_id = %request_id, error = %ErrorChain(error), "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("{context} (request {request_id}: the server's log has the details)"),
        )
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
        let body = Body { code: self.code, message: &self.message, errors: self.errors.as_deref() };
        let mut response = HttpResponse::build(self.status);
        if let Some(allow) = self.allow {
            response.insert_header((header::ALLOW, allow));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"IMGAPI\""));
        }
        response.content_type("application/json").body(super::to_json(&body))
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        let (status, code) = match &e {
            ImageError::NotFound(_) | ImageError::NoFile(_) | ImageError::NoIcon(_) => {
                (S::NOT_FOUND, "ResourceNotFound")
            }
            ImageError::InvalidParameter { errors, .. } => {
                return ApiError {
                    errors: Some(errors.clone()),
                    ..Self::new(S::UNPROCESSABLE_ENTITY, "InvalidParameter", message)
                }
            }
            ImageError::ValidationFailed { errors, .. } => {
                return ApiError {
                    errors: Some(errors.clone()),
                    ..Self::new(S::UNPROCESSABLE_ENTITY, "ValidationFailed", message)
                }
            }
            ImageError::UuidExists(_) => (S::CONFLICT, "ImageUuidAlreadyExists"),
            ImageError::AlreadyActivated(_) => (S::UNPROCESSABLE_ENTITY, "ImageAlreadyActivated"),
            ImageError::NoActivationNoFile(_) => (S::UNPROCESSABLE_ENTITY, "NoActivationNoFile"),
            ImageError::FilesImmutable(_) => (S::UNPROCESSABLE_ENTITY, "ImageFilesImmutable"),
            ImageError::HasDependents { .. } => (S::UNPROCESSABLE_ENTITY, "ImageHasDependentImages"),
            ImageError::OriginDoesNotExist(_) => (S::UNPROCESSABLE_ENTITY, "OriginDoesNotExist"),
            ImageError::NotImageOwner { .. } => (S::UNPROCESSABLE_ENTITY, "NotImageOwner"),
            ImageError::OperatorOnly => (S::FORBIDDEN, "OperatorOnly"),
            ImageError::Download(_) => (S::BAD_REQUEST, "Download"),
            ImageError::Upload(_) => (S::BAD_REQUEST, "Upload"),
            ImageError::Unauthorized(_) => (S::UNAUTHORIZED, "UnauthorizedError"),
            ImageError::PreconditionFailed { .. } => (S::PRECONDITION_FAILED, "PreconditionFailed"),
            // The reference's own code for what it cannot do (HTTP 400), so clients see a 4xx.
            ImageError::NotImplemented(_) => (S::BAD_REQUEST, "NotImplemented"),
            ImageError::RemoteSource(_) => (S::SERVICE_UNAVAILABLE, "RemoteSourceError"),
            ImageError::Store(store) => return store_error(store),
        };
        Self::new(status, code, message)
    }
}

fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::NotFound(uuid) => ImageError::NotFound(*uuid).into(),
        StoreError::Exists(uuid) => ImageError::UuidExists(*uuid).into(),
        StoreError::NoSpace(_) => {
            tracing::warn!(req_id = %service_kit::request_id::current(), error = %ErrorChain(e), "data directory is full");
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                "not enough space left on the image server",
            )
        }
        StoreError::Io { .. } => ApiError::internal("storage failure", e),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        store_error(&e)
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ImageError::from(e).into()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        tracing::info!(error = %ErrorChain(&e), "credentials refused");
        ApiError::unauthorized(e.to_string())
    }
}

/// Lets a handler return a bare error (fallback routes).
impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}
