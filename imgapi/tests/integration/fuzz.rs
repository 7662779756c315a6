//! Bad input, property-tested (proptest, on stable; a fixed seed and case count so that CI
//! time is bounded and a failure replays): manifest validation and the on-disk record reader
//! on arbitrary JSON, query-string parsing and the ListImages filters on arbitrary query
//! strings, and the `Authorization` header (Basic and Signature) on arbitrary text. Nothing may
//! panic, and what can be checked exactly is: a query string round-trips, and a Basic header
//! is accepted exactly when its user and password are in `userdb`.
//!
//! `PROPTEST_CASES=N` runs more cases, `PROPTEST_RNG_SEED=N` other ones.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use imgapi::auth::basic::{BasicError, UserDb};
use imgapi::auth::signature::SignedRequest;
use imgapi::auth::Authenticator;
use imgapi::config::{AnonymousReads, Channel, Config, UserEntry};
use imgapi::manifest::upgrade::upgrade_manifest;
use imgapi::manifest::validate::{summary_message, validate_full, validate_minimal, ValidationMode};
use imgapi::manifest::{Image, RenderOptions};
use imgapi::params::{parse_lower_uuid, Params};
use imgapi::service::listing::ListQuery;
use imgapi::service::{Caller, Service};
use imgapi::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use serde_json::{json, Map, Value};

/// A fixed seed and case count unless the environment asks for others; no regression files.
fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { base.cases } else { cases },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            base.rng_seed
        } else {
            RngSeed::Fixed(0x0013_6a91)
        },
        failure_persistence: None,
        ..base
    }
}

/// Every key the validator knows, plus legacy (v1) keys and one it does not know.
static MANIFEST_KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let legacy =
        ["creator_uuid", "restricted_to_uuid", "creator_name", "platform_type", "cloud_name", "bogus"];
    imgapi::manifest::validate::KNOWN_FIELDS.iter().copied().chain(legacy).collect()
});

const INNER_KEYS: &[&str] = &[
    "sha1",
    "size",
    "compression",
    "dataset_guid",
    "stor",
    "contentMD5",
    "mtime",
    "path",
    "url",
    "networks",
    "name",
    "description",
    "brand",
    "ssh_key",
    "min_ram",
    "max_ram",
    "min_platform",
    "max_platform",
    "bootrom",
    "password",
    "role",
    "x",
];

fn key_from(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(keys).prop_map(str::to_string), 1 => ".{0,8}"]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![Just(0.5), Just(-0.0), Just(1e21), Just(1e-7), Just(2.0), Just(9007199254740993.0)]
            .prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
        prop::sample::select(
            &[
                "",
                "true",
                "false",
                "2",
                "-1",
                "NaN",
                "Infinity",
                "0x10",
                " 1 ",
                "[]",
                "{}",
                "null",
                "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b",
                "6DE01E97-D7EC-4906-BD8B-CB4EAFDB7C8B",
                "2019-01-02T03:04:05.678Z",
                "2019-13-45T99:99:99Z",
                "zvol",
                "zone-dataset",
                "smartos",
                "linux",
                "gzip",
                "none",
                "active",
                "unactivated",
                "disabled",
                "creating",
                "failed",
                "bios",
                "uefi",
                "97f20b32c2016782257176fb58a35e5044f05840",
                "constructor",
                "__proto__",
                "toString",
                "hasOwnProperty",
            ][..]
        )
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

/// Arbitrary JSON whose object keys are mostly manifest vocabulary.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key_from(INNER_KEYS), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A valid active manifest, then keys removed, replaced by arbitrary JSON or added.
fn manifest() -> impl Strategy<Value = Map<String, Value>> {
    let base = json!({
        "v": 2, "uuid": "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b", "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
        "name": "base-64", "version": "18.4.0", "state": "active", "disabled": false, "public": true,
        "activated": true, "published_at": "2019-01-02T03:04:05.678Z", "type": "zone-dataset", "os": "smartos",
        "files": [{"sha1": "97f20b32c2016782257176fb58a35e5044f05840", "size": 12345, "compression": "gzip"}],
        "requirements": {"networks": [{"name": "net0", "description": "public"}], "min_ram": 512},
        "tags": {"role": "db"}, "billing_tags": ["a"], "acl": [], "channels": ["dev"],
    });
    let Value::Object(base) = base else { unreachable!() };
    (
        any::<bool>(),
        prop::collection::vec(prop::sample::select(MANIFEST_KEYS.clone()), 0..6),
        prop::collection::vec((key_from(&MANIFEST_KEYS), json_value()), 0..8),
    )
        .prop_map(move |(start_empty, removed, set)| {
            let mut manifest = if start_empty { Map::new() } else { base.clone() };
            for key in removed {
                manifest.remove(key);
            }
            manifest.extend(set);
            manifest
        })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn manifest_validation_never_panics(manifest in manifest(), channels: bool) {
        let mode = ValidationMode { channels_required: channels };
        for errors in [validate_full(&manifest, mode), validate_minimal(&manifest)] {
            for error in &errors {
                prop_assert!(["MissingParameter", "Invalid"].contains(&error.code.as_str()), "{error:?}");
            }
            let _ = summary_message(&errors);
            let _ = serde_json::to_string(&errors).unwrap();
        }
        // Validation is a pure function of the manifest.
        prop_assert_eq!(validate_full(&manifest, mode), validate_full(&manifest, mode));
        if let Ok(upgraded) = upgrade_manifest(manifest.clone()) {
            let _ = validate_full(&upgraded, mode);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_validation(value in json_value()) {
        if let Value::Object(map) = &value {
            let _ = validate_full(map, ValidationMode::default());
            let _ = validate_minimal(map);
            let _ = upgrade_manifest(map.clone());
        }
        let _ = Image::from_disk(value);
    }

    #[test]
    fn on_disk_records_never_panic_and_round_trip(mut manifest in manifest(), uuid: bool) {
        if uuid {
            manifest.insert("uuid".into(), json!("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b"));
        }
        if let Ok(image) = Image::from_disk(Value::Object(manifest)) {
            for channels in [false, true] {
                for admin_fields in [false, true] {
                    let _ = image.to_api(RenderOptions { channels, admin_fields });
                }
            }
            let _ = (image.etag(), image.state(), image.published_ms(), image.validation_view());
            let again = Image::from_disk(image.to_disk()).expect("a record written by the server reads back");
            prop_assert_eq!(again.to_disk(), image.to_disk());
        }
    }
}

/// Query strings made of the pieces real ones are made of, plus arbitrary characters.
fn query_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(&[
            "state", "public", "owner", "name", "version", "os", "type", "tag.role", "tag.", "billing_tag",
            "channel", "marker", "limit", "sort", "inclAdminFields", "account", "compression", "sha1",
        ][..]).prop_map(str::to_string),
        2 => prop::sample::select(&[
            "=", "&", ";", "%", "%2", "%zz", "%00", "%ff", "%26", "%3D", "%3B", "+", "~", "!", "*", ".", "asc",
            "published_at.desc", "true", "all", "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b", "2019-01-02T03:04:05Z",
            "18446744073709551616", "0", "-1", "1000",
        ][..]).prop_map(str::to_string),
        1 => ".{0,6}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

/// A store with a few images to filter, shared by every case.
fn services() -> &'static (tempfile::TempDir, Vec<Service>) {
    static SERVICES: OnceLock<(tempfile::TempDir, Vec<Service>)> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for (i, (state, activated, disabled)) in
            [("active", true, false), ("disabled", true, true), ("unactivated", false, false)].into_iter().enumerate()
        {
            let uuid = format!("00000000-0000-4000-8000-00000000000{i}");
            let record = json!({
                "v": 2, "uuid": uuid, "owner": "930896af-bf8c-48d4-885c-6573a94b1853", "name": format!("img{i}"),
                "version": format!("1.{i}.0"), "state": state, "activated": activated, "disabled": disabled,
                "public": i % 2 == 0, "type": "zone-dataset", "os": "smartos", "files": [],
                "published_at": format!("2019-01-0{}T03:04:05.678Z", i + 1),
                "tags": {"role": "db"}, "billing_tags": ["a"], "channels": ["dev"],
            });
            std::fs::create_dir_all(dir.path().join(&uuid)).unwrap();
            std::fs::write(dir.path().join(&uuid).join("manifest.json"), record.to_string()).unwrap();
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let channels = vec![
            Channel { name: "dev".into(), description: "d".into(), default: true },
            Channel { name: "stable".into(), description: "s".into(), default: false },
        ];
        let services = [(vec![], AnonymousReads::All), (channels, AnonymousReads::Public)]
            .into_iter()
            .map(|(channels, anonymous_reads)| Service {
                store: store.clone(),
                channels,
                anonymous_reads,
                max_file_size: 1 << 30,
                copies: Default::default(),
            })
            .collect();
        (dir, services)
    })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn query_strings_never_panic(query in prop_oneof![query_string(), any::<String>()], authed: bool) {
        let params = Params::parse(&query);
        for key in ["state", "public", "limit", "account", "tag.role", ""] {
            let _ = (params.get(key), params.all(key).count(), params.with_prefix(key).count());
            match params.bool(key) {
                Ok(Some(b)) => prop_assert_eq!(params.get(key), Some(if b { "true" } else { "false" })),
                Ok(None) => prop_assert_eq!(params.get(key), None),
                Err(e) => prop_assert_eq!(e.field, key),
            }
            if let Ok(Some(uuid)) = params.uuid(key) {
                prop_assert_eq!(uuid.to_string(), params.get(key).unwrap());
            }
        }
        let user = authed.then(|| "admin".to_string());
        for service in &services().1 {
            let Ok(caller) = Caller::from_params(user.clone(), &params) else { continue };
            if let Ok(list) = ListQuery::parse(service, &caller, &params) {
                let page = service.list(&list, &caller);
                let limit = params.get("limit").and_then(|l| l.trim().parse::<usize>().ok()).unwrap_or(1000);
                prop_assert!(page.len() <= limit.max(1));
                prop_assert!(page.iter().all(|image| list.matches(image)));
            }
        }
    }

    #[test]
    fn query_strings_round_trip(
        pairs in prop::collection::vec((".{0,8}", ".{0,8}"), 0..8),
        separators in prop::collection::vec(prop_oneof![Just('&'), Just(';')], 8),
    ) {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut query = String::new();
        for (i, (key, value)) in pairs.iter().enumerate() {
            if i > 0 {
                query.push(separators[i % separators.len()]);
            }
            query += &format!("{}={}", encode(key), encode(value));
        }
        let params = Params::parse(&query);
        let parsed: Vec<(String, String)> =
            params.with_prefix("").map(|(k, v)| (k.to_string(), v.to_string())).collect();
        prop_assert_eq!(&parsed, &pairs, "{:?}", query);
        for (key, _) in &pairs {
            let first = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            prop_assert_eq!(params.get(key), first);
        }
    }

    #[test]
    fn uuid_parameters_are_lower_case_canonical_only(text in prop_oneof![
        ".{0,40}",
        "[0-9a-fA-F-]{36}",
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
    ]) {
        match parse_lower_uuid(&text) {
            Some(uuid) => prop_assert_eq!(uuid.to_string(), text),
            None => prop_assert!(uuid::Uuid::parse_str(&text).map(|u| u.to_string() != text).unwrap_or(true)),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn users() -> Vec<UserEntry> {
    vec![
        UserEntry { name: "admin".into(), password: "secret".into() },
        UserEntry { name: "other".into(), password: "pw:with:colons".into() },
        UserEntry { name: "".into(), password: "empty-name".into() },
        UserEntry { name: "ünïcode".into(), password: "pässwörd".into() },
    ]
}

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let key = include_str!("../fixtures/keys/tester_rsa.pub").trim();
        let config = json!({"datadir": "/nonexistent", "host": "127.0.0.1", "userdb": [{"name": "admin", "password": "secret"}],
                            "auth_keys": {"tester": [key]}});
        Authenticator::from_config(
            &Config::from_json(&config.to_string(), Path::new("t"), Path::new("")).unwrap(),
        )
        .unwrap()
    })
}

/// `Authorization` values: Basic and Signature shaped, and anything.
fn authorization() -> impl Strategy<Value = String> {
    let signature_param = prop_oneof![
        prop::sample::select(&["keyId", "algorithm", "headers", "signature", "extensions", ""][..])
            .prop_map(str::to_string),
        ".{0,6}",
    ];
    let signature_value = prop_oneof![
        prop::sample::select(
            &[
                "tester",
                "/tester/keys/x",
                "rsa-sha256",
                "rsa-sha1",
                "dsa-sha1",
                "hmac-sha256",
                "date",
                "(request-target) date",
                "request-line",
                "AAAA",
                "=",
                "\"",
                "\\\"",
                ",",
            ][..]
        )
        .prop_map(str::to_string),
        "[A-Za-z0-9+/=]{0,24}",
        ".{0,8}",
    ];
    prop_oneof![
        (".{0,12}", ".{0,12}").prop_map(|(u, p)| format!("Basic {}", b64(format!("{u}:{p}").as_bytes()))),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| format!("Basic {}", b64(&b))),
        ".{0,40}".prop_map(|s| format!("Basic {s}")),
        prop::collection::vec((signature_param, signature_value, any::<bool>()), 0..6).prop_map(|params| {
            let params: Vec<String> = params
                .into_iter()
                .map(|(k, v, quoted)| if quoted { format!("{k}=\"{v}\"") } else { format!("{k}={v}") })
                .collect();
            format!("Signature {}", params.join(","))
        }),
        ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn basic_header_is_accepted_exactly_for_userdb_entries(
        user in prop_oneof![prop::sample::select(&["admin", "other", "", "ünïcode", "nobody"][..]).prop_map(str::to_string), ".{0,8}"],
        password in prop_oneof![prop::sample::select(&["secret", "pw:with:colons", "empty-name", "pässwörd", ""][..]).prop_map(str::to_string), ".{0,12}"],
        padding in prop::sample::select(&["", " ", "\t", "  "][..]),
    ) {
        let db = UserDb::new(&users()).unwrap();
        let header = format!("{padding}{}{padding}", b64(format!("{user}:{password}").as_bytes()));
        // The first colon ends the user name (RFC 7617): "a:b" + "c" is user "a", password "b:c".
        let text = format!("{user}:{password}");
        let (user, password) = text.split_once(':').unwrap();
        let expected = users().iter().any(|u| u.name == user && u.password == password);
        match db.verify_header(&header) {
            Ok(name) => {
                prop_assert!(expected, "accepted {:?}", text);
                prop_assert_eq!(name, user);
            }
            Err(e) => {
                prop_assert!(!expected, "refused {:?}: {}", text, e);
                prop_assert_eq!(e, BasicError::Invalid);
            }
        }
    }

    #[test]
    fn any_authorization_header_is_answered_without_panicking(value in authorization(), method in "[A-Z]{0,7}", target in ".{0,20}") {
        let db = UserDb::new(&users()).unwrap();
        if let Some(encoded) = value.strip_prefix("Basic ") {
            let _ = db.verify_header(encoded);
        }
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let header = move |name: &str| match name {
            "date" => Some(date.clone()),
            "host" => Some("127.0.0.1".to_string()),
            _ => None,
        };
        let request = SignedRequest { method: &method, path_and_query: &target, header: &header };
        match authenticator().authenticate(Some(&value), &request) {
            // Only the one configured user can be authenticated, and only with her password.
            Ok(Some(user)) => {
                let admin_only = UserDb::new(&users()[..1]).unwrap();
                let rest = value.trim().split_once(' ').map(|(_, rest)| rest).unwrap_or_default();
                prop_assert!(user == "admin" && admin_only.verify_header(rest).is_ok(), "{:?} -> {}", value, user);
            }
            Ok(None) => prop_assert!(false, "a header is never anonymous"),
            Err(e) => { let _ = e.to_string(); }
        }
    }
}
