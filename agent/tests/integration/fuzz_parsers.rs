//! Bad input for the agent's parsers of host command output: property tests (proptest, on
//! stable, a fixed seed and case count so that CI time is bounded and a failure replays) that
//! throw arbitrary and zfs-shaped text at the `zfs get`/`zfs list` parsers, the stderr
//! classifier, and the other parsers of outside text (QMP lines, `ifconfig create` output,
//! network names, source URLs). None may panic, and well-formed output must parse back to
//! exactly what was printed.
//!
//! `PROPTEST_CASES=N` runs more cases, `PROPTEST_RNG_SEED=N` other ones.

use agent::host::runner::ExecError;
use agent::host::zfs::{self, DatasetType, PropertyRow, ZfsError};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::Value;

/// A fixed seed and case count unless the environment asks for others; no regression files.
fn config(cases: u32) -> Config {
    let base = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { base.cases } else { cases },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            base.rng_seed
        } else {
            RngSeed::Fixed(0x7e1_1ab1e)
        },
        failure_persistence: None,
        ..base
    }
}

/// Text made of the pieces zfs output and messages are made of, plus arbitrary characters.
fn zfs_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z0-9/@._:-]{0,12}",
        3 => Just("\t".to_string()),
        3 => Just("\n".to_string()),
        2 => Just("-".to_string()),
        1 => Just("\r\n".to_string()),
        1 => Just(" ".to_string()),
        1 => Just("use '-r' (or '-R') to destroy the following datasets:\n".to_string()),
        1 => Just("cannot destroy 'tank/x': filesystem has children\n".to_string()),
        1 => Just("cannot destroy: filesystem has dependent clones\n".to_string()),
        1 => Just("dataset does not exist".to_string()),
        1 => Just("out of space".to_string()),
        1 => Just("inherited from tank".to_string()),
        1 => any::<String>(),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..48).prop_map(|pieces| pieces.concat())
}

/// Any text at all, or zfs-shaped text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), zfs_like_text()]
}

/// A field zfs would print in a tab-separated column: no tab, no line break, not empty.
fn field() -> impl Strategy<Value = String> {
    "[^\t\n\r]{1,24}"
}

/// A value: may hold tabs (user properties do), never a line break.
fn value() -> impl Strategy<Value = String> {
    prop_oneof!["[^\n\r]{0,24}", Just("-".to_string()), "[a-z]{1,4}\t[a-z]{0,4}"]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![Just("QMP"), Just("return"), Just("error"), Just("event"), Just("id")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("QMP".to_string()),
            Just("return".to_string()),
            Just("error".to_string()),
            Just("event".to_string()),
            Just("id".to_string()),
            Just("class".to_string()),
            Just("desc".to_string()),
            Just("data".to_string()),
            ".{0,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn failed(stderr: &str) -> ExecError {
    ExecError::Failed {
        command: "zfs destroy tank/x".into(),
        status: "exit status: 1".into(),
        stderr: stderr.into(),
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn zfs_parsers_never_panic_on_any_text(text in text(), columns in 0usize..6, with_source: bool) {
        if let Ok(rows) = zfs::parse_get(&text, with_source) {
            prop_assert!(rows.len() <= text.lines().count());
            for row in rows {
                prop_assert!(!row.dataset.is_empty() && !row.property.is_empty());
                prop_assert!(!row.dataset.contains('\t') && !row.property.contains('\t'));
            }
        }
        if let Ok(rows) = zfs::parse_list(&text, columns) {
            prop_assert!(rows.iter().all(|r| r.len() == columns));
        }
        if let Ok(rows) = zfs::parse_datasets(&text) {
            prop_assert!(rows.iter().all(|r| !r.name.contains('\t')));
        }
        let dependents = zfs::parse_dependents(&text);
        prop_assert!(dependents.iter().all(|d| !d.is_empty() && d.trim() == d));
        // Every way of rendering the classified error works too.
        let error = zfs::classify("tank/x", failed(&text));
        let _ = (error.to_string(), format!("{error:?}"));
        if let ZfsError::HasChildren { children: list, .. } | ZfsError::HasClones { clones: list, .. } = &error {
            prop_assert_eq!(list, &dependents);
        }
    }

    #[test]
    fn zfs_get_output_parses_back_to_what_was_printed(
        rows in prop::collection::vec((field(), field(), value(), prop::option::of("[^\t\n\r]{1,20}")), 0..12),
        with_source: bool,
    ) {
        let mut text = String::new();
        for (dataset, property, value, source) in &rows {
            if with_source {
                text += &format!("{dataset}\t{property}\t{value}\t{}\n", source.as_deref().unwrap_or("-"));
            } else {
                text += &format!("{dataset}\t{property}\t{value}\n");
            }
        }
        let parsed = zfs::parse_get(&text, with_source).unwrap();
        let expected: Vec<PropertyRow> = rows
            .iter()
            .map(|(dataset, property, value, source)| {
                let source = if with_source { source.clone().filter(|s| s != "-") } else { None };
                PropertyRow {
                    dataset: dataset.clone(),
                    property: property.clone(),
                    value: (value != "-" || source.is_some()).then(|| value.clone()),
                    source,
                }
            })
            .collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn zfs_list_output_parses_back_to_what_was_printed(
        columns in 1usize..6,
        rows in prop::collection::vec(prop::collection::vec(prop::option::of(field()), 6), 0..12),
        last in prop::collection::vec(prop::option::of(value().prop_filter("not empty", |v| !v.is_empty())), 12),
    ) {
        // Only the last column may hold tabs.
        let rows: Vec<Vec<Option<String>>> = rows
            .into_iter()
            .zip(last)
            .map(|(mut row, last)| {
                row.truncate(columns - 1);
                row.push(last);
                row.into_iter().map(|f| f.filter(|f| f != "-")).collect()
            })
            .collect();
        let text: String = rows
            .iter()
            .map(|row| row.iter().map(|f| f.as_deref().unwrap_or("-")).collect::<Vec<_>>().join("\t") + "\n")
            .collect();
        prop_assert_eq!(zfs::parse_list(&text, columns).unwrap(), rows);
    }

    #[test]
    fn zfs_datasets_parse_back(
        rows in prop::collection::vec(
            (field().prop_filter("a name", |n| n != "-"),
             prop_oneof![Just("filesystem"), Just("volume"), Just("snapshot"), Just("bookmark")],
             prop::option::of(field().prop_filter("an origin", |o| o != "-"))),
            0..12,
        ),
    ) {
        let text: String = rows
            .iter()
            .map(|(name, kind, origin)| format!("{name}\t{kind}\t{}\n", origin.as_deref().unwrap_or("-")))
            .collect();
        let parsed = zfs::parse_datasets(&text).unwrap();
        prop_assert_eq!(parsed.len(), rows.len());
        for (row, (name, kind, origin)) in parsed.iter().zip(&rows) {
            prop_assert_eq!(&row.name, name);
            prop_assert_eq!(&row.origin, origin);
            let expected = match *kind {
                "filesystem" => DatasetType::Filesystem,
                "volume" => DatasetType::Volume,
                "snapshot" => DatasetType::Snapshot,
                other => DatasetType::Other(other.to_string()),
            };
            prop_assert_eq!(&row.kind, &expected);
        }
    }

    #[test]
    fn dependents_are_the_lines_after_the_marker(
        before in "[^\n\r]{0,40}",
        names in prop::collection::vec("[a-z0-9/@_.-]{1,30}", 0..8),
    ) {
        let before = before.replace("to destroy the following datasets", "");
        let stderr = format!(
            "cannot destroy 'tank/x': filesystem has children\n{before}\nuse '-r' (or '-R') to destroy the following datasets:\n{}\n",
            names.join("\n")
        );
        prop_assert_eq!(zfs::parse_dependents(&stderr), names.clone());
        match zfs::classify("tank/x", failed(&stderr)) {
            ZfsError::HasChildren { children, .. } => prop_assert_eq!(children, names),
            ZfsError::HasClones { .. } | ZfsError::NotFound { .. } | ZfsError::AlreadyExists { .. } => {}
            other => prop_assert!(false, "classified as {other:?}"),
        }
    }

    #[test]
    fn other_host_output_parsers_never_panic(text in text(), value in json()) {
        let _ = agent::host::qmp::parse_message(&text);
        let _ = agent::host::qmp::parse_message(&value.to_string());
        if let Some(name) = agent::host::ifconfig::parse_created_interface(&text) {
            prop_assert!(!name.is_empty() && name.len() <= 15, "{name:?}");
            prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)), "{name:?}");
        }
        if let Ok(network) = agent::instance::record::parse_network(&text) {
            prop_assert!(
                network == "user" || network.starts_with("bridge:") || network.starts_with("switch:"),
                "{network:?}"
            );
            prop_assert!(!network.contains(['\t', '\n', ' ', ',', '/']), "{network:?}");
        }
        if let Ok(nic) = agent::instance::record::NicRequest::parse(&text) {
            if let Ok(Some(mac)) = nic.check() {
                prop_assert!(mac.len() == 17 && mac == mac.to_ascii_lowercase(), "{mac:?}");
            }
        }
        // The interface listings the switches read: names never carry separators.
        let names = agent::host::iproute::parse_link_names(&text)
            .into_iter()
            .chain(agent::host::ifconfig::parse_members(&text))
            .chain(agent::host::ifconfig::parse_descriptions(&text).into_iter().map(|(name, _)| name));
        for name in names {
            prop_assert!(!name.is_empty() && !name.contains(['\n', ' ', '\t']), "{name:?}");
        }
        let _ = agent::source::Source::parse(&text);
        let _ = agent::source::Source::parse(&format!("http://{text}"));
        let _ = imgapi_client::redact(&format!("http://u:{text}@h/"));
    }
}
