//! An error with all its sources on one line, for logs and for messages where the whole story
//! helps (a failed import's job): `cannot store image X: write the image: No space left`.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources (`: source`). The workspace's errors never
/// put their source in their own message (a test below holds every crate to it), so this is
/// how a person sees the whole story; a source whose text the line already holds (other
/// crates' errors may repeat theirs) is skipped.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot store image")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("write failed")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_source_once() {
        let e = Outer(Middle(std::io::Error::other("disk on fire")));
        assert_eq!(ErrorChain(&e).to_string(), "cannot store image: write failed: disk on fire");
    }

    /// The `#[error("...")]` messages of the workspace's crates that also print the field that
    /// is their source (`{0}` of a `#[from]`/`#[source]` field, or `{source}`): printed through
    /// a chain, such an error says its cause twice.
    fn messages_that_repeat_their_source() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut found = Vec::new();
        let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path().join("src")))
            .filter(|p| p.is_dir())
            .collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let lines: Vec<&str> = text.lines().collect();
                    for (n, line) in lines.iter().enumerate() {
                        let Some(at) = line.find("#[error(\"") else { continue };
                        let message = &line[at..];
                        // The variant the attribute belongs to: up to the next attribute.
                        let variant: String = lines[n + 1..]
                            .iter()
                            .take(6)
                            .take_while(|l| !l.contains("#[error("))
                            .copied()
                            .collect::<Vec<_>>()
                            .join("\n");
                        let tuple_source = message.contains("{0}")
                            && (variant.contains("(#[from]") || variant.contains("(#[source]"));
                        let named_source = message.contains("{source") && variant.contains("source:");
                        if tuple_source || named_source {
                            found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        found
    }

    #[test]
    fn no_message_repeats_its_source() {
        let found = messages_that_repeat_their_source();
        assert!(
            found.is_empty(),
            "use #[error(transparent)] or drop the source from the message:\n{}",
            found.join("\n")
        );
    }
}
