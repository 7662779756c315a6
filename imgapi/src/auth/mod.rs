//! Who is calling: HTTP Basic against `userdb` (what imgadm sends from `http://user:pass@host/`
//! source URLs) or HTTP Signature with the users' SSH keys (what Triton's tools send).
//! A request without credentials is anonymous; a request with bad credentials is refused,
//! whatever the endpoint.

pub mod basic;
pub mod signature;

use crate::config::Config;
use basic::{BadHash, BasicError, UserDb};
use signature::{AuthKeys, KeyParseError, SignatureError, SignedRequest};

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    UserDb(#[from] BadHash),
    #[error("auth_keys")]
    Keys(#[from] KeyParseError),
}

/// Why credentials were refused. The message goes to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Invalid username/password combination")]
    Basic(#[source] BasicError),
    #[error("Unauthorized")]
    Signature(#[source] SignatureError),
    #[error("unsupported authorization scheme")]
    Scheme,
}

/// Checks credentials for every request.
pub struct Authenticator {
    users: UserDb,
    keys: AuthKeys,
}

impl Authenticator {
    pub fn from_config(config: &Config) -> Result<Self, AuthSetupError> {
        Ok(Authenticator {
            users: UserDb::new(&config.userdb)?,
            keys: AuthKeys::from_config(&config.auth_keys)?,
        })
    }

    /// Whether anyone at all can authenticate (no users: every write is refused).
    pub fn has_users(&self) -> bool {
        !self.users.is_empty() || !self.keys.is_empty()
    }

    /// Resolves the `Authorization` header: `Ok(None)` when there is none.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        request: &SignedRequest<'_>,
    ) -> Result<Option<String>, AuthError> {
        let Some(value) = authorization else { return Ok(None) };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            self.users.verify_header(rest).map(Some).map_err(AuthError::Basic)
        } else if scheme.eq_ignore_ascii_case("signature") {
            signature::verify(rest.trim(), request, &self.keys, chrono::Utc::now())
                .map(Some)
                .map_err(AuthError::Signature)
        } else {
            Err(AuthError::Scheme)
        }
    }
}
