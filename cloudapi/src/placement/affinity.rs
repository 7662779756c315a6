//! Affinity rules between a new instance and those already on a host, in Triton's syntax:
//! `instance==NAME` (near), `instance!=NAME` (apart), `~` after the operator for a soft rule.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::Neighbour;

/// The word a rule starts with. Docker's `container` means `instance`; it is kept so that a
/// rule shows as its author wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Instance,
    Container,
}

/// What a rule wants of the instances it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// `==`: on a host with at least one of them.
    Together,
    /// `!=`: on a host with none of them.
    Apart,
}

/// One rule, e.g. `instance!=~db-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub keyword: Keyword,
    pub relation: Relation,
    /// `~`: a preference, which weighs; without it, a requirement, which refuses hosts.
    pub soft: bool,
    /// An alias, a uuid, or a glob over aliases and uuids where `*` stands for any run of
    /// characters.
    pub name: String,
}

const EXPECTED: &str =
    "expected instance==NAME, instance!=NAME, or ~ after the operator for a soft rule (instance==~NAME)";

/// No regex crate in the tree: globs cover what aliases need.
const REGEX_UNSUPPORTED: &str =
    "regular expressions (/.../) are not supported; use a glob, where * stands for any run of characters";

impl Affinity {
    pub fn parse(text: &str) -> Result<Affinity, String> {
        let fail = |what: String| format!("affinity rule {text:?}: {what}");
        // The first operator splits: a name may hold `=` (odd, but not ambiguous).
        let (at, relation) = match (text.find("=="), text.find("!=")) {
            (Some(together), Some(apart)) if apart < together => (apart, Relation::Apart),
            (Some(together), _) => (together, Relation::Together),
            (None, Some(apart)) => (apart, Relation::Apart),
            (None, None) => return Err(fail(EXPECTED.to_string())),
        };
        let keyword = match text[..at].trim() {
            "instance" => Keyword::Instance,
            "container" => Keyword::Container,
            other => return Err(fail(format!("{other:?} is not instance or container; {EXPECTED}"))),
        };
        let rest = text[at + 2..].trim_start();
        let (soft, name) = match rest.strip_prefix('~') {
            Some(name) => (true, name.trim()),
            None => (false, rest.trim_end()),
        };
        if name.is_empty() {
            return Err(fail(format!("no NAME after the operator; {EXPECTED}")));
        }
        if name.len() >= 2 && name.starts_with('/') && name.ends_with('/') {
            return Err(fail(REGEX_UNSUPPORTED.to_string()));
        }
        Ok(Affinity { keyword, relation, soft, name: name.to_string() })
    }

    /// Whether the rule names `neighbour`: by alias or uuid, either matching the glob, or by
    /// a uuid written in any of its forms.
    pub fn names(&self, neighbour: &Neighbour) -> bool {
        let mut buffer = Uuid::encode_buffer();
        let uuid = neighbour.uuid.hyphenated().encode_lower(&mut buffer);
        glob_matches(&self.name, &neighbour.alias)
            || glob_matches(&self.name, uuid)
            || Uuid::parse_str(&self.name).is_ok_and(|named| named == neighbour.uuid)
    }

    /// Why a host with `instances` does not meet the rule, or `None` when it does.
    pub fn unmet_on(&self, instances: &[Neighbour]) -> Option<String> {
        let mut named = instances.iter().filter(|neighbour| self.names(neighbour));
        match (self.relation, named.next()) {
            (Relation::Together, None) => Some(format!("{self}: no such instance here")),
            (Relation::Together, Some(_)) | (Relation::Apart, None) => None,
            (Relation::Apart, Some(first)) => {
                let more = named.count();
                let others = if more == 0 { String::new() } else { format!(" and {more} more") };
                Some(format!("{self}: {} ({}){others} is here", first.alias, first.uuid))
            }
        }
    }
}

impl FromStr for Affinity {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Affinity::parse(text)
    }
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keyword = match self.keyword {
            Keyword::Instance => "instance",
            Keyword::Container => "container",
        };
        let operator = match self.relation {
            Relation::Together => "==",
            Relation::Apart => "!=",
        };
        let soft = if self.soft { "~" } else { "" };
        write!(f, "{keyword}{operator}{soft}{}", self.name)
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none too) and
/// every other character for itself. One backtracking point (the last star) is enough for such
/// patterns, so that a pattern of many stars takes at most len(pattern) × len(text) steps.
/// Bytes are compared: a literal run of the pattern starts on a character boundary, so it can
/// only match at one of the text.
pub(super) fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // After the last star seen: where its pattern continues, and where in the text its match ends.
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            p += 1;
            last_star = Some((p, t));
        } else if pattern.get(p) == Some(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((after_star, matched_to)) = last_star {
            // The star takes one more character, and the rest is tried again from there.
            p = after_star;
            t = matched_to + 1;
            last_star = Some((after_star, t));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::neighbour;
    use super::*;

    #[test]
    fn affinity_parses_hard_and_soft_rules_of_both_spellings() {
        let rule = Affinity::parse("instance==web-*").unwrap();
        assert_eq!(
            rule,
            Affinity {
                keyword: Keyword::Instance,
                relation: Relation::Together,
                soft: false,
                name: "web-*".into()
            }
        );
        let rule = Affinity::parse(" container!=~db ").unwrap();
        assert_eq!(
            rule,
            Affinity {
                keyword: Keyword::Container,
                relation: Relation::Apart,
                soft: true,
                name: "db".into()
            }
        );
        assert!(Affinity::parse("instance==~x").unwrap().soft);
        assert_eq!("instance!=x".parse::<Affinity>().unwrap().relation, Relation::Apart);
    }

    #[test]
    fn affinity_display_gives_the_text_back() {
        for text in ["instance==web-1", "instance!=db*", "container==~cache", "container!=~*-old"] {
            assert_eq!(Affinity::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Affinity::parse("instance == ~ web").unwrap().to_string(), "instance==~web");
    }

    #[test]
    fn affinity_parse_errors_say_what_was_expected() {
        for (text, expected) in [
            ("instance=web", "expected instance==NAME, instance!=NAME, or ~ after the operator"),
            ("", "expected instance==NAME"),
            ("role==web", "\"role\" is not instance or container; expected instance==NAME"),
            ("==web", "\"\" is not instance or container"),
            ("instance==", "no NAME after the operator; expected"),
            ("instance!=~", "no NAME after the operator"),
        ] {
            let error = Affinity::parse(text).unwrap_err();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
            assert!(error.starts_with(&format!("affinity rule {text:?}: ")), "{error:?}");
        }
    }

    #[test]
    fn regular_expressions_are_refused_with_a_clear_message() {
        let error = Affinity::parse(r"instance==/^web-\d+$/").unwrap_err();
        assert!(error.contains("regular expressions (/.../) are not supported; use a glob"), "{error}");
        // A lone slash is a (strange) name, not a regular expression.
        assert_eq!(Affinity::parse("instance==/").unwrap().name, "/");
    }

    #[test]
    fn glob_star_matches_any_run_of_characters_including_none() {
        for (pattern, text) in [
            ("web", "web"),
            ("*", ""),
            ("*", "anything"),
            ("web-*", "web-"),
            ("web-*", "web-12"),
            ("*-old", "db-old"),
            ("a*b*c", "aXbYbZc"),
            ("**x**", "x"),
            ("é*", "été"),
        ] {
            assert!(glob_matches(pattern, text), "{pattern:?} should match {text:?}");
        }
        for (pattern, text) in
            [("web", "web-1"), ("web-*", "db-1"), ("a*b*c", "aXbY"), ("x", ""), ("Web", "web")]
        {
            assert!(!glob_matches(pattern, text), "{pattern:?} should not match {text:?}");
        }
    }

    #[test]
    fn rules_name_instances_by_alias_glob_or_uuid() {
        let web = neighbour("web-1", 0xabc);
        let uuid = web.uuid.to_string();
        assert!(Affinity::parse("instance==web-1").unwrap().names(&web));
        assert!(Affinity::parse("instance==w*").unwrap().names(&web));
        assert!(Affinity::parse(&format!("instance=={uuid}")).unwrap().names(&web));
        assert!(Affinity::parse(&format!("instance=={}", uuid.to_uppercase())).unwrap().names(&web));
        assert!(Affinity::parse(&format!("instance=={}", web.uuid.simple())).unwrap().names(&web));
        assert!(Affinity::parse(&format!("instance=={}*", &uuid[..8])).unwrap().names(&web));
        assert!(!Affinity::parse("instance==db*").unwrap().names(&web));
    }

    #[test]
    fn unmet_rules_say_which_instance_is_in_the_way_or_that_none_is_there() {
        let here = [neighbour("db-1", 1), neighbour("db-2", 2), neighbour("web", 3)];
        let apart = Affinity::parse("instance!=db-*").unwrap();
        assert_eq!(
            apart.unmet_on(&here).unwrap(),
            format!("instance!=db-*: db-1 ({}) and 1 more is here", Uuid::from_u128(1))
        );
        assert_eq!(apart.unmet_on(&here[2..]), None);
        let together = Affinity::parse("instance==cache").unwrap();
        assert_eq!(together.unmet_on(&here).unwrap(), "instance==cache: no such instance here");
        assert_eq!(together.unmet_on(&[neighbour("cache", 4)]), None);
    }
}
