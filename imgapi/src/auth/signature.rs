//! Verification of Joyent HTTP Signature (`Authorization: Signature ...`) requests, as sdc-imgapi does it.
//!
//! The reference server (`authType: signature`) runs joyent/node-http-signature's
//! `parseRequest` and then tries every configured SSH public key of the user named
//! by `keyId`. The sdc-clients IMGAPI client sends
//!
//! ```text
//! Date: Sun, 22 Nov 2026 12:13:36 GMT
//! Authorization: Signature keyId="<username>",algorithm="rsa-sha256",signature="<base64>"
//! ```
//!
//! and signs the string `date: <Date value>`. This module reproduces those rules:
//! default signed header is `x-date` if the request has one, else `date`, and that
//! header must be among the signed ones; its value may be at most 300 s away from
//! now; the algorithm (case-insensitive) is one of `rsa-sha1`, `rsa-sha256`,
//! `dsa-sha1`. On top of the reference it also accepts the
//! `keyId="/<user>/keys/<fingerprint>"` shape used by smartdc-auth's
//! `requestSigner` (and ignores the fingerprint: every key of the user is tried).

use std::collections::BTreeMap;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha1::{Digest as _, Sha1};
use sha2::Sha256;

/// Largest accepted distance, in seconds, between the signed date header and now
/// (node-http-signature's default `clockSkew`).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Base64 as node decodes it: padding is optional. (Node's `Buffer.from(s,
/// 'base64')` is laxer still, but every real signer emits canonical padded base64.)
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// DER `DigestInfo` prefixes for PKCS#1 v1.5 (RFC 8017 section 9.2, note 1).
/// Spelled out so the crate needs neither `rsa/sha1`+`rsa/sha2` nor `sha2/oid`.
const SHA1_DIGEST_INFO: &[u8] =
    &[0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14];
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
    0x04, 0x20,
];

/// RSA modulus bounds. OpenSSH itself refuses to make keys outside these; the
/// lower bound is stricter than the reference (which would take 512-bit keys).
const RSA_MIN_BITS: usize = 1024;
const RSA_MAX_BITS: usize = 16384;
/// DSA prime bounds; 10000 is OpenSSL's `OPENSSL_DSA_MAX_MODULUS_BITS`.
const DSA_MIN_P_BITS: usize = 1024;
const DSA_MAX_P_BITS: usize = 10000;

/// One parsed SSH public key.
#[derive(Clone, Debug)]
enum PublicKey {
    Rsa(RsaPublicKey),
    Dsa(dsa::VerifyingKey),
}

/// The configured signature keys: username -> that user's public keys.
#[derive(Clone, Debug, Default)]
pub struct AuthKeys {
    users: BTreeMap<String, Vec<PublicKey>>,
}

/// A configured public key line that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid public key for user {user:?}, line {line}: {reason}")]
pub struct KeyParseError {
    /// The user the key is configured for.
    pub user: String,
    /// 1-based line number among all lines of that user's key entries: the
    /// entry's position when each entry is one line; an entry holding several
    /// newline-separated lines contributes each of them.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl AuthKeys {
    /// Parse every key of every user; an unparsable line is an error naming the user and line number.
    ///
    /// Lines are OpenSSH public key lines (`ssh-rsa AAAA... comment`,
    /// `ssh-dss ...`); blank lines and `#` comments are skipped. Key types that
    /// cannot verify an IMGAPI signature (ed25519, ECDSA) are errors too, rather
    /// than being skipped with a warning as the reference does, so that a
    /// misconfiguration shows at startup instead of as unexplained 401s.
    pub fn from_config(users: &BTreeMap<String, Vec<String>>) -> Result<Self, KeyParseError> {
        let mut parsed = BTreeMap::new();
        for (user, entries) in users {
            let mut keys = Vec::new();
            let mut line_number = 0;
            for entry in entries {
                // An empty entry still counts as one (blank) line, so numbers
                // match entry positions in the usual one-key-per-entry config.
                let lines = if entry.is_empty() { "\n" } else { entry.as_str() };
                for line in lines.lines() {
                    line_number += 1;
                    match parse_key_line(line) {
                        Ok(Some(key)) => keys.push(key),
                        Ok(None) => {}
                        Err(reason) => {
                            return Err(KeyParseError { user: user.clone(), line: line_number, reason });
                        }
                    }
                }
            }
            parsed.insert(user.clone(), keys);
        }
        Ok(Self { users: parsed })
    }

    /// True when no user is configured (every signed request will fail).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Why a signed request was refused. Every variant maps to the same
/// `401 UnauthorizedError` on the wire; the detail is for logs only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The Authorization parameters could not be parsed or lack a required field.
    #[error("malformed signature parameters: {0}")]
    Malformed(String),
    /// `keyId` does not name a configured user.
    #[error("unknown user in signature keyId")]
    UnknownUser,
    /// The algorithm is not one of rsa-sha1, rsa-sha256, dsa-sha1.
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// A header that must be signed is not in the signed list, or a listed header
    /// is absent from the request.
    #[error("missing signed header {0:?}")]
    MissingHeader(String),
    /// The signed date header is not an HTTP date.
    #[error("unparsable date header {0:?}")]
    InvalidDate(String),
    /// The signed date is more than [`MAX_CLOCK_SKEW_SECS`] away from now.
    #[error("signed date is more than {MAX_CLOCK_SKEW_SECS} s away from the server clock")]
    ClockSkew,
    /// No key of the user verifies the signature.
    #[error("signature does not verify with any key of the user")]
    BadSignature,
}

/// The parts of the HTTP request the verifier needs (kept free of any HTTP crate types).
pub struct SignedRequest<'a> {
    /// The request method, any case (`GET`).
    pub method: &'a str,
    /// The request target exactly as sent: path plus `?query` if any.
    pub path_and_query: &'a str,
    /// Looks up a request header by lower-case name.
    ///
    /// Should return the value as the HTTP layer parsed it (surrounding
    /// whitespace trimmed); repeated headers joined with `", "` as node does.
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

/// Verify the `Authorization: Signature ...` header value (the part after "Signature ").
/// Returns the authenticated username.
///
/// Checks run in the reference's order: parameters, algorithm, signed headers,
/// date skew, user, signature.
pub fn verify(
    params: &str,
    req: &SignedRequest<'_>,
    keys: &AuthKeys,
    now: DateTime<Utc>,
) -> Result<String, SignatureError> {
    let params = parse_params(params)?;
    let key_id = params.require("keyId")?;
    let algorithm_param = params.require("algorithm")?;
    let signature_b64 = params.require("signature")?;

    let algorithm = Algorithm::parse(algorithm_param)
        .ok_or_else(|| SignatureError::UnsupportedAlgorithm(algorithm_param.to_owned()))?;

    // node-http-signature treats an empty header as absent (JS falsiness).
    let present = |name: &str| (req.header)(name).filter(|v| !v.is_empty());
    let date_name = if present("x-date").is_some() { "x-date" } else { "date" };
    let header_names: Vec<String> = match params.get("headers") {
        Some(list) if !list.is_empty() => {
            list.split_ascii_whitespace().map(str::to_ascii_lowercase).collect()
        }
        _ => vec![date_name.to_owned()],
    };
    let signing_string = signing_string(&header_names, req)?;

    // The date must be covered by the signature, otherwise the skew check would
    // bound nothing and a captured signature could be replayed forever.
    if !header_names.iter().any(|h| h == date_name) {
        return Err(SignatureError::MissingHeader(date_name.to_owned()));
    }
    let date_value = present(date_name).ok_or_else(|| SignatureError::MissingHeader(date_name.to_owned()))?;
    check_clock_skew(&date_value, now)?;

    let (user, user_keys) = resolve_user(key_id, keys).ok_or(SignatureError::UnknownUser)?;

    let signature = B64
        .decode(signature_b64)
        .map_err(|_| SignatureError::Malformed("signature is not base64".to_owned()))?;

    if user_keys.iter().any(|key| key_verifies(key, algorithm, signing_string.as_bytes(), &signature)) {
        Ok(user.to_owned())
    } else {
        Err(SignatureError::BadSignature)
    }
}

/// The accepted `algorithm` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    RsaSha1,
    RsaSha256,
    DsaSha1,
}

impl Algorithm {
    fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "rsa-sha1" => Some(Self::RsaSha1),
            "rsa-sha256" => Some(Self::RsaSha256),
            "dsa-sha1" => Some(Self::DsaSha1),
            _ => None,
        }
    }
}

/// Parsed `name="value",name=123` parameters.
struct Params<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// A parameter that must be present and non-empty (node rejects empty ones too).
    fn require(&self, name: &str) -> Result<&'a str, SignatureError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SignatureError::Malformed(format!("{name} was not specified")))
    }
}

/// Parse the parameter list with node-http-signature's grammar: names are ASCII
/// letters, values are either a double-quoted string without escapes or a run of
/// digits, pairs are separated by commas. Unlike node, whitespace around commas
/// is tolerated, and a repeated name is an error rather than last-one-wins.
fn parse_params(input: &str) -> Result<Params<'_>, SignatureError> {
    let malformed = |what: &str| SignatureError::Malformed(what.to_owned());
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut rest = input.trim_matches([' ', '\t']);
    if rest.is_empty() {
        return Err(malformed("no parameters"));
    }
    loop {
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        if name_len == 0 {
            return Err(malformed("bad parameter name"));
        }
        let (name, after_name) = rest.split_at(name_len);
        let after_eq =
            after_name.strip_prefix('=').ok_or_else(|| malformed("expected '=' after parameter name"))?;
        let (value, after_value) = if let Some(quoted) = after_eq.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(|| malformed("unterminated quoted value"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let digits = after_eq.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(malformed("parameter value must be quoted or a number"));
            }
            after_eq.split_at(digits)
        };
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(malformed("repeated parameter"));
        }
        pairs.push((name, value));
        let after_value = after_value.trim_start_matches([' ', '\t']);
        if after_value.is_empty() {
            return Ok(Params { pairs });
        }
        rest = after_value
            .strip_prefix(',')
            .ok_or_else(|| malformed("expected ',' between parameters"))?
            .trim_start_matches([' ', '\t']);
    }
}

/// Build the signing string: `<name>: <value>` per signed header, joined by `\n`.
fn signing_string(names: &[String], req: &SignedRequest<'_>) -> Result<String, SignatureError> {
    let mut lines = Vec::with_capacity(names.len());
    for name in names {
        let value = if name == "(request-target)" {
            format!("{} {}", req.method.to_ascii_lowercase(), req.path_and_query)
        } else if name.starts_with('(') {
            // (created), (expires), (keyid)... come from later drafts that no
            // IMGAPI client uses; refusing them beats guessing their semantics.
            return Err(SignatureError::Malformed(format!("unsupported pseudo-header {name}")));
        } else {
            (req.header)(name).ok_or_else(|| SignatureError::MissingHeader(name.clone()))?
        };
        lines.push(format!("{name}: {value}"));
    }
    Ok(lines.join("\n"))
}

/// Parse the signed date (RFC 1123 as sent by every client, or RFC 3339 for
/// generality) and compare it with `now` at millisecond precision like node.
///
/// An unparsable date is refused; node would compute `NaN` and let it through,
/// which is a hole, not behaviour worth copying.
fn check_clock_skew(value: &str, now: DateTime<Utc>) -> Result<(), SignatureError> {
    let value = value.trim();
    let date = DateTime::parse_from_rfc2822(value)
        .or_else(|_| DateTime::parse_from_rfc3339(value))
        .map_err(|_| SignatureError::InvalidDate(value.to_owned()))?;
    let skew_ms = now.signed_duration_since(date).num_milliseconds().unsigned_abs();
    if skew_ms > MAX_CLOCK_SKEW_SECS.unsigned_abs() * 1000 {
        return Err(SignatureError::ClockSkew);
    }
    Ok(())
}

/// Map a keyId to a configured user: the username itself (what sdc-clients'
/// IMGAPI client sends), or `/<user>/keys/<fingerprint>` (smartdc-auth's
/// `requestSigner`). Sub-user forms (`/<acct>/users/<sub>/keys/..`) have a `/`
/// in the user part and so never match a plain configured username.
fn resolve_user<'k>(key_id: &str, keys: &'k AuthKeys) -> Option<(&'k str, &'k [PublicKey])> {
    let lookup = |name: &str| {
        keys.users.get_key_value(name).map(|(user, user_keys)| (user.as_str(), user_keys.as_slice()))
    };
    if let Some(found) = lookup(key_id) {
        return Some(found);
    }
    let (user, fingerprint) = key_id.strip_prefix('/')?.split_once("/keys/")?;
    if user.is_empty() || user.contains('/') || fingerprint.is_empty() {
        return None;
    }
    lookup(user)
}

/// Does `key` verify `signature` over `message` with `algorithm`? A key of the
/// other type simply does not (the reference tries every key the same way).
fn key_verifies(key: &PublicKey, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
    match (key, algorithm) {
        (PublicKey::Rsa(rsa_key), Algorithm::RsaSha1) => {
            rsa_verifies(rsa_key, SHA1_DIGEST_INFO, &Sha1::digest(message), signature)
        }
        (PublicKey::Rsa(rsa_key), Algorithm::RsaSha256) => {
            rsa_verifies(rsa_key, SHA256_DIGEST_INFO, &Sha256::digest(message), signature)
        }
        (PublicKey::Dsa(dsa_key), Algorithm::DsaSha1) => {
            use dsa::signature::hazmat::PrehashVerifier as _;
            // Node/OpenSSL produce (and the reference verifies) DER
            // `SEQUENCE { INTEGER r, INTEGER s }`.
            dsa::Signature::try_from(signature)
                .is_ok_and(|sig| dsa_key.verify_prehash(&Sha1::digest(message), &sig).is_ok())
        }
        _ => false,
    }
}

fn rsa_verifies(key: &RsaPublicKey, prefix: &[u8], hashed: &[u8], signature: &[u8]) -> bool {
    use rsa::traits::PublicKeyParts as _;
    let size = key.size();
    if signature.len() > size {
        return false;
    }
    // The `rsa` crate wants exactly modulus-length signatures. A signer that
    // passes the signature through a bignum may drop leading zero bytes (about
    // 1 signature in 256); it is the same integer, so pad it back rather than
    // fail at random. (Node on OpenSSL 3 refuses these; no known client sends them.)
    let mut padded = vec![0u8; size - signature.len()];
    padded.extend_from_slice(signature);
    let scheme = Pkcs1v15Sign { hash_len: Some(hashed.len()), prefix: prefix.into() };
    key.verify(scheme, hashed, &padded).is_ok()
}

/// Parse one configured line. `Ok(None)` for blank and comment lines.
fn parse_key_line(line: &str) -> Result<Option<PublicKey>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split_ascii_whitespace();
    let key_type = fields.next().unwrap_or_default();
    if key_type != "ssh-rsa" && key_type != "ssh-dss" {
        return Err(format!(
            "unsupported key type {:?} (only ssh-rsa and ssh-dss keys can verify IMGAPI signatures)",
            truncate(key_type)
        ));
    }
    let blob_b64 = fields.next().ok_or_else(|| "missing base64 key data".to_owned())?;
    let blob = B64.decode(blob_b64).map_err(|e| format!("key data is not base64: {e}"))?;
    parse_key_blob(key_type, &blob).map(Some)
}

/// Keep untrusted text in error messages short.
fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parse an SSH wire-format public key blob (RFC 4253 section 6.6).
fn parse_key_blob(expected_type: &str, blob: &[u8]) -> Result<PublicKey, String> {
    let mut reader = WireReader { rest: blob };
    let blob_type = reader.string()?;
    if blob_type != expected_type.as_bytes() {
        return Err(format!(
            "key data is of type {:?}, not {expected_type}",
            truncate(&String::from_utf8_lossy(blob_type))
        ));
    }
    let key = if expected_type == "ssh-rsa" {
        let e = reader.mpint()?;
        let n = reader.mpint()?;
        reader.finish()?;
        let bits = n.bits();
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(format!("RSA modulus of {bits} bits (must be {RSA_MIN_BITS} to {RSA_MAX_BITS})"));
        }
        let key = RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS)
            .map_err(|e| format!("invalid RSA key: {e}"))?;
        PublicKey::Rsa(key)
    } else {
        let p = reader.mpint()?;
        let q = reader.mpint()?;
        let g = reader.mpint()?;
        let y = reader.mpint()?;
        reader.finish()?;
        let p_bits = p.bits();
        if !(DSA_MIN_P_BITS..=DSA_MAX_P_BITS).contains(&p_bits) {
            return Err(format!("DSA prime of {p_bits} bits (must be {DSA_MIN_P_BITS} to {DSA_MAX_P_BITS})"));
        }
        // FIPS 186 subgroup sizes; also keeps the dsa crate's hash truncation sane.
        if ![160, 224, 256].contains(&q.bits()) || q >= p {
            return Err("invalid DSA subgroup order q".to_owned());
        }
        let one = BigUint::from(1u8);
        if g <= one || g >= p || y <= one || y >= p {
            return Err("invalid DSA generator or public value".to_owned());
        }
        let components =
            dsa::Components::from_components(p, q, g).map_err(|_| "invalid DSA parameters".to_owned())?;
        // This also checks y^q = 1 (mod p), i.e. y lies in the subgroup.
        let key = dsa::VerifyingKey::from_components(components, y)
            .map_err(|_| "invalid DSA public value".to_owned())?;
        PublicKey::Dsa(key)
    };
    Ok(key)
}

/// Bounds-checked reader for SSH wire-format `string` and `mpint` fields.
struct WireReader<'a> {
    rest: &'a [u8],
}

impl<'a> WireReader<'a> {
    fn string(&mut self) -> Result<&'a [u8], String> {
        let (len, after) =
            self.rest.split_first_chunk::<4>().ok_or_else(|| "key data truncated".to_owned())?;
        // A u32 always fits in usize on the targets we build for; if it did not,
        // the length could not be satisfied anyway.
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        if len > after.len() {
            return Err("key data truncated".to_owned());
        }
        let (value, rest) = after.split_at(len);
        self.rest = rest;
        Ok(value)
    }

    fn mpint(&mut self) -> Result<BigUint, String> {
        let bytes = self.string()?;
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            return Err("negative integer in key data".to_owned());
        }
        Ok(BigUint::from_bytes_be(bytes))
    }

    fn finish(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes after key data".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::RsaPrivateKey;

    const TESTER_RSA: &str = include_str!("../../tests/fixtures/keys/tester_rsa");
    const TESTER_RSA_PUB: &str = include_str!("../../tests/fixtures/keys/tester_rsa.pub");
    const OTHER_RSA: &str = include_str!("../../tests/fixtures/keys/other_rsa");
    const OTHER_RSA_PUB: &str = include_str!("../../tests/fixtures/keys/other_rsa.pub");
    const TESTER_DSA_PUB: &str = include_str!("../../tests/fixtures/keys/tester_dsa.pub");

    /// A request as captured from a real client.
    struct Captured {
        method: &'static str,
        url: &'static str,
        date: &'static str,
        authorization: &'static str,
    }

    // Captured from sdc-clients 13.0.6 (smartdc-auth 2.6.0, sshpk 1.18.0) with
    // `imgapi.createClient({user: 'tester', sign: imgapi.cliSigner({keyId:
    // <key path>, user: 'tester', algorithm})})` and `client.ping()`, by
    // node/sign-with-sdc-clients.js against a local HTTP server.
    const SDC_RSA_SHA256: Captured = Captured {
        method: "GET",
        url: "/ping",
        date: "Sun, 22 Nov 2026 12:13:36 GMT",
        authorization: "Signature keyId=\"tester\",algorithm=\"rsa-sha256\",signature=\"S33hQsT0zemeYnCCF9aZDR5wnNdzozg1n9iZdZDzKUCi2Ni66rEvwwP9wlr8n4p9fIZFQFYAiR5Iez1clUmNBMg/I/j4uOcvPAiEynU2NAVIQN/W3N5729iRcUiSdhBja+A3dE/pfxjh+PIwek9SJRGFqBrGI4vzNZrp823MZMI61rSnK9p+qhBcn6fcQ5bhOaRu9hD1mJ0XAU6TezGGkFj1wRXa+Ysnd6hSuq3zLrvfx81cMW7DdTSDNN521YycgiZaNamlL+6nU6O1LR/rXhgfzrHbx64uMV2V/+rIcs+qVWlvRYNYrRWQjaD3Y0I5wJm9qhZ5qJx2lo0QDssTpg==\"",
    };
    const SDC_RSA_SHA1: Captured = Captured {
        method: "GET",
        url: "/ping",
        date: "Sun, 22 Nov 2026 12:13:36 GMT",
        authorization: "Signature keyId=\"tester\",algorithm=\"rsa-sha1\",signature=\"FeUSigshDFAqH3TpQ/DCWWqum31SePqdcaKi0bLSpxu1mATBts9PKYjg/4vLJwIq9lMGzJPh8gzKeSf07it/FWppptznW6aIQXnDw/gB6NFSSp5plS/nNFylgK050yKdXyVzS4+VPaOzTk1myBUed4AZ990mWcby8jxCYiEYb7nLmoxyW8JQQ1neRTufNjzz4EuBq0TNWMWWbFBublriJFjDL5JT46YxZOpfVNB9ajNExygU+Oak7LsZsyqTPQ004fovU8sbSDR+chs41C19HDOUcM3t3aDLtxbbJnoW5xSC3xUJuO137IbGlKVbQF9JOIui3BVrk1n4d8SuM1LFng==\"",
    };
    const SDC_DSA_SHA1: Captured = Captured {
        method: "GET",
        url: "/ping",
        date: "Sun, 22 Nov 2026 12:13:37 GMT",
        authorization: "Signature keyId=\"tester\",algorithm=\"dsa-sha1\",signature=\"MCwCFCyOjXGCjbNlCfiR5Fujp9aNH52PAhRW1a3C35CLIIlqa8I9rXHUqC8ULA==\"",
    };
    // Captured from smartdc-auth 2.6.0 `requestSigner` + http-signature 1.4.0
    // (`writeTarget('GET', ...)`, `writeDateHeader()`), by
    // node/sign-with-request-signer.js: the `/<user>/keys/<md5 fp>` keyId shape.
    const REQUEST_SIGNER_RSA_SHA256: Captured = Captured {
        method: "GET",
        url: "/images?account=tester",
        date: "Sun, 22 Nov 2026 12:13:45 GMT",
        authorization: "Signature keyId=\"/tester/keys/8a:10:a6:3a:bb:bc:27:99:68:17:4c:a8:ed:ca:8e:62\",algorithm=\"rsa-sha256\",headers=\"(request-target) date\",signature=\"l+zvlyvfLBVWigPZqO4C44me5laYtGjGKXGCrVZNg6V0jkaa3nRq0JiqlzgSmyrw4Mjhya/+jvdivr89H/MLVlcFt0kghIM5wxh7OGm1FxLpzPrB6oitU+8Y/mIPq9NKTgcKGFnRzaqk4Fs1GOY8M18gd1bxN0QLkiC0BB+vsX7KTBL5cY/Cpa4KoAGrm5Sl7M+JBU7+VTSpOxNsayy4g82ugs5QkYjPnn4HmMCIpVwQCM4ZJQUJBp9G3SUPXdbjJ0dkOKOsvW1xsR840vBk+8P8W13m30/oQ4jlt6zTDRCtm9mqTr2xUl7kgrJ7nNZ2OT+PTsrAIaJkyUX+CTpBJg==\"",
    };

    fn config(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(user, lines)| ((*user).to_owned(), lines.iter().map(|l| (*l).to_owned()).collect()))
            .collect()
    }

    /// Split off the `Signature ` scheme (the caller's job in the server).
    fn strip_scheme(authorization: &str) -> Option<&str> {
        let (scheme, params) = authorization.trim_start().split_once(' ')?;
        (scheme == "Signature").then_some(params)
    }

    fn key_count(keys: &AuthKeys, user: &str) -> usize {
        keys.users.get(user).map_or(0, Vec::len)
    }

    /// `tester` has the RSA and DSA fixture keys; `other` has its own RSA key.
    fn test_keys() -> AuthKeys {
        AuthKeys::from_config(&config(&[
            ("tester", &[TESTER_RSA_PUB, TESTER_DSA_PUB]),
            ("other", &[OTHER_RSA_PUB]),
        ]))
        .expect("fixture keys parse")
    }

    fn date(value: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc2822(value).expect("test date").with_timezone(&Utc)
    }

    /// Run `verify` on a request with the given headers (names lower-case).
    fn verify_with(
        authorization: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        keys: &AuthKeys,
        now: DateTime<Utc>,
    ) -> Result<String, SignatureError> {
        let lookup = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
        let req = SignedRequest { method, path_and_query: url, header: &lookup };
        let params = strip_scheme(authorization)
            .ok_or_else(|| SignatureError::Malformed("test: not a Signature authorization".to_owned()))?;
        verify(params, &req, keys, now)
    }

    fn verify_captured(
        c: &Captured,
        authorization: &str,
        keys: &AuthKeys,
        now: DateTime<Utc>,
    ) -> Result<String, SignatureError> {
        verify_with(
            authorization,
            c.method,
            c.url,
            &[("date", c.date), ("authorization", authorization)],
            keys,
            now,
        )
    }

    /// Flip one character of the base64 signature (well inside it, so the result
    /// is still canonical base64 and only the signature check can fail).
    fn tamper(authorization: &str) -> String {
        let start = authorization.find("signature=\"").expect("has signature") + 11 + 10;
        let mut bytes = authorization.as_bytes().to_vec();
        bytes[start] = if bytes[start] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).expect("ascii")
    }

    fn assert_captured_accepted(c: &Captured) {
        let keys = test_keys();
        assert_eq!(verify_captured(c, c.authorization, &keys, date(c.date)), Ok("tester".to_owned()));
    }

    fn assert_captured_clock_skew(c: &Captured) {
        let keys = test_keys();
        let signed = date(c.date);
        for offset in [301, -301] {
            assert_eq!(
                verify_captured(c, c.authorization, &keys, signed + chrono::Duration::seconds(offset)),
                Err(SignatureError::ClockSkew),
                "offset {offset}"
            );
        }
        // The bound itself is inclusive, like node's `skew > clockSkew`.
        for offset in [300, -300] {
            assert_eq!(
                verify_captured(c, c.authorization, &keys, signed + chrono::Duration::seconds(offset)),
                Ok("tester".to_owned()),
                "offset {offset}"
            );
        }
    }

    fn assert_captured_tampered(c: &Captured) {
        let keys = test_keys();
        assert_eq!(
            verify_captured(c, &tamper(c.authorization), &keys, date(c.date)),
            Err(SignatureError::BadSignature)
        );
        // A different but intact date also breaks the signature.
        let later = "Sun, 22 Nov 2026 12:14:00 GMT";
        assert_eq!(
            verify_with(c.authorization, c.method, c.url, &[("date", later)], &keys, date(later)),
            Err(SignatureError::BadSignature)
        );
    }

    fn assert_captured_other_user(c: &Captured) {
        let keys = test_keys();
        let as_stranger = c.authorization.replace("keyId=\"tester\"", "keyId=\"stranger\"");
        assert_eq!(verify_captured(c, &as_stranger, &keys, date(c.date)), Err(SignatureError::UnknownUser));
        // A configured user whose keys did not make the signature.
        let as_other = c.authorization.replace("keyId=\"tester\"", "keyId=\"other\"");
        assert_eq!(verify_captured(c, &as_other, &keys, date(c.date)), Err(SignatureError::BadSignature));
    }

    #[test]
    fn sdc_clients_rsa_sha256_accepted() {
        assert_captured_accepted(&SDC_RSA_SHA256);
    }

    #[test]
    fn sdc_clients_rsa_sha256_clock_skew() {
        assert_captured_clock_skew(&SDC_RSA_SHA256);
    }

    #[test]
    fn sdc_clients_rsa_sha256_tampered() {
        assert_captured_tampered(&SDC_RSA_SHA256);
    }

    #[test]
    fn sdc_clients_rsa_sha256_other_user() {
        assert_captured_other_user(&SDC_RSA_SHA256);
    }

    #[test]
    fn sdc_clients_rsa_sha1_accepted() {
        assert_captured_accepted(&SDC_RSA_SHA1);
    }

    #[test]
    fn sdc_clients_rsa_sha1_clock_skew() {
        assert_captured_clock_skew(&SDC_RSA_SHA1);
    }

    #[test]
    fn sdc_clients_rsa_sha1_tampered() {
        assert_captured_tampered(&SDC_RSA_SHA1);
    }

    #[test]
    fn sdc_clients_rsa_sha1_other_user() {
        assert_captured_other_user(&SDC_RSA_SHA1);
    }

    #[test]
    fn sdc_clients_dsa_sha1_accepted() {
        assert_captured_accepted(&SDC_DSA_SHA1);
    }

    #[test]
    fn sdc_clients_dsa_sha1_clock_skew() {
        assert_captured_clock_skew(&SDC_DSA_SHA1);
    }

    #[test]
    fn sdc_clients_dsa_sha1_tampered() {
        assert_captured_tampered(&SDC_DSA_SHA1);
    }

    #[test]
    fn sdc_clients_dsa_sha1_other_user() {
        assert_captured_other_user(&SDC_DSA_SHA1);
    }

    #[test]
    fn captured_signature_needs_the_matching_key_type() {
        // tester's RSA key alone cannot verify the DSA capture, and vice versa.
        let rsa_only = AuthKeys::from_config(&config(&[("tester", &[TESTER_RSA_PUB])])).expect("parses");
        let c = &SDC_DSA_SHA1;
        assert_eq!(
            verify_captured(c, c.authorization, &rsa_only, date(c.date)),
            Err(SignatureError::BadSignature)
        );
        let dsa_only = AuthKeys::from_config(&config(&[("tester", &[TESTER_DSA_PUB])])).expect("parses");
        let c = &SDC_RSA_SHA256;
        assert_eq!(
            verify_captured(c, c.authorization, &dsa_only, date(c.date)),
            Err(SignatureError::BadSignature)
        );
        // Claiming dsa-sha1 for an RSA signature fails too.
        let lying = c.authorization.replace("rsa-sha256", "dsa-sha1");
        assert_eq!(verify_captured(c, &lying, &test_keys(), date(c.date)), Err(SignatureError::BadSignature));
    }

    #[test]
    fn request_signer_key_path_and_request_target() {
        let c = &REQUEST_SIGNER_RSA_SHA256;
        let keys = test_keys();
        assert_eq!(verify_captured(c, c.authorization, &keys, date(c.date)), Ok("tester".to_owned()));
        // The method is lower-cased into the signing string, whatever its case.
        assert_eq!(
            verify_with(c.authorization, "get", c.url, &[("date", c.date)], &keys, date(c.date)),
            Ok("tester".to_owned())
        );
        // (request-target) binds the method, path and query.
        for (method, url) in
            [("GET", "/images?account=other"), ("GET", "/images"), ("DELETE", "/images?account=tester")]
        {
            assert_eq!(
                verify_with(c.authorization, method, url, &[("date", c.date)], &keys, date(c.date)),
                Err(SignatureError::BadSignature),
                "{method} {url}"
            );
        }
        assert_eq!(
            verify_captured(c, c.authorization, &keys, date(c.date) + chrono::Duration::seconds(301)),
            Err(SignatureError::ClockSkew)
        );
    }

    #[test]
    fn key_id_shapes() {
        let keys = test_keys();
        let fp = "8a:10:a6:3a:bb:bc:27:99:68:17:4c:a8:ed:ca:8e:62";
        assert_eq!(resolve_user("tester", &keys).map(|u| u.0), Some("tester"));
        assert_eq!(resolve_user(&format!("/tester/keys/{fp}"), &keys).map(|u| u.0), Some("tester"));
        // The fingerprint is not used to pick a key, so any non-empty one will do.
        assert_eq!(resolve_user("/other/keys/SHA256:abc", &keys).map(|u| u.0), Some("other"));
        for bad in [
            "",
            "/tester",
            "/tester/keys/",
            "//keys/x",
            "tester/keys/x",
            "/tester/users/sub/keys/x",
            "/tester/sub/keys/x",
            "/stranger/keys/x",
            "TESTER",
        ] {
            assert!(resolve_user(bad, &keys).is_none(), "{bad:?}");
        }
    }

    /// Sign `signing_string` with the fixture private key using the `rsa` crate.
    fn rust_sign(private_pem: &str, algorithm: Algorithm, signing_string: &str) -> String {
        let key = RsaPrivateKey::from_pkcs1_pem(private_pem).expect("fixture private key");
        let (prefix, hashed): (&[u8], Vec<u8>) = match algorithm {
            Algorithm::RsaSha1 => (SHA1_DIGEST_INFO, Sha1::digest(signing_string).to_vec()),
            Algorithm::RsaSha256 => (SHA256_DIGEST_INFO, Sha256::digest(signing_string).to_vec()),
            Algorithm::DsaSha1 => unreachable!("RSA only"),
        };
        let scheme = Pkcs1v15Sign { hash_len: Some(hashed.len()), prefix: prefix.into() };
        B64.encode(key.sign(scheme, &hashed).expect("sign"))
    }

    #[test]
    fn rust_signed_round_trip() {
        let keys = test_keys();
        let now = Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap();
        let date_value = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        for (algorithm, name) in [(Algorithm::RsaSha256, "rsa-sha256"), (Algorithm::RsaSha1, "RSA-SHA1")] {
            let sig = rust_sign(TESTER_RSA, algorithm, &format!("date: {date_value}"));
            let authz = format!("Signature keyId=\"tester\",algorithm=\"{name}\",signature=\"{sig}\"");
            assert_eq!(
                verify_with(&authz, "POST", "/images", &[("date", &date_value)], &keys, now),
                Ok("tester".to_owned()),
                "{name}"
            );
            // Same signature under the wrong hash name.
            let swapped = if algorithm == Algorithm::RsaSha1 {
                authz.replace("RSA-SHA1", "rsa-sha256")
            } else {
                authz.replace("rsa-sha256", "rsa-sha1")
            };
            assert_eq!(
                verify_with(&swapped, "POST", "/images", &[("date", &date_value)], &keys, now),
                Err(SignatureError::BadSignature),
                "{name} swapped"
            );
        }
        // Unpadded base64 is accepted too.
        let sig = rust_sign(TESTER_RSA, Algorithm::RsaSha256, &format!("date: {date_value}"));
        let authz = format!(
            "Signature keyId=\"tester\",algorithm=\"rsa-sha256\",signature=\"{}\"",
            sig.trim_end_matches('=')
        );
        assert_eq!(
            verify_with(&authz, "GET", "/ping", &[("date", &date_value)], &keys, now),
            Ok("tester".to_owned())
        );
    }

    #[test]
    fn signature_length_relative_to_modulus() {
        let keys = test_keys();
        // Found offline: this date's rsa-sha256 signature with the fixture key
        // starts with a zero byte.
        let d = "Sat, 02 Jan 2027 03:04:55 GMT";
        let now = date(d);
        let full = B64.decode(rust_sign(TESTER_RSA, Algorithm::RsaSha256, &format!("date: {d}"))).unwrap();
        assert_eq!((full.len(), full[0]), (256, 0));
        let check = |sig: &[u8]| {
            let authz = format!(
                "Signature keyId=\"tester\",algorithm=\"rsa-sha256\",signature=\"{}\"",
                B64.encode(sig)
            );
            verify_with(&authz, "GET", "/ping", &[("date", d)], &keys, now)
        };
        assert_eq!(check(&full), Ok("tester".to_owned()));
        assert_eq!(check(&full[1..]), Ok("tester".to_owned()));
        let mut longer = vec![0u8];
        longer.extend_from_slice(&full);
        assert_eq!(check(&longer), Err(SignatureError::BadSignature));
        assert_eq!(check(&[]), Err(SignatureError::Malformed("signature was not specified".to_owned())));
        assert_eq!(check(&[0]), Err(SignatureError::BadSignature));
    }

    #[test]
    fn every_key_of_the_user_is_tried() {
        let now = Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap();
        let date_value = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let sig = rust_sign(OTHER_RSA, Algorithm::RsaSha256, &format!("date: {date_value}"));
        let authz = format!("Signature keyId=\"multi\",algorithm=\"rsa-sha256\",signature=\"{sig}\"");
        for order in
            [[TESTER_DSA_PUB, TESTER_RSA_PUB, OTHER_RSA_PUB], [OTHER_RSA_PUB, TESTER_DSA_PUB, TESTER_RSA_PUB]]
        {
            let keys = AuthKeys::from_config(&config(&[("multi", &order)])).expect("parses");
            assert_eq!(key_count(&keys, "multi"), 3);
            assert_eq!(
                verify_with(&authz, "GET", "/ping", &[("date", &date_value)], &keys, now),
                Ok("multi".to_owned())
            );
        }
        // A user with only comment lines has no keys, so nothing verifies.
        let keys = AuthKeys::from_config(&config(&[("multi", &["# none yet", ""])])).unwrap();
        assert_eq!(key_count(&keys, "multi"), 0);
        assert_eq!(
            verify_with(&authz, "GET", "/ping", &[("date", &date_value)], &keys, now),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn our_clients_signatures_are_accepted_and_valid_for_their_own_request_only() {
        let keys = test_keys();
        let now = Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap();
        let d = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let key = imgapi_client::SigningKey::from_pem(TESTER_RSA).unwrap();
        let parts = imgapi_client::SignedParts {
            target: "delete /images/abc",
            host: "imgapi.example:8080",
            date: &d,
        };
        let authz = key.authorization("tester", &parts).unwrap();
        let headers = [("date", d.as_str()), ("host", "imgapi.example:8080")];
        assert_eq!(
            verify_with(&authz, "DELETE", "/images/abc", &headers, &keys, now),
            Ok("tester".to_owned())
        );
        // Replayed within the skew window as another request, or to another server: refused.
        for (method, url, host) in [
            ("GET", "/images/abc", "imgapi.example:8080"),
            ("DELETE", "/images/other", "imgapi.example:8080"),
            ("DELETE", "/images/abc?force=true", "imgapi.example:8080"),
            ("DELETE", "/images/abc", "mirror.example:8080"),
        ] {
            let headers = [("date", d.as_str()), ("host", host)];
            assert_eq!(
                verify_with(&authz, method, url, &headers, &keys, now),
                Err(SignatureError::BadSignature),
                "{method} {url} to {host}"
            );
        }
    }

    #[test]
    fn signed_headers_list_and_request_target() {
        let keys = test_keys();
        let now = Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap();
        let d = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let signing = format!("date: {d}\n(request-target): put /images/abc?channel=dev\ncontent-md5: xyz==");
        let sig = rust_sign(TESTER_RSA, Algorithm::RsaSha256, &signing);
        let authz = format!(
            "Signature keyId=\"tester\",algorithm=\"rsa-sha256\",headers=\"Date (request-target) Content-MD5\",signature=\"{sig}\""
        );
        let headers = [("date", d.as_str()), ("content-md5", "xyz==")];
        assert_eq!(
            verify_with(&authz, "PUT", "/images/abc?channel=dev", &headers, &keys, now),
            Ok("tester".to_owned())
        );
        assert_eq!(
            verify_with(&authz, "PUT", "/images/abc?channel=dev", &[("date", &d)], &keys, now),
            Err(SignatureError::MissingHeader("content-md5".to_owned()))
        );
        assert_eq!(
            verify_with(&authz, "PUT", "/images/abc", &headers, &keys, now),
            Err(SignatureError::BadSignature)
        );
        // Signing without the date is refused even if the signature is good.
        let no_date = "(request-target): get /ping";
        let sig = rust_sign(TESTER_RSA, Algorithm::RsaSha256, no_date);
        let authz = format!(
            "Signature keyId=\"tester\",algorithm=\"rsa-sha256\",headers=\"(request-target)\",signature=\"{sig}\""
        );
        assert_eq!(
            verify_with(&authz, "GET", "/ping", &[("date", &d)], &keys, now),
            Err(SignatureError::MissingHeader("date".to_owned()))
        );
        // Later-draft pseudo-headers are not supported.
        let authz = format!(
            "Signature keyId=\"tester\",algorithm=\"rsa-sha256\",headers=\"date (created)\",signature=\"{sig}\""
        );
        assert!(matches!(
            verify_with(&authz, "GET", "/ping", &[("date", &d)], &keys, now),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn x_date_is_the_default_when_present() {
        let keys = test_keys();
        let now = Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap();
        let d = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        // A stale `date` (e.g. rewritten by a proxy) does not matter once x-date is there.
        let stale = "Mon, 01 Jan 2001 00:00:00 GMT";
        let sig = rust_sign(TESTER_RSA, Algorithm::RsaSha256, &format!("x-date: {d}"));
        let authz = format!("Signature keyId=\"tester\",algorithm=\"rsa-sha256\",signature=\"{sig}\"");
        let headers = [("date", stale), ("x-date", d.as_str())];
        assert_eq!(verify_with(&authz, "GET", "/ping", &headers, &keys, now), Ok("tester".to_owned()));
        // Signing only `date` while an x-date is present is refused.
        let sig = rust_sign(TESTER_RSA, Algorithm::RsaSha256, &format!("date: {d}"));
        let authz = format!(
            "Signature keyId=\"tester\",algorithm=\"rsa-sha256\",headers=\"date\",signature=\"{sig}\""
        );
        let headers = [("date", d.as_str()), ("x-date", d.as_str())];
        assert_eq!(
            verify_with(&authz, "GET", "/ping", &headers, &keys, now),
            Err(SignatureError::MissingHeader("x-date".to_owned()))
        );
        // An empty x-date counts as absent (node's truthiness test).
        let headers = [("date", d.as_str()), ("x-date", "")];
        assert_eq!(verify_with(&authz, "GET", "/ping", &headers, &keys, now), Ok("tester".to_owned()));
    }

    #[test]
    fn date_header_problems() {
        let keys = test_keys();
        let c = &SDC_RSA_SHA256;
        let now = date(c.date);
        assert_eq!(
            verify_with(c.authorization, c.method, c.url, &[], &keys, now),
            Err(SignatureError::MissingHeader("date".to_owned()))
        );
        for bad in ["yesterday", "Sun, 32 Nov 2026 12:13:36 GMT", "\u{e9}t\u{e9}"] {
            assert_eq!(
                verify_with(c.authorization, c.method, c.url, &[("date", bad)], &keys, now),
                Err(SignatureError::InvalidDate(bad.to_owned())),
                "{bad:?}"
            );
        }
        // RFC 3339 parses (then fails the signature, which was over the RFC 1123 text).
        assert_eq!(
            verify_with(c.authorization, c.method, c.url, &[("date", "2026-11-22T12:13:36Z")], &keys, now),
            Err(SignatureError::BadSignature)
        );
        // Far-away dates are skew, not a panic.
        for far in ["Fri, 01 Jan 1971 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            assert_eq!(
                verify_with(c.authorization, c.method, c.url, &[("date", far)], &keys, now),
                Err(SignatureError::ClockSkew),
                "{far}"
            );
        }
    }

    #[test]
    fn algorithms() {
        let keys = test_keys();
        let c = &SDC_RSA_SHA256;
        for alg in [
            "rsa-sha512",
            "hmac-sha256",
            "hmac-sha1",
            "ecdsa-sha256",
            "ed25519-sha512",
            "dsa-sha256",
            "rsa",
            "rsa-sha256-extra",
        ] {
            let authz = c.authorization.replace("algorithm=\"rsa-sha256\"", &format!("algorithm=\"{alg}\""));
            assert_eq!(
                verify_captured(c, &authz, &keys, date(c.date)),
                Err(SignatureError::UnsupportedAlgorithm(alg.to_owned())),
                "{alg}"
            );
        }
        let upper = c.authorization.replace("rsa-sha256", "RSA-SHA256");
        assert_eq!(verify_captured(c, &upper, &keys, date(c.date)), Ok("tester".to_owned()));
    }

    #[test]
    fn malformed_params() {
        let keys = test_keys();
        let c = &SDC_RSA_SHA256;
        let now = date(c.date);
        let lookup = |name: &str| (name == "date").then(|| c.date.to_owned());
        let req = SignedRequest { method: c.method, path_and_query: c.url, header: &lookup };
        let good_sig = "signature=\"S33h\"";
        let cases = [
            String::new(),
            "   ".to_owned(),
            "keyId".to_owned(),
            "keyId=".to_owned(),
            "keyId=tester".to_owned(),
            "keyId=\"tester".to_owned(),
            "keyId=\"tester\"algorithm=\"rsa-sha256\"".to_owned(),
            "keyId=\"tester\",,algorithm=\"rsa-sha256\"".to_owned(),
            "keyId=\"tester\",".to_owned(),
            ",keyId=\"tester\"".to_owned(),
            "key-id=\"tester\"".to_owned(),
            "k\u{e9}yId=\"tester\"".to_owned(),
            "=\"tester\"".to_owned(),
            format!("keyId=\"tester\",keyId=\"other\",algorithm=\"rsa-sha256\",{good_sig}"),
            format!("algorithm=\"rsa-sha256\",{good_sig}"),
            format!("keyId=\"\",algorithm=\"rsa-sha256\",{good_sig}"),
            format!("keyId=\"tester\",{good_sig}"),
            "keyId=\"tester\",algorithm=\"rsa-sha256\"".to_owned(),
            "keyId=\"tester\",algorithm=\"rsa-sha256\",signature=\"\"".to_owned(),
            "keyId=\"tester\",algorithm=\"rsa-sha256\",signature=\"not base64!\"".to_owned(),
            "keyId=\"tester\",algorithm=\"rsa-sha256\",signature=\"\u{e9}\u{e9}\u{e9}\u{e9}\"".to_owned(),
        ];
        for params in &cases {
            assert!(
                matches!(verify(params, &req, &keys, now), Err(SignatureError::Malformed(_))),
                "{params:?} gave {:?}",
                verify(params, &req, &keys, now)
            );
        }
        // Tolerated: whitespace around commas, numeric values, unknown params.
        let captured = strip_scheme(c.authorization).expect("scheme");
        let spaced = captured.replace("\",", "\" ,  ");
        assert_eq!(verify(&spaced, &req, &keys, now), Ok("tester".to_owned()));
        let extra = format!("{captured},created=1700000000,ext=\"x\"");
        assert_eq!(verify(&extra, &req, &keys, now), Ok("tester".to_owned()));
    }

    #[test]
    fn non_ascii_request_parts_do_not_panic() {
        let keys = test_keys();
        let c = &SDC_RSA_SHA256;
        let now = date(c.date);
        let authz = c.authorization.replace("\"tester\"", "\"t\u{e9}ster\u{1f600}\"");
        assert_eq!(verify_captured(c, &authz, &keys, now), Err(SignatureError::UnknownUser));
        let authz = c.authorization.replace("keyId=", "headers=\"date \u{1f600}-h\u{e9}\",keyId=");
        assert_eq!(
            verify_with(
                &authz,
                "G\u{c9}T",
                "/p\u{e9}ng?\u{1f600}",
                &[("date", c.date), ("\u{1f600}-h\u{e9}", "v\u{e9}")],
                &keys,
                now
            ),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn config_keys_parse() {
        let keys = AuthKeys::from_config(&config(&[
            (
                "tester",
                &["# tester's keys", "", "   ", TESTER_RSA_PUB, &format!("{}\r\n", TESTER_DSA_PUB.trim())],
            ),
            // Several lines in one entry, and a key without a comment.
            (
                "other",
                &[&format!(
                    "# multi-line entry\n{}\n",
                    OTHER_RSA_PUB.rsplit_once(' ').expect("has comment").0
                )],
            ),
        ]))
        .expect("parses");
        assert!(!keys.is_empty());
        assert_eq!(keys.users.keys().collect::<Vec<_>>(), ["other", "tester"]);
        assert_eq!(key_count(&keys, "tester"), 2);
        assert_eq!(key_count(&keys, "other"), 1);
        assert_eq!(key_count(&keys, "nobody"), 0);

        let empty = AuthKeys::from_config(&BTreeMap::new()).expect("empty config");
        assert!(empty.is_empty());
        assert!(AuthKeys::default().is_empty());
    }

    fn blob_line(key_type: &str, blob: &[u8]) -> String {
        format!("{key_type} {} x", B64.encode(blob))
    }

    fn wire_string(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn fixture_blob(line: &str) -> Vec<u8> {
        B64.decode(line.split_ascii_whitespace().nth(1).unwrap()).unwrap()
    }

    #[test]
    fn config_key_errors_name_user_and_line() {
        let rsa_blob = fixture_blob(TESTER_RSA_PUB);
        let mut type_mismatch = Vec::new();
        wire_string(&mut type_mismatch, b"ssh-dss");
        type_mismatch.extend_from_slice(&rsa_blob[11..]);
        let mut trailing = rsa_blob.clone();
        trailing.push(0);
        let mut absurd = Vec::new();
        wire_string(&mut absurd, b"ssh-rsa");
        absurd.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        let mut negative = Vec::new();
        wire_string(&mut negative, b"ssh-rsa");
        wire_string(&mut negative, &[0x81]);
        wire_string(&mut negative, &[0x00, 0xc5, 0x01]);
        let mut small = Vec::new();
        wire_string(&mut small, b"ssh-rsa");
        wire_string(&mut small, &[0x01, 0x00, 0x01]);
        wire_string(&mut small, &[0x00, 0xc5, 0x01, 0x77]);
        let mut bad_exponent = Vec::new();
        wire_string(&mut bad_exponent, b"ssh-rsa");
        wire_string(&mut bad_exponent, &[0x01]);
        bad_exponent.extend_from_slice(&rsa_blob[11 + 7..]);
        let mut tiny_dsa = Vec::new();
        wire_string(&mut tiny_dsa, b"ssh-dss");
        for part in [&[0x17u8][..], &[0x0b], &[0x02], &[0x03]] {
            wire_string(&mut tiny_dsa, part);
        }
        // The fixture DSA key with its public value replaced by 2 (not in the subgroup).
        let dsa_blob = fixture_blob(TESTER_DSA_PUB);
        let mut bad_y = dsa_blob[..dsa_blob.len() - (4 + 129)].to_vec();
        wire_string(&mut bad_y, &[0x02]);
        let mut good_y_check = dsa_blob[..dsa_blob.len() - (4 + 129)].to_vec();
        good_y_check.extend_from_slice(&dsa_blob[dsa_blob.len() - (4 + 129)..]);
        assert_eq!(good_y_check, dsa_blob, "fixture DSA y is a 129-byte mpint");

        let bad_lines = [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnDgSvZZ5SIHPGkXAbFyyxc8qq6Nm6KcWPvJtWBCdAm x".to_owned(),
            "ecdsa-sha2-nistp256 AAAA x".to_owned(),
            "AAAAB3NzaC1yc2EAAAADAQABAAABAQ".to_owned(),
            "ssh-rsa".to_owned(),
            "ssh-rsa not*base64 x".to_owned(),
            blob_line("ssh-rsa", &rsa_blob[..rsa_blob.len() - 1]),
            blob_line("ssh-rsa", &rsa_blob[..3]),
            blob_line("ssh-dss", &rsa_blob),
            blob_line("ssh-rsa", &type_mismatch),
            blob_line("ssh-rsa", &trailing),
            blob_line("ssh-rsa", &absurd),
            blob_line("ssh-rsa", &negative),
            blob_line("ssh-rsa", &small),
            blob_line("ssh-rsa", &bad_exponent),
            blob_line("ssh-dss", &tiny_dsa),
            blob_line("ssh-dss", &bad_y),
        ];
        for bad in &bad_lines {
            let err = AuthKeys::from_config(&config(&[
                ("good", &[TESTER_RSA_PUB]),
                ("tester", &["# ok", TESTER_RSA_PUB, bad]),
            ]))
            .expect_err(bad);
            assert_eq!((err.user.as_str(), err.line), ("tester", 3), "{bad}");
            let shown = err.to_string();
            assert!(shown.starts_with("invalid public key for user \"tester\", line 3: "), "{shown}");
        }
    }

    #[test]
    fn config_line_numbers() {
        let line_of = |entries: &[&str]| {
            AuthKeys::from_config(&config(&[("u", entries)])).expect_err("has a bad line").line
        };
        // One key per entry: the line number is the entry's position, blank
        // entries and trailing newlines included.
        assert_eq!(line_of(&["garbage"]), 1);
        assert_eq!(line_of(&[TESTER_RSA_PUB, "", "# c", "garbage"]), 4);
        // Multi-line entries contribute each of their lines.
        assert_eq!(line_of(&[&format!("# a\n{TESTER_RSA_PUB}"), "\n\ngarbage\n"]), 5);
    }

    /// Tiny deterministic PRNG for the no-panic sweeps (no `rand` dependency).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }
    }

    #[test]
    fn no_panic_on_mangled_keys() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for line in [TESTER_RSA_PUB, TESTER_DSA_PUB] {
            let key_type = line.split_ascii_whitespace().next().unwrap();
            let blob = fixture_blob(line);
            for cut in 0..blob.len() {
                let _ = parse_key_line(&blob_line(key_type, &blob[..cut]));
            }
            for _ in 0..300 {
                let mut mangled = blob.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(mangled.len());
                    mangled[at] = u8::try_from(rng.next() & 0xff).unwrap();
                }
                let _ = parse_key_line(&blob_line(key_type, &mangled));
            }
        }
    }

    #[test]
    fn no_panic_on_mangled_authorization() {
        let keys = test_keys();
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let alphabet: Vec<char> = "\"=, aA0+/\u{e9}\u{1f600}()\t-".chars().collect();
        for c in [&SDC_RSA_SHA256, &SDC_DSA_SHA1, &REQUEST_SIGNER_RSA_SHA256] {
            let base: Vec<char> = c.authorization.chars().collect();
            for cut in 0..base.len() {
                let s: String = base[..cut].iter().collect();
                let _ = verify_captured(c, &s, &keys, date(c.date));
            }
            for _ in 0..300 {
                let mut chars = base.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(chars.len());
                    chars[at] = alphabet[rng.below(alphabet.len())];
                }
                let s: String = chars.into_iter().collect();
                let _ = verify_captured(c, &s, &keys, date(c.date));
            }
        }
    }
}
