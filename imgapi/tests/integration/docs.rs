//! The repository's documentation: every relative link in every Markdown file (README, docs/,
//! bench/, compat/, the crates' own) resolves to a file that exists, and every `#anchor` to a
//! heading of that file, as GitHub renders them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "node_modules" | ".git") {
                markdown_files(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// Text outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as dashes; repeated headings get `-1`, `-2`...
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut anchors = HashSet::new();
    for line in prose(text).lines() {
        let Some(heading) = line.strip_prefix('#') else { continue };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    anchors
}

/// The targets of `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let text = prose(text);
    let mut rest = text.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        let target = &rest[..end];
        if !target.contains(char::is_whitespace) {
            links.push(target.to_string());
        }
        rest = &rest[end..];
    }
    links
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = repository();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            let shown = file.strip_prefix(&root).unwrap().display().to_string();
            if !resolved.exists() {
                broken.push(format!("{shown}: {target} does not exist"));
            } else if !anchor.is_empty() {
                let heads = std::fs::read_to_string(&resolved).map(|t| anchors(&t)).unwrap_or_default();
                if !heads.contains(anchor) {
                    broken.push(format!("{shown}: {target} names no heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_github() {
    let heads = anchors("# Quick start (fresh Debian)\n## 3. ZFS on Linux: zfs-fuse 0.7.0\n## Tests\n## Tests\n```\n# not a heading\n```\n");
    for anchor in ["quick-start-fresh-debian", "3-zfs-on-linux-zfs-fuse-070", "tests", "tests-1"] {
        assert!(heads.contains(anchor), "{anchor}: {heads:?}");
    }
    assert!(!heads.contains("not-a-heading"));
}

/// The binaries `cargo build` makes, by package (`[[bin]]` names default to the package's).
const BINARIES: [&str; 2] = ["imgapi", "agent"];

#[test]
fn service_files_run_the_binaries_the_build_makes_with_the_default_configs() {
    let dir = repository().join("support-files");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        // Every `.../sbin/NAME` a service file runs is a binary of this workspace.
        for (at, _) in text.match_indices("/sbin/") {
            let name: String = text[at + 6..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if name.starts_with("imgapi") || name.starts_with("agent") {
                assert!(BINARIES.contains(&name.as_str()), "{}: runs {name:?}", entry.path().display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "{checked} binary paths");
    // The agent's service files pass the path `agent serve` reads by default on their platform.
    let systemd = std::fs::read_to_string(dir.join("agent.service")).unwrap();
    assert!(systemd.contains("agent serve -c /etc/agent/config.json"), "{systemd}");
    let rc = std::fs::read_to_string(dir.join("agent.rc")).unwrap();
    assert!(rc.contains(r#"agent_config:="/usr/local/etc/agent/config.json""#), "{rc}");
}
