//! Error answers of the services' REST APIs, in IMGAPI's `{"code","message"}` shape. Each
//! service declares its codes with [`error_codes!`](crate::error_codes) and says, through
//! [`Code`], the status of each (one table per service) and which are internal failures. An
//! internal failure is answered with a curated message and the request id; its whole chain
//! (argv, stderr, paths) goes to the log with that id, never to the client.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::ErrorChain;

/// A service's error codes.
pub trait Code: Copy + std::fmt::Debug + std::fmt::Display + 'static {
    /// The Basic auth realm of a 401.
    const REALM: &'static str;
    /// Where a 500's details are, as its message says it (`the agent's log`).
    const LOG: &'static str;
    /// The code of a parameter that is not acceptable.
    const INVALID_PARAMETER: Self;
    fn as_str(self) -> &'static str;
    /// The HTTP status (the service's one table).
    fn status(self) -> StatusCode;
    /// For an internal failure, what the client reads instead of the details.
    fn internal_message(self) -> Option<&'static str>;
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError<C> {
    pub code: C,
    /// What the client reads.
    pub message: String,
    /// An internal failure's whole chain, for the log only.
    detail: Option<String>,
}

impl<C: Code> ApiError<C> {
    /// An answer whose message is for the client.
    pub fn new(code: C, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), detail: None }
    }

    /// The answer for a domain error: its message, or, for an internal failure, the curated one
    /// (the error itself goes to the log).
    pub fn from_error(code: C, error: &(dyn std::error::Error + 'static)) -> Self {
        let chain = ErrorChain(error).to_string();
        match code.internal_message() {
            Some(message) => ApiError { code, message: message.into(), detail: Some(chain) },
            None => ApiError::new(code, chain),
        }
    }

    /// A query, parameter or action that is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(C::INVALID_PARAMETER, message)
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl<C: Code> std::fmt::Display for ApiError<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl<C: Code> ResponseError for ApiError<C> {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = crate::request_id::current();
        let message = match &self.detail {
            Some(detail) => {
                tracing::error!(req_id = %request_id, code = %self.code, error = %detail, "request failed");
                format!("{} (request {request_id}: {} has the details)", self.message, C::LOG)
            }
            None => self.message.clone(),
        };
        let mut response = HttpResponse::build(self.status());
        if self.status() == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, format!("Basic realm=\"{}\"", C::REALM)));
        }
        response.json(serde_json::json!({"code": self.code.as_str(), "message": message}))
    }
}

/// The query string of `req` as a `T`; `INVALID_PARAMETER` saying why not.
pub fn query<T: serde::de::DeserializeOwned, C: Code>(
    req: &actix_web::HttpRequest,
) -> Result<T, ApiError<C>> {
    actix_web::web::Query::<T>::from_query(req.query_string())
        .map(actix_web::web::Query::into_inner)
        .map_err(|e| ApiError::invalid(format!("invalid query: {e}")))
}

/// Lets a handler return a bare error (the fallback route).
impl<C: Code> actix_web::Responder for ApiError<C> {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}

/// Declares a service's error codes: the enum (serialised as its name), `ALL`, `as_str`,
/// `parse`, `Display`, and its [`Code`] with the service's realm and log, its
/// invalid-parameter code, its status table and its internal messages:
///
/// ```ignore
/// error_codes! {
///     service(realm: "agent", log: "the agent's log", invalid: InvalidParameter,
///             status: crate::api::error::status, internal: ErrorCode::internal_message);
///     /// A request body that is not JSON of the expected shape.
///     InvalidContent,
///     InvalidParameter,
/// }
/// ```
#[macro_export]
macro_rules! error_codes {
    (service(realm: $realm:literal, log: $log:literal, invalid: $invalid:ident, status: $status:path, internal: $internal:path);
     $($(#[$doc:meta])* $code:ident,)*) => {
        impl $crate::api_error::Code for ErrorCode {
            const REALM: &'static str = $realm;
            const LOG: &'static str = $log;
            const INVALID_PARAMETER: Self = ErrorCode::$invalid;

            fn as_str(self) -> &'static str {
                ErrorCode::as_str(self)
            }

            fn status(self) -> ::actix_web::http::StatusCode {
                $status(self)
            }

            fn internal_message(self) -> Option<&'static str> {
                $internal(self)
            }
        }

        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
        pub enum ErrorCode {
            $($(#[$doc])* $code,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$code),*];

            /// The code as it appears in answers (`HostNotFound`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => stringify!($code),)*
                }
            }

            /// The code named `name`, as a client reads it from an answer.
            pub fn parse(name: &str) -> Option<ErrorCode> {
                ErrorCode::ALL.iter().copied().find(|c| c.as_str() == name)
            }
        }

        impl ::std::fmt::Display for ErrorCode {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
