//! Query-string parameters as restify's `queryParser` gives them to sdc-imgapi: keys stay flat
//! (`tag.role` is a literal key), a repeated key has several values, and both `&` and `;`
//! separate pairs (the Go server's README uploads with `?sha1=...;compression=gzip`).

use serde_json::Value;

/// The decoded query parameters of one request, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// A parameter whose value is not what the endpoint accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    pub field: String,
    pub message: String,
}

impl Params {
    pub fn parse(query: &str) -> Self {
        let pairs = query
            .split(['&', ';'])
            .filter(|piece| !piece.is_empty())
            .flat_map(|piece| form_urlencoded::parse(piece.as_bytes()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Params { pairs }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every `(suffix, value)` for keys `prefix<suffix>`, e.g. the `tag.KEY` filters.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.pairs.iter().filter_map(move |(k, v)| k.strip_prefix(prefix).map(|key| (key, v.as_str())))
    }

    /// A `true`/`false` parameter; absent is `None`.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ParamError> {
        match self.get(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ParamError {
                field: key.to_string(),
                message: format!("invalid \"{key}\" value: {} (must be true or false)", json_str(other)),
            }),
        }
    }

    /// A UUID parameter (lower-case, as sdc-imgapi's validator requires).
    pub fn uuid(&self, key: &str) -> Result<Option<uuid::Uuid>, ParamError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => parse_lower_uuid(value).map(Some).ok_or_else(|| ParamError {
                field: key.to_string(),
                message: format!("invalid \"{key}\": not a UUID: {}", json_str(value)),
            }),
        }
    }
}

/// Parses a UUID in the canonical lower-case hyphenated form only.
pub fn parse_lower_uuid(s: &str) -> Option<uuid::Uuid> {
    let canonical = s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    canonical.then(|| uuid::Uuid::parse_str(s).ok()).flatten()
}

/// A string quoted as JSON, for error messages that show user input.
pub fn json_str(s: &str) -> String {
    Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_ampersand_and_semicolon_and_keeps_repeats() {
        let p = Params::parse("sha1=abc;compression=gzip&tag.role=db&tag.x=1&billing_tag=a&billing_tag=b");
        assert_eq!(p.get("sha1"), Some("abc"));
        assert_eq!(p.get("compression"), Some("gzip"));
        assert_eq!(p.all("billing_tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.with_prefix("tag.").collect::<Vec<_>>(), [("role", "db"), ("x", "1")]);
        assert_eq!(p.get("missing"), None);
    }

    #[test]
    fn decodes_percent_and_plus() {
        let p = Params::parse("name=%7Ebase+64&marker=2026-01-01T00%3A00%3A00Z&empty=&flag");
        assert_eq!(p.get("name"), Some("~base 64"));
        assert_eq!(p.get("marker"), Some("2026-01-01T00:00:00Z"));
        assert_eq!(p.get("empty"), Some(""));
        assert_eq!(p.get("flag"), Some(""));
    }

    #[test]
    fn typed_values() {
        let p = Params::parse("a=true&b=false&c=maybe&u=6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b&v=6DE01E97-D7EC-4906-BD8B-CB4EAFDB7C8B");
        assert_eq!(p.bool("a"), Ok(Some(true)));
        assert_eq!(p.bool("b"), Ok(Some(false)));
        assert_eq!(p.bool("z"), Ok(None));
        assert_eq!(p.bool("c").unwrap_err().field, "c");
        assert!(p.uuid("u").unwrap().is_some());
        assert!(p.uuid("v").is_err());
    }

    #[test]
    fn never_panics_on_garbage() {
        for q in ["%", "%%%", "=&=;;&", "a=%ff%fe", "\u{0}=\u{0}", "tag.=x"] {
            let p = Params::parse(q);
            let _ = p.bool("a");
            let _ = p.uuid("a");
        }
    }
}
