//! The daemons' log set-up: stderr, at the config's level (`RUST_LOG` wins), text or JSON, and
//! colour only on a terminal: journald, `daemon -o` and log files get plain text.

use std::ffi::OsString;
use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive (`info`, `agent=debug`).
pub fn init(level: &str, format: Format) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let colour = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        Format::Json => builder.json().init(),
        Format::Text => builder.init(),
    }
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set to something (no-color.org).
pub fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a pipe or a file gets no escapes");
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
    }
}
