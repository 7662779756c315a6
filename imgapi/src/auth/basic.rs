//! HTTP Basic credentials against `userdb`: plain-text passwords (as the Go server stored
//! them) compared in constant time, or argon2 / bcrypt hashes. Successful hash verifications
//! are remembered (as a SHA-256 of user and password) so that a client sending the same
//! credentials on every request does not pay for a slow hash each time.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::UserEntry;

/// How many verified hashed credentials to remember before starting over.
const CACHE_LIMIT: usize = 1024;

enum Stored {
    /// SHA-256 of the plain-text password: comparing digests takes the same time whatever the
    /// input's length or how much of it matches.
    Plain([u8; 32]),
    Argon2(String),
    Bcrypt(String),
}

/// Why a Basic header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    #[error("malformed Basic credentials")]
    Malformed,
    #[error("invalid username/password combination")]
    Invalid,
}

/// The `userdb`, ready for checking.
pub struct UserDb {
    users: HashMap<String, Stored>,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// When some passwords are hashed, an unknown user name is checked against this hash so
    /// that refusing it takes as long as refusing a real user (no user-name discovery by timing).
    decoy: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("userdb: the password hash of {user:?} is not a valid argon2 or bcrypt hash")]
pub struct BadHash {
    user: String,
}

impl UserDb {
    pub fn new(entries: &[UserEntry]) -> Result<Self, BadHash> {
        let mut users = HashMap::new();
        for entry in entries {
            let stored = if entry.password.starts_with("$argon2") {
                // A well-formed hash refuses a wrong password with `Error::Password`; anything
                // else means the hash itself is broken.
                let complete = argon2::PasswordHash::new(&entry.password).is_ok_and(|h| {
                    use argon2::PasswordVerifier;
                    h.salt.is_some()
                        && h.hash.is_some()
                        && matches!(
                            argon2::Argon2::default().verify_password(b"\0not-the-password", &h),
                            Err(argon2::password_hash::Error::Password)
                        )
                });
                if !complete {
                    return Err(BadHash { user: entry.name.clone() });
                }
                Stored::Argon2(entry.password.clone())
            } else if ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|p| entry.password.starts_with(p)) {
                // A well-formed hash verifies (to false) any password; a broken one errors.
                if bcrypt::verify("", &entry.password).is_err() {
                    return Err(BadHash { user: entry.name.clone() });
                }
                Stored::Bcrypt(entry.password.clone())
            } else {
                Stored::Plain(Sha256::digest(entry.password.as_bytes()).into())
            };
            users.insert(entry.name.clone(), stored);
        }
        let hashed = users.values().any(|u| !matches!(u, Stored::Plain(_)));
        let decoy = hashed.then(|| hash_password("decoy password that no one has"));
        Ok(UserDb { users, verified: Mutex::new(HashSet::new()), decoy })
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks the base64 part of `Authorization: Basic ...`; returns the user name.
    pub fn verify_header(&self, encoded: &str) -> Result<String, BasicError> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| BasicError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| BasicError::Malformed)?;
        let (user, password) = text.split_once(':').ok_or(BasicError::Malformed)?;
        if self.verify(user, password) {
            Ok(user.to_string())
        } else {
            Err(BasicError::Invalid)
        }
    }

    /// True when `password` is `user`'s.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        match self.users.get(user) {
            Some(Stored::Plain(digest)) => bool::from(digest.ct_eq(&offered)),
            Some(Stored::Argon2(hash)) => self.verify_hashed(user, password, || {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(hash)
                    .is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            }),
            Some(Stored::Bcrypt(hash)) => {
                self.verify_hashed(user, password, || bcrypt::verify(password, hash).unwrap_or(false))
            }
            None => {
                // Same work as for a known name, so an unknown name is not faster to refuse.
                match &self.decoy {
                    Some(decoy) => {
                        use argon2::PasswordVerifier;
                        let _ = argon2::PasswordHash::new(decoy).map(|h| {
                            argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok()
                        });
                    }
                    None => {
                        let _ = [0u8; 32].ct_eq(&offered);
                    }
                }
                false
            }
        }
    }

    fn verify_hashed(&self, user: &str, password: &str, slow_check: impl FnOnce() -> bool) -> bool {
        let mut key = Sha256::new();
        key.update(user.as_bytes());
        key.update([0]);
        key.update(password.as_bytes());
        let key: [u8; 32] = key.finalize().into();
        let cached = service_kit::lock(&self.verified).contains(&key);
        if cached {
            return true;
        }
        let ok = slow_check();
        if ok {
            let mut verified = service_kit::lock(&self.verified);
            if verified.len() >= CACHE_LIMIT {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }
}

/// An argon2id hash of `password` for `userdb` (the `hash-password` command).
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(entries: &[(&str, &str)]) -> UserDb {
        let entries: Vec<_> =
            entries.iter().map(|(n, p)| UserEntry { name: n.to_string(), password: p.to_string() }).collect();
        UserDb::new(&entries).unwrap()
    }

    fn header(user: &str, pass: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    }

    #[test]
    fn plain_argon2_and_bcrypt_passwords() {
        let argon = hash_password("s3cret");
        let bcrypt = bcrypt::hash("b-pass", 4).unwrap();
        let db = db(&[("admin", "secret"), ("ops", &argon), ("old", &bcrypt)]);
        assert_eq!(db.verify_header(&header("admin", "secret")), Ok("admin".into()));
        assert_eq!(db.verify_header(&header("admin", "secreT")), Err(BasicError::Invalid));
        assert_eq!(db.verify_header(&header("ops", "s3cret")), Ok("ops".into()));
        // Cached the second time; a wrong password is still refused.
        assert_eq!(db.verify_header(&header("ops", "s3cret")), Ok("ops".into()));
        assert_eq!(db.verify_header(&header("ops", "s3cre")), Err(BasicError::Invalid));
        assert_eq!(db.verify_header(&header("old", "b-pass")), Ok("old".into()));
        assert_eq!(db.verify_header(&header("nobody", "secret")), Err(BasicError::Invalid));
    }

    #[test]
    fn passwords_may_contain_colons() {
        let db = db(&[("a", "x:y")]);
        assert_eq!(db.verify_header(&header("a", "x:y")), Ok("a".into()));
    }

    #[test]
    fn malformed_headers() {
        let db = db(&[("a", "b")]);
        for bad in
            ["", "!!!", "bm9jb2xvbg", &base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b':'])]
        {
            assert_eq!(db.verify_header(bad), Err(BasicError::Malformed), "{bad:?}");
        }
        assert_eq!(
            db.verify_header(&base64::engine::general_purpose::STANDARD.encode("nocolon")),
            Err(BasicError::Malformed)
        );
    }

    #[test]
    fn a_broken_hash_is_a_config_error() {
        for broken in ["$argon2id$garbage", "$2b$12$short"] {
            let entries = [UserEntry { name: "x".into(), password: broken.into() }];
            assert!(UserDb::new(&entries).is_err(), "{broken}");
        }
    }
}
