//! What goes wrong talking to an IMGAPI server, and the error body servers answer with:
//! `{"code": "ResourceNotFound", "message": "..."}` (plus `errors`, the fields at fault, for
//! validation errors).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{KeyError, ManifestError, SourceError};

/// The body of an IMGAPI error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong, for programs (`ResourceNotFound`, `InvalidParameter`...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The fields at fault, for validation errors: `{"field", "code", "message"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub errors: Option<Vec<serde_json::Value>>,
}

impl ErrorBody {
    /// The error body in `bytes`, if they are one (a proxy's HTML page is not).
    pub fn parse(bytes: &[u8]) -> Option<ErrorBody> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A request that failed. Every variant names the server (`url`, without credentials).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot use the signing key")]
    Key(#[from] KeyError),
    /// The HTTP client could not be built (no TLS roots, say).
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
    /// No answer: refused, timed out, TLS failed.
    #[error("cannot reach {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// 404 for an image: not on this server.
    #[error("image {uuid} is not on {url}")]
    NotFound { url: String, uuid: Uuid },
    /// Any other error answer.
    #[error(transparent)]
    Status(Box<ErrorAnswer>),
    /// An answer that is not what the protocol says (not JSON, another image's manifest...).
    #[error("{url} sent an invalid answer: {message}")]
    BadAnswer { url: String, message: String },
    /// The manifest's file entry cannot be used.
    #[error("the manifest of {uuid} on {url} is unusable")]
    BadManifest {
        url: String,
        uuid: Uuid,
        #[source]
        source: ManifestError,
    },
    /// A Range request was not honoured, so a broken download cannot go on.
    #[error("{url} cannot resume the download of {uuid} at byte {offset}")]
    NoResume { url: String, uuid: Uuid, offset: u64 },
    /// The connection broke while a body was coming.
    #[error("the download from {url} broke")]
    Broken {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// An error answer of a server: what was asked, and what it said (`code` and `message` from
/// its error body when it sent one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url} answered {status} to {method} {path}: {}", describe(code.as_deref(), message))]
pub struct ErrorAnswer {
    pub url: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub code: Option<String>,
    pub message: String,
}

fn describe(code: Option<&str>, message: &str) -> String {
    match code {
        Some(code) => format!("{code}: {message}"),
        None => message.to_string(),
    }
}

impl ClientError {
    /// The IMGAPI error code of an error answer (`ResourceNotFound`, `UnauthorizedError`...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Status(answer) => answer.code.as_deref(),
            ClientError::NotFound { .. } => Some("ResourceNotFound"),
            _ => None,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status(answer) => Some(answer.status),
            ClientError::NotFound { .. } => Some(404),
            _ => None,
        }
    }

    /// Whether trying again may help: the server could not be reached, the body broke, or the
    /// server said it is unavailable.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Broken { .. } => true,
            ClientError::Status(answer) => matches!(answer.status, 502..=504),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_parse_and_garbage_does_not() {
        let body =
            ErrorBody::parse(br#"{"code":"InvalidParameter","message":"bad","errors":[{"field":"x"}]}"#)
                .unwrap();
        assert_eq!(body.code, "InvalidParameter");
        assert_eq!(body.errors.unwrap().len(), 1);
        assert!(ErrorBody::parse(b"<html>502 Bad Gateway</html>").is_none());
        assert!(ErrorBody::parse(br#"{"message": "no code"}"#).is_none());
        let round = serde_json::to_string(&ErrorBody { code: "C".into(), message: "m".into(), errors: None });
        assert_eq!(round.unwrap(), r#"{"code":"C","message":"m"}"#);
    }

    #[test]
    fn statuses_read_as_sentences() {
        let e = ClientError::Status(Box::new(ErrorAnswer {
            url: "http://h".into(),
            method: "POST".into(),
            path: "/images/x".into(),
            status: 422,
            code: Some("NoActivationNoFile".into()),
            message: "image x has no file".into(),
        }));
        assert_eq!(
            e.to_string(),
            "http://h answered 422 to POST /images/x: NoActivationNoFile: image x has no file"
        );
        assert_eq!(e.code(), Some("NoActivationNoFile"));
        assert!(!e.is_transient());
    }
}
