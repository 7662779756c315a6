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
    /// The host sent no heartbeat for `host_timeout_secs`, or cannot be reached.
    HostUnavailable,
    InstanceNotFound,
    /// An instance of that uuid or alias exists (uuids and aliases are unique in the fleet).
    InstanceExists,
    /// The instance is still being created: wait for it.
    InstanceProvisioning,
    /// No host passes placement's filters (the message has each host's reason).
    NoCapacity,
    /// No image source has the image, and no host holds it.
    ImageNotFound,
    /// An image no instance boots (not a `zvol`), or with an unusable origin chain.
    UnsupportedImage,
    /// An IMGAPI source of the config cannot be reached or failed.
    SourceUnavailable,
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
