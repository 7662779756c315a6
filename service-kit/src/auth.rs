//! API credentials as the agent and cloudapi take them: bearer tokens and Basic users from the
//! config, checked in constant time, with a refusal that says what is wrong without telling
//! whether a user exists.

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The `auth` section of a config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens (`Authorization: Bearer <token>`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Basic credentials.
    #[serde(default)]
    pub users: Vec<User>,
}

impl AuthConfig {
    /// What makes the section unusable: a token short enough to guess.
    pub fn check(&self) -> Result<(), String> {
        if self.tokens.iter().any(|t| t.len() < 16) {
            return Err("auth.tokens must be at least 16 characters long".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
}

/// Accepted credentials, kept as SHA-256 digests so comparisons take constant time whatever
/// the input length.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    tokens: Vec<[u8; 32]>,
    users: Vec<([u8; 32], [u8; 32])>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Credentials {
    pub fn new(config: &AuthConfig) -> Self {
        Credentials {
            tokens: config.tokens.iter().map(|t| digest(t)).collect(),
            users: config.users.iter().map(|u| (digest(&u.name), digest(&u.password))).collect(),
        }
    }

    /// These credentials and one more token.
    pub fn with_token(mut self, token: &str) -> Self {
        self.tokens.push(digest(token));
        self
    }

    /// Checks an `Authorization` header value.
    pub fn accepts(&self, authorization: &str) -> bool {
        self.check(Some(authorization.as_bytes())).is_ok()
    }

    /// Checks the `Authorization` header of a request (`None`: it has none), and says what is
    /// wrong with it. Which user name or token was wrong is never said: the answer must not
    /// tell whether a user exists.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(authorization) = authorization else { return Err(Refusal::Missing) };
        let authorization = std::str::from_utf8(authorization).map_err(|_| Refusal::Malformed)?;
        let (scheme, rest) = authorization.trim().split_once(' ').unwrap_or((authorization, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let offered = digest(rest.trim());
            // Every entry is compared, so the time does not tell which one matched.
            let ok = self.tokens.iter().fold(false, |ok, t| ok | bool::from(t.ct_eq(&offered)));
            ok.then_some(()).ok_or(Refusal::WrongToken)
        } else if scheme.eq_ignore_ascii_case("basic") {
            let text = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(Refusal::Malformed)?;
            let (user, password) = text.split_once(':').ok_or(Refusal::NoPassword)?;
            let (user, password) = (digest(user), digest(password));
            let ok = self
                .users
                .iter()
                .fold(false, |ok, (u, p)| ok | (bool::from(u.ct_eq(&user)) & bool::from(p.ct_eq(&password))));
            ok.then_some(()).ok_or(Refusal::WrongUser)
        } else {
            Err(Refusal::Malformed)
        }
    }

    /// Whether any credentials are configured (without, every change is refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.users.is_empty()
    }
}

/// Why credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    NoPassword,
    WrongToken,
    WrongUser,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this call needs credentials: a token (Authorization: Bearer) or a user and password (Basic)"
            }
            Refusal::Malformed => {
                "the Authorization header is neither \"Bearer TOKEN\" nor Basic credentials"
            }
            Refusal::NoPassword => "Basic credentials must be USER:PASSWORD",
            Refusal::WrongToken => "the token is not accepted",
            Refusal::WrongUser => "the user name or the password is not accepted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_says_what_is_wrong() {
        let config = AuthConfig {
            tokens: vec!["a-token-of-16-chars".into()],
            users: vec![User { name: "ops".into(), password: "pw".into() }],
        };
        let credentials = Credentials::new(&config);
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(credentials.accepts("Bearer a-token-of-16-chars"));
        assert!(credentials.accepts(&basic("ops:pw")));
        assert_eq!(credentials.check(None), Err(Refusal::Missing));
        assert_eq!(credentials.check(Some(b"Bearer nope")), Err(Refusal::WrongToken));
        assert_eq!(credentials.check(Some(basic("ops:no").as_bytes())), Err(Refusal::WrongUser));
        assert_eq!(credentials.check(Some(basic("nobody:pw").as_bytes())), Err(Refusal::WrongUser));
        assert_eq!(credentials.check(Some(basic("ops").as_bytes())), Err(Refusal::NoPassword));
        assert_eq!(credentials.check(Some(b"Digest x")), Err(Refusal::Malformed));
        let more = credentials.clone().with_token("a-host-credential-123");
        assert!(
            more.accepts("Bearer a-host-credential-123")
                && !credentials.accepts("Bearer a-host-credential-123")
        );
        assert!(AuthConfig { tokens: vec!["short".into()], users: vec![] }.check().is_err());
    }
}
