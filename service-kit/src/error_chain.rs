//! An error with all its sources on one line, for logs and for messages where the whole story
//! helps (a failed import's job): `cannot store image X: write the image: No space left`.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources (`: source`). A source whose text the line
/// already holds is skipped: many errors repeat their source in their own message.
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
    #[error("write failed: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_source_once() {
        let e = Outer(Middle(std::io::Error::other("disk on fire")));
        assert_eq!(ErrorChain(&e).to_string(), "cannot store image: write failed: disk on fire");
    }
}
