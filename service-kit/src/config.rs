//! Config files (JSON) with errors a person can act on: which file, which key (the path to it,
//! `instances.qemu.binary`), and what is wrong with it (serde's message, with the line and the
//! column). Each service declares its config as serde types with `deny_unknown_fields`, so a
//! misspelt key is named too, and adds its own checks with [`ConfigError::invalid`].

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or not the config's shape. `key` is the path to the value at fault (empty at
    /// the top level).
    #[error("invalid config file {path}{}", key_suffix(key))]
    Parse {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// Well-formed, but a value is not acceptable.
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// `, at KEY` when the fault is inside the config (serde's path: `.` or `?` when unknown).
fn key_suffix(key: &str) -> String {
    if key.is_empty() || key == "?" {
        String::new()
    } else {
        format!(", at {key}")
    }
}

impl ConfigError {
    /// A value of the config at `path` that the service does not accept.
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        ConfigError::Invalid { path: path.to_owned(), message: message.into() }
    }
}

/// The text of the config file at `path`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })
}

/// Parses config text; `origin` names it in errors (a file's path, or what the text is).
pub fn parse<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    let mut json = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::Parse { path: origin.to_owned(), key, source: e.into_inner() }
    })?;
    // Trailing garbage after the object.
    json.end().map_err(|source| ConfigError::Parse {
        path: origin.to_owned(),
        key: String::new(),
        source,
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        binary: String,
    }

    fn error(text: &str) -> String {
        crate::ErrorChain(&parse::<Outer>(text, Path::new("/etc/x.json")).unwrap_err()).to_string()
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_place() {
        let e = error(r#"{"name": "a", "inner": {"binary": 5}}"#);
        assert!(e.starts_with("invalid config file /etc/x.json, at inner.binary: invalid type"), "{e}");
        assert!(e.contains("line 1 column"), "{e}");
        let e = error(r#"{"name": "a", "inner": {"bin": "x"}}"#);
        assert!(e.contains("at inner.bin: unknown field `bin`, expected `binary`"), "{e}");
        let e = error(r#"{"inner": null}"#);
        assert!(e.contains(": missing field `name`"), "{e}");
        assert!(!e.contains(": : "), "{e}");
        let e = error(r#"{"name": "a"} x"#);
        assert!(e.contains("trailing characters"), "{e}");
    }

    #[test]
    fn a_good_config_parses() {
        let config: Outer = parse(r#"{"name": "a", "inner": {"binary": "/b"}}"#, Path::new("t")).unwrap();
        assert_eq!(config.inner.unwrap().binary, "/b");
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let e = read(Path::new("/nonexistent/config.json")).unwrap_err();
        assert_eq!(e.to_string(), "cannot read config file /nonexistent/config.json");
    }
}
