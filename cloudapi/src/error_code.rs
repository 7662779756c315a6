//! Every error code cloudapi answers with, as one enum; the HTTP status of each is in one
//! table, `api/error.rs`. Where a code is the agent's, it means the same thing.

use service_kit::error_codes;

error_codes! {
    service(realm: "cloudapi", log: "cloudapi's log", invalid: InvalidParameter,
            status: crate::api::error::status, internal: ErrorCode::internal_message);
    /// A request body that is not JSON of the expected shape.
    InvalidContent,
    /// A parameter, query value or action that is not acceptable.
    InvalidParameter,
    /// A request body larger than any the API accepts.
    PayloadTooLarge,
    /// No such route.
    ResourceNotFound,
    /// No credentials, or wrong ones, for a call that needs them.
    UnauthorizedError,
    HostNotFound,
    /// A host of that name is registered already.
    HostExists,
    /// The host still has instances.
    HostInUse,
    /// The host sent no heartbeat for `host_timeout_secs`.
    HostUnavailable,
    /// The database failed (details in the log).
    DatabaseError,
    /// Anything else that failed on cloudapi's side (details in the log).
    InternalError,
}

impl ErrorCode {
    /// The message a client gets for an internal failure, whose details go to the log only.
    pub fn internal_message(self) -> Option<&'static str> {
        match self {
            ErrorCode::DatabaseError => Some("the database failed"),
            ErrorCode::InternalError => Some("cloudapi failed"),
            _ => None,
        }
    }
}
