//! Credentials a client sends: HTTP Basic (what imgadm can send, from the source URL), or a
//! Joyent HTTP Signature (what Triton's tools send): a `Date` header, and
//!
//! ```text
//! Authorization: Signature keyId="<user>",algorithm="rsa-sha256",
//!     headers="(request-target) host date",signature="<base64>"
//! ```
//!
//! with the user's SSH key (RSA, PKCS#1 v1.5 with SHA-256). Triton's tools sign the date only
//! (no `headers`), so that anyone who sees one of their requests can replay it, as any other
//! request, until the clock-skew window closes; signing the method, path, query and host too
//! binds a signature to the one request it was made for. The key id is the bare user name, as
//! sdc-clients sends it and as sdc-imgapi parses it; the server tries every public key it has
//! for that user.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub enum Auth {
    None,
    Basic { user: String, password: Option<String> },
    Signature { user: String, key: Arc<SigningKey> },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic({user:?}, password hidden)"),
            Auth::Signature { user, .. } => write!(f, "Signature({user:?})"),
        }
    }
}

/// A private key that signs requests.
pub struct SigningKey {
    key: RsaPrivateKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(RSA, hidden)")
    }
}

/// A key file that cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a private key this client can sign with: {0}")]
    Unsupported(String),
}

impl SigningKey {
    /// Reads a private key file: OpenSSH (`BEGIN OPENSSH PRIVATE KEY`, unencrypted), PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`).
    pub fn from_file(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Read { path: path.display().to_string(), source })?;
        SigningKey::from_pem(&text)
    }

    /// Parses a private key in one of the formats [`SigningKey::from_file`] reads.
    pub fn from_pem(text: &str) -> Result<SigningKey, KeyError> {
        let unsupported = |m: String| KeyError::Unsupported(m);
        let key = if text.contains("BEGIN OPENSSH PRIVATE KEY") {
            let key = ssh_key::PrivateKey::from_openssh(text).map_err(|e| unsupported(e.to_string()))?;
            if key.is_encrypted() {
                return Err(unsupported(
                    "the key is encrypted; give an unencrypted copy (ssh-keygen -p -N '' -f COPY)".into(),
                ));
            }
            let rsa = key.key_data().rsa().ok_or_else(|| {
                unsupported(format!("{} keys cannot sign IMGAPI requests; use RSA", key.algorithm()))
            })?;
            rsa_key(rsa).map_err(unsupported)?
        } else if text.contains("BEGIN RSA PRIVATE KEY") {
            RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| unsupported(e.to_string()))?
        } else if text.contains("BEGIN PRIVATE KEY") {
            RsaPrivateKey::from_pkcs8_pem(text).map_err(|e| unsupported(e.to_string()))?
        } else {
            return Err(unsupported("no PEM or OpenSSH private key found".into()));
        };
        Ok(SigningKey { key })
    }

    /// The `Authorization` header value for a request.
    pub fn authorization(&self, user: &str, parts: &SignedParts<'_>) -> Result<String, KeyError> {
        let digest = Sha256::digest(parts.signing_string().as_bytes());
        let signature = self
            .key
            .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
            .map_err(|e| KeyError::Unsupported(e.to_string()))?;
        let signature = base64::engine::general_purpose::STANDARD.encode(signature);
        Ok(format!(
            "Signature keyId=\"{user}\",algorithm=\"rsa-sha256\",headers=\"{}\",signature=\"{signature}\"",
            SignedParts::HEADERS
        ))
    }
}

/// What a signature covers.
pub struct SignedParts<'a> {
    /// `get /images/UUID/file?channel=dev`: the lower-cased method, the path and query.
    pub target: &'a str,
    /// The `Host` header sent.
    pub host: &'a str,
    /// The `Date` header sent.
    pub date: &'a str,
}

impl SignedParts<'_> {
    /// The `headers` parameter: what is signed, in order.
    pub const HEADERS: &'static str = "(request-target) host date";

    /// The signing string, as the draft defines it for [`Self::HEADERS`].
    pub fn signing_string(&self) -> String {
        format!("(request-target): {}\nhost: {}\ndate: {}", self.target, self.host, self.date)
    }
}

/// The RSA key of an OpenSSH key pair, from its components. (ssh-key 0.6's own conversion
/// refuses keys that `ssh-keygen` writes: it fails with a bare "cryptographic error".)
fn rsa_key(pair: &ssh_key::private::RsaKeypair) -> Result<RsaPrivateKey, String> {
    let int = |m: &ssh_key::Mpint| -> Result<rsa::BigUint, String> {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| "a negative RSA component".to_string())
    };
    let key = RsaPrivateKey::from_components(
        int(&pair.public.n)?,
        int(&pair.public.e)?,
        int(&pair.private.d)?,
        vec![int(&pair.private.p)?, int(&pair.private.q)?],
    )
    .map_err(|e| e.to_string())?;
    key.validate().map_err(|e| e.to_string())?;
    Ok(key)
}

/// Now as an HTTP date (`Sun, 22 Nov 2026 12:13:36 GMT`), for the `Date` header.
pub(crate) fn http_date() -> String {
    chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;

    #[test]
    fn debug_never_shows_a_password() {
        let auth = Auth::Basic { user: "admin".into(), password: Some("hunter2".into()) };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn key_formats_and_refusals() {
        let pkcs1 = include_str!("../../imgapi/tests/fixtures/keys/tester_rsa");
        let key = SigningKey::from_pem(pkcs1).unwrap();
        assert_eq!(key.key.size(), 256);
        let parts = SignedParts {
            target: "get /ping",
            host: "127.0.0.1:8080",
            date: "Sun, 22 Nov 2026 12:13:36 GMT",
        };
        let header = key.authorization("admin", &parts).unwrap();
        assert!(header.starts_with(
            "Signature keyId=\"admin\",algorithm=\"rsa-sha256\",headers=\"(request-target) host date\",signature=\""
        ));
        assert_eq!(
            parts.signing_string(),
            "(request-target): get /ping\nhost: 127.0.0.1:8080\ndate: Sun, 22 Nov 2026 12:13:36 GMT"
        );
        assert!(matches!(SigningKey::from_pem("hello"), Err(KeyError::Unsupported(_))));
        let missing = SigningKey::from_file(Path::new("/nonexistent/id_rsa")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/id_rsa"));
    }

    #[test]
    fn http_dates_are_rfc_7231() {
        let date = http_date();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    }
}
