//! The one place cloudapi's errors become HTTP answers (`service_kit::api_error`): the status of
//! every [`ErrorCode`] ([`status`]), and which domain errors become which answers.

use actix_web::http::StatusCode;

use crate::error_code::ErrorCode;

/// The HTTP status of each error code.
pub fn status(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    use StatusCode as S;
    match code {
        C::InvalidContent => S::BAD_REQUEST,
        C::InvalidParameter => S::UNPROCESSABLE_ENTITY,
        C::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
        C::UnauthorizedError => S::UNAUTHORIZED,
        C::ResourceNotFound | C::HostNotFound | C::InstanceNotFound | C::ImageNotFound => S::NOT_FOUND,
        C::HostExists | C::HostInUse | C::InstanceExists | C::InstanceProvisioning => S::CONFLICT,
        C::NoCapacity | C::UnsupportedImage => S::UNPROCESSABLE_ENTITY,
        C::HostUnavailable | C::SourceUnavailable => S::SERVICE_UNAVAILABLE,
        C::DatabaseError | C::InternalError => S::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer.
pub type ApiError = service_kit::api_error::ApiError<ErrorCode>;

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::from_error(ErrorCode::DatabaseError, &e)
    }
}

impl From<crate::instances::InstanceError> for ApiError {
    fn from(e: crate::instances::InstanceError) -> Self {
        ApiError::from_error(e.code(), &e)
    }
}

impl From<crate::hosts::HostError> for ApiError {
    fn from(e: crate::hosts::HostError) -> Self {
        ApiError::from_error(e.code(), &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use actix_web::ResponseError;

    #[test]
    fn the_documented_table_is_this_table() {
        let doc = include_str!("../../../docs/cloudapi/api.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
        for &code in ErrorCode::ALL {
            let row = format!("| `{code}` | {} |", status(code).as_u16());
            assert!(rows.iter().any(|r| r.starts_with(&row)), "docs/cloudapi/api.md lacks {row}");
        }
    }

    #[test]
    fn internal_failures_keep_their_details_in_the_log() {
        let secret = std::io::Error::other("connection to postgres://cloud:hunter2@db failed");
        for &code in ErrorCode::ALL {
            let response = ApiError::from_error(code, &secret).error_response();
            assert_eq!(response.status(), status(code), "{code}");
            let bytes = response.into_body().try_into_bytes().expect("a sized body");
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["code"], code.as_str());
            let message = body["message"].as_str().unwrap();
            // Every 500 is an internal failure, whose details stay in the log.
            assert_eq!(
                status(code) == StatusCode::INTERNAL_SERVER_ERROR,
                code.internal_message().is_some(),
                "{code}"
            );
            if code.internal_message().is_some() {
                assert!(!message.contains("hunter2"), "{code}: {message}");
            }
        }
    }
}
