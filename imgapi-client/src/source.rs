//! A source: the base URL of an IMGAPI server, the channel its URL names, and the credentials
//! to send. Sources are written as imgadm writes them, `http[s]://[user:pass@]host[:port][/prefix]
//! [?channel=NAME]`; the credentials are taken out of the URL as it is parsed, so that they
//! never reach a log, an error or an API answer ([`redact`] hides them in text that may hold
//! a URL that did not parse).

use std::fmt;

use url::Url;

use crate::Auth;

/// One IMGAPI server, as a client reaches it.
#[derive(Clone)]
pub struct Source {
    /// The base URL: without credentials, query or trailing slash.
    pub base: String,
    /// `?channel=` of the configured URL, sent with every request (as imgadm does).
    pub channel: Option<String>,
    pub auth: Auth,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("base", &self.base)
            .field("channel", &self.channel)
            .field("auth", &self.auth)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid source URL {url}: {message}")]
pub struct SourceError {
    /// The URL as given, redacted.
    pub url: String,
    pub message: String,
}

impl Source {
    /// Parses a source URL; `user:password@` in it becomes Basic auth.
    pub fn parse(text: &str) -> Result<Source, SourceError> {
        let invalid = |message: String| SourceError { url: redact(text), message };
        let mut url = Url::parse(text).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!("scheme {:?} is not http or https", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host".into()));
        }
        let auth = match (url.username(), url.password()) {
            ("", None) => Auth::None,
            (user, password) => Auth::Basic { user: decode(user), password: password.map(decode) },
        };
        let channel = url.query_pairs().find(|(k, _)| k == "channel").map(|(_, v)| v.into_owned());
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        let base = url.as_str().trim_end_matches('/').to_string();
        Ok(Source { base, channel, auth })
    }

    /// The same source with other credentials (explicit ones win over the URL's).
    pub fn with_auth(self, auth: Auth) -> Source {
        Source { auth, ..self }
    }

    /// Whether requests carry credentials.
    pub fn has_credentials(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `text` with the password of any `user:password@` replaced by `***`, for messages and logs.
/// The user name stays (it helps to tell sources apart and is no secret). Text that is not a
/// URL loses everything between `://` and the last `@` before the path instead, so that even a
/// URL too broken to parse never shows its password.
pub fn redact(text: &str) -> String {
    if let Ok(mut url) = Url::parse(text) {
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        return url.to_string();
    }
    let Some(scheme_end) = text.find("://").map(|i| i + 3) else { return text.to_string() };
    let authority_end = text[scheme_end..].find(['/', '?', '#']).map_or(text.len(), |i| scheme_end + i);
    match text[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &text[..scheme_end], &text[scheme_end + at + 1..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_channel_come_out_of_the_url() {
        let s = Source::parse("http://admin:s%40cret@images.example.com:8080/prefix/?channel=dev").unwrap();
        assert_eq!(s.base, "http://images.example.com:8080/prefix");
        assert_eq!(s.channel.as_deref(), Some("dev"));
        assert!(
            matches!(&s.auth, Auth::Basic { user, password: Some(p) } if user == "admin" && p == "s@cret")
        );
        assert!(!format!("{s:?}").contains("s@cret"), "{s:?}");
        let s = Source::parse("https://images.smartos.org").unwrap();
        assert_eq!(s.base, "https://images.smartos.org");
        assert!(!s.has_credentials());
        let s = Source::parse("http://user@h/").unwrap();
        assert!(matches!(&s.auth, Auth::Basic { user, password: None } if user == "user"));
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_passwords() {
        for bad in ["ftp://user:pw@h/", "not a url", "http://user:pw@", "file:///etc", "http://user:pw@:80"] {
            let e = Source::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn redact_keeps_the_user_and_hides_the_password() {
        assert_eq!(redact("http://admin:secret@h:8080/x?channel=a"), "http://admin:***@h:8080/x?channel=a");
        assert_eq!(redact("http://h/"), "http://h/");
        assert_eq!(redact("http://admin@h/"), "http://admin@h/");
        // Unparsable: everything before the host goes.
        assert_eq!(redact("http://admin:se cret@[bad/path@x"), "http://***@[bad/path@x");
        assert_eq!(redact("nothing here"), "nothing here");
    }
}
