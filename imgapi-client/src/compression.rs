//! How an image file is compressed (`files[0].compression`): what AddImageFile's `compression`
//! parameter takes and what an importer decompresses with. Servers record it and never look at
//! the bytes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Gzip,
    Bzip2,
    Xz,
    None,
}

impl Compression {
    /// Every value, for messages (`must be one of gzip, bzip2, xz, none`).
    pub const ALL: &'static str = "gzip, bzip2, xz, none";

    /// The protocol's name of a compression; `None` for anything else (case matters, as in
    /// imgmanifest).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "gzip" => Self::Gzip,
            "bzip2" => Self::Bzip2,
            "xz" => Self::Xz,
            "none" => Self::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Bzip2 => "bzip2",
            Self::Xz => "xz",
            Self::None => "none",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for c in [Compression::Gzip, Compression::Bzip2, Compression::Xz, Compression::None] {
            assert_eq!(Compression::parse(c.as_str()), Some(c));
            assert!(Compression::ALL.contains(c.as_str()));
        }
        for bad in ["GZIP", "lz4", "", "zstd"] {
            assert_eq!(Compression::parse(bad), None, "{bad}");
        }
    }
}
