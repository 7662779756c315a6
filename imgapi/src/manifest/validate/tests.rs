//! The validator's tests: its own cases, and the verdicts of node-imgmanifest 3.2.1 on the
//! same manifests (`imgmanifest-verdicts.json`), which it must reproduce.

use super::*;
use serde_json::json;

const UUID: &str = "1f9b7958-289e-4ea3-8f88-5486a40d6823";
const OTHER_UUID: &str = "f9f8d4e5-30d9-438e-88f7-ea745370049b";

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("test manifest is not an object: {other}"),
    }
}

/// An active, valid zone-dataset image as the server holds it.
fn base() -> Map<String, Value> {
    object(json!({
        "v": 2, "uuid": UUID, "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
        "name": "base-64", "version": "18.4.0", "state": "active", "disabled": false,
        "public": true, "activated": true, "published_at": "2019-01-02T03:04:05.678Z",
        "type": "zone-dataset", "os": "smartos",
        "files": [{"sha1": "97f20b32c2016782257176fb58a35e5044f05840", "size": 12345,
                   "compression": "gzip"}]
    }))
}

fn zvol() -> Map<String, Value> {
    with(
        base(),
        json!({"type": "zvol", "os": "linux", "nic_driver": "virtio",
        "disk_driver": "virtio", "cpu_type": "host", "image_size": 10240}),
    )
}

fn minimal() -> Map<String, Value> {
    object(json!({"v": 2, "uuid": UUID, "name": "foo", "version": "1.2.3",
        "type": "zone-dataset", "os": "smartos"}))
}

/// `manifest` with the keys of `changes` set (null values included).
fn with(mut manifest: Map<String, Value>, changes: Value) -> Map<String, Value> {
    for (key, value) in object(changes) {
        manifest.insert(key, value);
    }
    manifest
}

fn without(mut manifest: Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    for key in keys {
        manifest.shift_remove(*key);
    }
    manifest
}

fn dc(manifest: &Map<String, Value>) -> Vec<FieldError> {
    validate_full(manifest, ValidationMode::default())
}

fn with_channels(manifest: &Map<String, Value>) -> Vec<FieldError> {
    validate_full(manifest, ValidationMode { channels_required: true })
}

/// Errors as (field, code, message) for compact assertions.
fn triples(errors: &[FieldError]) -> Vec<(&str, &str, Option<&str>)> {
    errors.iter().map(|e| (e.field.as_str(), e.code.as_str(), e.message.as_deref())).collect()
}

/// The single error `validate_full` reports for `base()` changed by `changes`.
fn only_error(changes: Value) -> (String, String, Option<String>) {
    let errors = dc(&with(base(), changes.clone()));
    assert_eq!(errors.len(), 1, "for {changes}: {errors:?}");
    let e = &errors[0];
    (e.field.clone(), e.code.clone(), e.message.clone())
}

fn invalid(field: &str, message: &str) -> (String, String, Option<String>) {
    (field.to_owned(), "Invalid".to_owned(), Some(message.to_owned()))
}

// ---- differential data: the same manifests run through node-imgmanifest 3.2.1

/// Recorded with `validateDcManifest` ("dc"), `validateFields(m, dcRequired + channels,
/// {mode: "dc", channelFromName})` ("dc-channels") and `validateMinimalManifest`
/// ("minimal") under node 20. Each case is a base manifest plus `set` keys minus `unset`
/// keys (or a literal `manifest`), with the JS error list (`null` recorded as `[]`).
const JS_VERDICTS: &str = include_str!("imgmanifest-verdicts.json");

fn differential_base(name: &str) -> Map<String, Value> {
    match name {
        "BASE" => base(),
        "ZVOL" => zvol(),
        "MINIMAL" => minimal(),
        other => panic!("unknown base {other}"),
    }
}

#[test]
fn matches_imgmanifest_on_every_recorded_case() {
    let cases: Vec<Value> = serde_json::from_str(JS_VERDICTS).expect("test data parses");
    assert!(cases.len() > 100);
    let mut mismatches = Vec::new();
    for case in &cases {
        let manifest = match case.get("base").and_then(Value::as_str) {
            Some(base_name) => {
                let built = with(differential_base(base_name), case["set"].clone());
                let unset: Vec<&str> = case
                    .get("unset")
                    .and_then(Value::as_array)
                    .map(|keys| keys.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                without(built, &unset)
            }
            None => object(case["manifest"].clone()),
        };
        let errors = match case["mode"].as_str() {
            Some("dc") => dc(&manifest),
            Some("dc-channels") => with_channels(&manifest),
            Some("minimal") => validate_minimal(&manifest),
            other => panic!("unknown mode {other:?}"),
        };
        let actual = serde_json::to_value(&errors).expect("errors serialize");
        if actual != case["expected"] {
            mismatches.push(format!("{}:\n  js:   {}\n  rust: {}", case["name"], case["expected"], actual));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

// ---- whole manifests and ordering

#[test]
fn valid_manifests_have_no_errors() {
    assert_eq!(dc(&base()), vec![]);
    assert_eq!(dc(&zvol()), vec![]);
    assert_eq!(validate_minimal(&minimal()), vec![]);
    assert_eq!(validate_minimal(&base()), vec![]);
    // The server's view: icon as `true`, files with a dataset_guid, channels when configured.
    let served = with(
        base(),
        json!({"icon": true, "channels": ["dev"],
        "files": [{"sha1": "a", "size": 1, "compression": "gzip", "dataset_guid": "123"}]}),
    );
    assert_eq!(with_channels(&served), vec![]);
}

#[test]
fn empty_manifest_reports_required_fields_in_order() {
    let errors = dc(&Map::new());
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    // published_at and files are only required once activated, the zvol fields for zvols.
    assert_eq!(
        fields,
        ["v", "uuid", "owner", "name", "version", "disabled", "activated", "public", "state", "type", "os"]
    );
    assert!(errors.iter().all(|e| e.code == "MissingParameter" && e.message.is_none()));

    let minimal_fields: Vec<String> = validate_minimal(&Map::new()).into_iter().map(|e| e.field).collect();
    assert_eq!(minimal_fields, ["v", "uuid", "name", "version", "type", "os"]);
}

#[test]
fn errors_come_required_then_optional_then_unknown() {
    let mut manifest = base();
    manifest.insert("zzz".into(), json!(1));
    manifest.insert("tags".into(), json!([]));
    manifest.insert("acl".into(), json!("x"));
    manifest.insert("aaa".into(), json!(2));
    manifest.insert("image_size".into(), json!(5));
    manifest.insert("v".into(), json!(-1));
    let fields: Vec<String> = dc(&manifest).into_iter().map(|e| e.field).collect();
    // image_size is a required field (checked early), acl before tags (fields table order),
    // unknown keys in manifest order.
    assert_eq!(fields, ["v", "image_size", "acl", "tags", "zzz", "aaa"]);
}

#[test]
fn unknown_keys_are_invalid_in_js_property_order() {
    let mut manifest = base();
    for key in ["zeta", "10", "alpha", "2", "01", "4294967295", "4294967294"] {
        manifest.insert(key.into(), json!(true));
    }
    let errors = dc(&manifest);
    assert!(errors.iter().all(|e| e.code == "Invalid" && e.message.is_none()));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    // Array-index keys first, numerically; 4294967295 is not an array index.
    assert_eq!(fields, ["2", "10", "4294967294", "zeta", "alpha", "01", "4294967295"]);
}

#[test]
fn spec_example_body() {
    let manifest =
        with(base(), json!({"name": "foo*bar", "version": "1.0 beta", "type": "vm", "os": "plan9"}));
    let errors = dc(&manifest);
    assert_eq!(summary_message(&errors), "invalid image data: name, version, type, os");
    assert_eq!(
        serde_json::to_value(&errors).unwrap(),
        json!([
            {"field": "name", "code": "Invalid", "message": "image name has invalid characters (only alpha-numeric characters and \" \", \".\", \"-\", \"_\" and \"/\" are allowed)"},
            {"field": "version", "code": "Invalid", "message": "image version has invalid characters (only alpha-numeric characters and \".\", \"-\", \"_\" and \"/\" are allowed)"},
            {"field": "type", "code": "Invalid", "message": "invalid image type, \"vm\", must be one of: zone-dataset, zvol, lx-dataset, lxd, docker, other"},
            {"field": "os", "code": "Invalid", "message": "invalid image os, \"plan9\", must be one of: smartos, linux, windows, bsd, illumos, other"}
        ])
    );
}

#[test]
fn field_error_serializes_without_empty_message() {
    assert_eq!(
        serde_json::to_string(&FieldError::missing("v")).unwrap(),
        r#"{"field":"v","code":"MissingParameter"}"#
    );
    assert_eq!(
        serde_json::to_string(&FieldError::invalid_with("x", "m")).unwrap(),
        r#"{"field":"x","code":"Invalid","message":"m"}"#
    );
}

// ---- the spec's message catalogue (section 3.5), one manifest change each

#[test]
fn message_catalogue() {
    let long = |c: &str, n: usize| c.repeat(n);
    let cases = [
        (json!({"name": long("n", 1025)}), invalid("name", "image name is too long, max 1024 characters")),
        (json!({"version": long("v", 513)}), invalid("version", "image version is too long, max 512 characters")),
        (json!({"description": long("d", 10241)}), invalid("description", "image description is too long, max 10240 characters")),
        (json!({"homepage": "ftp://x"}), invalid("homepage", "invalid image homepage URL protocol")),
        (json!({"homepage": format!("http://{}", long("h", 1018))}), invalid("homepage", "image homepage URL is too long (max 1024 characters)")),
        (json!({"eula": "file:///etc/passwd"}), invalid("eula", "invalid image EULA URL protocol")),
        (json!({"eula": format!("https://{}", long("e", 1017))}), invalid("eula", "image EULA URL is too long (max 1024 characters)")),
        (json!({"published_at": "2019-01-02 03:04:05Z"}), invalid("published_at", "published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format")),
        (json!({"files": [{"sha1": "a", "size": 1, "compression": "gzip"}, {"sha1": "b", "size": 1, "compression": "gzip"}]}), invalid("files", "invalid image \"files\": too many files")),
        (json!({"files": [{"size": 1, "compression": "gzip"}]}), invalid("files", "invalid image \"files\": file missing \"sha1\" field")),
        (json!({"files": [{"sha1": "a", "compression": "gzip"}]}), invalid("files", "invalid image \"files\": file missing \"size\" field")),
        (json!({"files": [{"sha1": "a", "size": 1}]}), invalid("files", "invalid image \"files\": file missing \"compression\" field")),
        (json!({"files": [{"sha1": "a", "size": 1, "compression": "x"}]}), invalid("files", "invalid image \"files\": invalid compression \"x\" (must be one of gzip, bzip2, xz, none)")),
        (json!({"acl": [OTHER_UUID, "x"]}), invalid("acl", "invalid image \"acl\" (item 1 is not a UUID): x")),
        (json!({"inherited_directories": ["/opt"], "type": "lx-dataset"}), invalid("inherited_directories", "invalid image \"inherited_directories\" (only valid for a type:zone-dataset image): [\"/opt\"]")),
        (json!({"requirements": {"x": 1}}), invalid("x", "unsupported requirement \"x\"")),
        (json!({"requirements": {"min_ram": 2048, "max_ram": 1024}}), invalid("requirements.max_ram", "min_ram must be <= max_ram, but:min_ram=2048, max_ram=1024")),
    ];
    for (changes, expected) in cases {
        assert_eq!(only_error(changes.clone()), expected, "for {changes}");
    }
    let unpublished = without(base(), &["published_at", "files"]);
    assert_eq!(
        triples(&dc(&unpublished)),
        [
            (
                "published_at",
                "MissingParameter",
                Some("if activated is \"true\" published_at must be present")
            ),
            ("files", "MissingParameter", Some("if activated is \"true\" files must be present")),
        ]
    );
}

// ---- individual fields

#[test]
fn v_is_coerced_with_number() {
    for ok in [json!(2), json!("2"), json!(" 3 "), json!(null), json!(true), json!([2]), json!("")] {
        assert_eq!(dc(&with(base(), json!({"v": ok.clone()}))), vec![], "v = {ok}");
    }
    for bad in [json!(-1), json!("two"), json!({}), json!([1, 2]), json!("-0x1")] {
        assert_eq!(
            only_error(json!({"v": bad.clone()})),
            invalid("v", "\"v\" must be a positive integer"),
            "v = {bad}"
        );
    }
}

#[test]
fn uuids_must_be_lower_case() {
    let errors = dc(&with(base(), json!({"uuid": UUID.to_uppercase(), "owner": 5, "origin": "x"})));
    assert_eq!(
        triples(&errors),
        [("uuid", "Invalid", None), ("owner", "Invalid", None), ("origin", "Invalid", None)]
    );
    // `UUID_RE.test` stringifies: a one-element array holding a UUID passes.
    assert_eq!(dc(&with(base(), json!({"origin": [OTHER_UUID]}))), vec![]);
}

#[test]
fn name_and_version_patterns() {
    assert_eq!(dc(&with(base(), json!({"name": "a b/c_d-e.f", "version": "1.0+b/2_3-4"}))), vec![]);
    assert_eq!(
        dc(&with(base(), json!({"name": long_str('n', 1024), "version": long_str('v', 512)}))),
        vec![]
    );
    // Numbers stringify to valid characters.
    assert_eq!(dc(&with(base(), json!({"name": 123, "version": 1.5}))), vec![]);
    let errors = dc(&with(base(), json!({"name": "", "version": "a b"})));
    assert_eq!(errors.len(), 2);
    assert!(errors[0].message.as_deref().unwrap_or("").starts_with("image name has invalid"));
    assert!(errors[1].message.as_deref().unwrap_or("").starts_with("image version has invalid"));
    // Length is counted in UTF-16 code units, like JS.
    let emoji_name = "\u{1F600}".repeat(513);
    assert_eq!(
        only_error(json!({"name": emoji_name})).2.as_deref(),
        Some("image name is too long, max 1024 characters")
    );
}

fn long_str(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

#[test]
fn urls_need_http_or_https() {
    for ok in ["http://x", "https://x/y", "HTTPS://X", " \thttp://x", "\u{feff}http://x", "http:x"] {
        assert_eq!(dc(&with(base(), json!({"homepage": ok, "eula": ok}))), vec![], "{ok:?}");
    }
    for bad in ["", "example.com", "http//x", "javascript:x", "\u{3000}http://x", "ht tp://x"] {
        assert_eq!(
            only_error(json!({"homepage": bad})),
            invalid("homepage", "invalid image homepage URL protocol"),
            "{bad:?}"
        );
    }
}

#[test]
fn booleans_accept_true_false_strings() {
    let manifest = with(
        base(),
        json!({"disabled": "true", "activated": "true", "public": "false",
        "icon": "false", "generate_passwords": "true"}),
    );
    assert_eq!(dc(&manifest), vec![]);
    assert_eq!(only_error(json!({"disabled": 1})), ("disabled".into(), "Invalid".into(), None));
    assert_eq!(
        only_error(json!({"public": "yes"})),
        invalid("public", "TypeError: invalid value for \"undefined\": \"yes\"")
    );
    assert_eq!(
        only_error(json!({"public": null})),
        invalid("public", "TypeError: invalid value for \"undefined\": null")
    );
}

#[test]
fn published_at_format() {
    for ok in ["2019-01-02T03:04:05Z", "2019-01-02T03:04:05.678Z", "9999-99-99T99:99:99Z"] {
        assert_eq!(dc(&with(base(), json!({"published_at": ok}))), vec![], "{ok}");
    }
    for bad in [
        "2019-01-02",
        "2019-01-02T03:04:05.67Z",
        "2019-01-02T03:04:05",
        "2019-01-02T03:04:05.678+00:00",
        "x2019-01-02T03:04:05Z",
    ] {
        assert_eq!(
            only_error(json!({"published_at": bad})).2.as_deref(),
            Some("published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format"),
            "{bad}"
        );
    }
    // Falsy values are not checked, even when activated.
    for falsy in [json!(""), json!(null), json!(0), json!(false)] {
        assert_eq!(dc(&with(base(), json!({"published_at": falsy}))), vec![]);
    }
}

#[test]
fn activated_requires_files_and_published_at() {
    let bare = without(base(), &["files", "published_at"]);
    assert_eq!(dc(&bare).len(), 2);
    assert_eq!(dc(&with(bare.clone(), json!({"activated": "true"}))).len(), 2);
    assert_eq!(dc(&with(bare.clone(), json!({"activated": false, "state": "unactivated"}))), vec![]);
    assert_eq!(dc(&with(bare, json!({"activated": "false"}))), vec![]);
    // An unparseable `activated` is reported once and does not count as activated.
    let odd = with(without(base(), &["files", "published_at"]), json!({"activated": 1}));
    assert_eq!(triples(&dc(&odd)), [("activated", "Invalid", None)]);
}

#[test]
fn state_values() {
    for state in ["active", "unactivated", "disabled", "failed", "creating"] {
        assert_eq!(dc(&with(base(), json!({"state": state}))), vec![], "{state}");
    }
    for bad in [json!("installed"), json!(5), json!(null), json!(["active"])] {
        assert_eq!(only_error(json!({"state": bad})), ("state".into(), "Invalid".into(), None));
    }
}

#[test]
fn type_and_os_null_only_for_placeholders() {
    let nulls = json!({"type": "null", "os": "null"});
    assert_eq!(
        triples(&dc(&with(base(), nulls.clone()))),
        [
            ("type", "Invalid", Some("invalid image type, \"null\"")),
            ("os", "Invalid", Some("invalid image os, \"null\""))
        ]
    );
    for state in ["creating", "failed"] {
        let placeholder = with(with(base(), nulls.clone()), json!({"state": state}));
        assert_eq!(dc(&placeholder), vec![]);
    }
    // A JSON null is not the string "null".
    assert_eq!(
        only_error(json!({"os": null})).2.as_deref(),
        Some("invalid image os, \"null\", must be one of: smartos, linux, windows, bsd, illumos, other")
    );
}

#[test]
fn type_and_os_lookups_see_object_prototype_names() {
    // Mirrors `VALID_TYPES[type] === undefined` on a plain JS object.
    assert_eq!(dc(&with(base(), json!({"type": "constructor", "os": "toString"}))), vec![]);
    assert_eq!(dc(&with(base(), json!({"type": "docker", "os": "bsd"}))), vec![]);
    assert_eq!(
        only_error(json!({"type": {"a": 1}})).2.as_deref(),
        Some("invalid image type, \"{ a: 1 }\", must be one of: zone-dataset, zvol, lx-dataset, lxd, docker, other")
    );
}

#[test]
fn zvol_fields_are_required_for_zvol() {
    let bare = without(zvol(), &["nic_driver", "disk_driver", "cpu_type", "image_size"]);
    assert_eq!(
        triples(&dc(&bare)),
        [
            ("nic_driver", "MissingParameter", None),
            ("disk_driver", "MissingParameter", None),
            ("cpu_type", "MissingParameter", None),
            ("image_size", "MissingParameter", None)
        ]
    );
    // Not required by the minimal validator.
    let minimal_zvol = with(minimal(), json!({"type": "zvol"}));
    assert_eq!(validate_minimal(&minimal_zvol), vec![]);
    let typed = with(zvol(), json!({"nic_driver": 5, "disk_driver": null, "cpu_type": ["host"]}));
    assert_eq!(
        triples(&dc(&typed)),
        [
            ("nic_driver", "Invalid", Some("invalid image nic_driver: \"5\" (must be a string)")),
            ("disk_driver", "Invalid", Some("invalid image disk_driver: \"null\" (must be a string)")),
            ("cpu_type", "Invalid", Some("invalid image cpu_type: \"[ 'host' ]\" (must be a string)"))
        ]
    );
}

#[test]
fn zvol_fields_are_refused_for_other_types() {
    let extra = with(
        base(),
        json!({"nic_driver": "virtio", "disk_driver": "ide",
        "cpu_type": "host", "image_size": 10}),
    );
    assert_eq!(
        triples(&dc(&extra)),
        [
            (
                "nic_driver",
                "Invalid",
                Some("invalid image nic_driver: \"virtio\" (cannot have a value when image type is zvol)")
            ),
            (
                "disk_driver",
                "Invalid",
                Some("invalid image disk_driver: \"ide\" (cannot have a value  when image type is zvol)")
            ),
            (
                "cpu_type",
                "Invalid",
                Some("invalid image cpu_type: \"host\" (cannot have a value when image type is zvol)")
            ),
            (
                "image_size",
                "Invalid",
                Some("invalid image image_size: \"10\" (cannot have a value when image type is zvol)")
            )
        ]
    );
    // Falsy values slip past the type check: "" and 0 pass, null/false fail as non-strings.
    let falsy = with(base(), json!({"nic_driver": "", "image_size": 0, "cpu_type": false}));
    assert_eq!(
        triples(&dc(&falsy)),
        [("cpu_type", "Invalid", Some("invalid image cpu_type: \"false\" (must be a string)"))]
    );
}

#[test]
fn image_size_is_coerced_and_only_checked_for_integrality() {
    for ok in [json!(10240), json!("10240"), json!(-5), json!(" 7 "), json!("0x10"), json!(1e300)] {
        assert_eq!(dc(&with(zvol(), json!({"image_size": ok.clone()}))), vec![], "{ok}");
    }
    for (bad, shown) in
        [(json!(1.5), "1.5"), (json!("big"), "big"), (json!({}), "{}"), (json!([1, 2]), "[ 1, 2 ]")]
    {
        let errors = dc(&with(zvol(), json!({"image_size": bad})));
        assert_eq!(
            triples(&errors),
            [(
                "image_size",
                "Invalid",
                Some(format!("invalid image image_size: \"{shown}\" (must be a positive integer)").as_str())
            )]
        );
    }
}

#[test]
fn negative_zero_prints_like_node() {
    // util.format('%s', -0) is "-0"; JSON.stringify(-0) is "0".
    let manifest: Map<String, Value> = serde_json::from_str(r#"{"cpu_type": -0, "public": -0}"#).unwrap();
    let errors = dc(&with(base(), Value::Object(manifest)));
    assert_eq!(
        triples(&errors),
        [
            ("public", "Invalid", Some("TypeError: invalid value for \"undefined\": 0")),
            ("cpu_type", "Invalid", Some("invalid image cpu_type: \"-0\" (must be a string)"))
        ]
    );
}

#[test]
fn files_rules() {
    let file = json!({"sha1": "a", "size": 1, "compression": "none"});
    assert_eq!(dc(&with(base(), json!({"type": "lxd", "files": [file.clone(), file.clone()]}))), vec![]);
    assert_eq!(
        only_error(json!({"type": "lxd", "files": [file.clone(), file.clone(), file.clone()]})).2.as_deref(),
        Some("invalid image \"files\": too many files")
    );
    assert_eq!(dc(&with(base(), json!({"files": []}))), vec![]);
    assert_eq!(
        only_error(json!({"files": "f.gz"})).2.as_deref(),
        Some("invalid image \"files\" (not an array): f.gz")
    );
    assert_eq!(
        only_error(json!({"files": {"sha1": "a"}})).2.as_deref(),
        Some("invalid image \"files\" (not an array): { sha1: 'a' }")
    );
    // A null entry makes the JS throw; it is reported as a file missing everything.
    let errors = dc(&with(base(), json!({"files": [null]})));
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e.field == "files"));
}

#[test]
fn acl_reports_first_bad_item_only() {
    assert_eq!(dc(&with(base(), json!({"acl": [OTHER_UUID, UUID]}))), vec![]);
    assert_eq!(
        only_error(json!({"acl": [OTHER_UUID, "bad", "worse"]})),
        invalid("acl", "invalid image \"acl\" (item 1 is not a UUID): bad")
    );
    assert_eq!(
        only_error(json!({"acl": OTHER_UUID})),
        invalid("acl", &format!("invalid image \"acl\" (not an array): {OTHER_UUID}"))
    );
    assert_eq!(
        only_error(json!({"acl": [{"a": 1}]})),
        invalid("acl", "invalid image \"acl\" (item 0 is not a UUID): { a: 1 }")
    );
}

#[test]
fn requirements_networks_shape() {
    let good = json!({"requirements": {"networks": [{"name": "net0", "description": "public"}]}});
    assert_eq!(dc(&with(base(), good)), vec![]);
    let bad = json!({"requirements": {"networks": [
        {"name": "net0"}, {"name": "a", "description": "b", "c": 1}, "net1", null]}});
    assert_eq!(
        triples(&dc(&with(base(), bad))),
        [("requirements.networks", "Invalid", Some("invalid image \"requirements.networks\" entry: {\"name\":\"net0\"}")),
         ("requirements.networks", "Invalid", Some("invalid image \"requirements.networks\" entry: {\"name\":\"a\",\"description\":\"b\",\"c\":1}")),
         ("requirements.networks", "Invalid", Some("invalid image \"requirements.networks\" entry: \"net1\"")),
         ("requirements.networks", "Invalid", Some("invalid image \"requirements.networks\" entry: null"))]
    );
    assert_eq!(
        only_error(json!({"requirements": {"networks": {"name": "n"}}})),
        invalid(
            "requirements.networks",
            "invalid image \"requirements.networks\" (not an array): {\"name\":\"n\"}"
        )
    );
}

#[test]
fn requirements_ram() {
    for ok in
        [json!({"min_ram": 512, "max_ram": 512}), json!({"min_ram": -5}), json!({"max_ram": 0, "min_ram": 9})]
    {
        assert_eq!(dc(&with(base(), json!({"requirements": ok.clone()}))), vec![], "{ok}");
    }
    let errors = dc(&with(base(), json!({"requirements": {"min_ram": 1.5, "max_ram": "1024"}})));
    assert_eq!(
        triples(&errors),
        [
            (
                "requirements.min_ram",
                "Invalid",
                Some("invalid image \"requirements.min_ram\" (not a positive integer): 1.5")
            ),
            (
                "requirements.max_ram",
                "Invalid",
                Some("invalid image \"requirements.max_ram\" (not a positive integer): \"1024\"")
            )
        ]
    );
}

#[test]
fn requirements_platform_format() {
    let ok = json!({"requirements": {"min_platform": {"7.0": "20130308T102805Z"},
                                     "max_platform": {"7.0": "20991231T235959Z", "6.5": "20120101T000000Z"}}});
    assert_eq!(dc(&with(base(), ok)), vec![]);
    for bad in [
        "2013",
        "20110308T102805Z",
        "20131308T102805Z",
        "20130300T102805Z",
        "20130332T102805Z",
        "20130308X102805Z",
        "20130308T242805Z",
        "20130308T106005Z",
        "20130308T102860Z",
        "20130308T102805z",
    ] {
        assert_eq!(
            only_error(json!({"requirements": {"min_platform": {"7.0": bad}}})),
            invalid("requirements.min_platform",
                &format!("invalid image \"requirements.min_platform\" entry: \"7.0: {bad}\" not a valid platform version")),
            "{bad}"
        );
    }
    // Piecewise Number() checks let NaN parts through, as in the JS.
    assert_eq!(
        dc(&with(base(), json!({"requirements": {"min_platform": {"x": "Infi0101T000000Z"}}}))),
        vec![]
    );
    assert_eq!(
        only_error(json!({"requirements": {"max_platform": {}}})),
        invalid(
            "requirements.max_platform",
            "invalid image \"requirements.max_platform\" (not an object): {}"
        )
    );
    assert_eq!(
        only_error(json!({"requirements": {"max_platform": {"7.0": null}}})),
        invalid(
            "requirements.max_platform",
            "invalid image \"requirements.max_platform\" entry: \"7.0: null\" not a valid platform version"
        )
    );
}

#[test]
fn requirements_bootrom_needs_bhyve() {
    assert_eq!(dc(&with(base(), json!({"requirements": {"brand": "bhyve", "bootrom": "bios"}}))), vec![]);
    assert_eq!(
        triples(&dc(&with(base(), json!({"requirements": {"bootrom": "uefi"}})))),
        [("requirements.bootrom", "MissingParameter",
          Some("\"requirements.brand\" not specified. \"requirements.bootrom\" requires \"requirements.brand\" to be set to \"bhyve\""))]
    );
    assert_eq!(
        only_error(json!({"requirements": {"brand": "kvm", "bootrom": "uefi"}})),
        invalid("requirements.bootrom",
            "invalid bootrom \"requirements.bootrom\" not supported with \"kvm\" brand; \"requirements.brand\" must be \"bhyve\"")
    );
    assert_eq!(
        only_error(json!({"requirements": {"brand": "bhyve", "bootrom": "pxe"}})),
        invalid(
            "requirements.bootrom",
            "invalid bootrom \"requirements.bootrom\" invalid entry \"pxe\"; must be one of: bios, uefi"
        )
    );
}

#[test]
fn requirements_other_keys_and_shapes() {
    assert_eq!(
        triples(&dc(&with(base(), json!({"requirements": {"brand": 5, "ssh_key": "yes", "foo": 1}})))),
        [
            ("requirements.brand", "Invalid", Some("invalid image \"requirements.brand\" (not a string): 5")),
            (
                "requirements.ssh_key",
                "Invalid",
                Some("invalid image \"requirements.ssh_key\" (not a boolean): \"yes\"")
            ),
            ("foo", "Invalid", Some("unsupported requirement \"foo\""))
        ]
    );
    // The JS copies with Object.keys: a string becomes {0: …, 1: …}, a number {}.
    assert_eq!(
        triples(&dc(&with(base(), json!({"requirements": "ab"})))),
        [
            ("0", "Invalid", Some("unsupported requirement \"0\"")),
            ("1", "Invalid", Some("unsupported requirement \"1\""))
        ]
    );
    assert_eq!(dc(&with(base(), json!({"requirements": 5}))), vec![]);
    assert_eq!(
        only_error(json!({"requirements": null})),
        invalid("requirements", "invalid image \"requirements\" (not an object): null")
    );
}

#[test]
fn users_shape() {
    assert_eq!(dc(&with(base(), json!({"users": [{"name": "root"}, {"name": "admin"}]}))), vec![]);
    assert_eq!(
        triples(&dc(&with(base(), json!({"users": [{"name": "a", "uid": 1}, {"user": "x"}, "root", null]})))),
        [
            ("users", "Invalid", Some("invalid image \"users\" entry: {\"name\":\"a\",\"uid\":1}")),
            ("users", "Invalid", Some("invalid image \"users\" entry: {\"user\":\"x\"}")),
            ("users", "Invalid", Some("invalid image \"users\" entry: \"root\"")),
            ("users", "Invalid", Some("invalid image \"users\" entry: null"))
        ]
    );
    assert_eq!(
        only_error(json!({"users": {"name": "root"}})),
        invalid("users", "invalid image \"users\" (not an array): {\"name\":\"root\"}")
    );
}

#[test]
fn billing_tags_traits_tags() {
    assert_eq!(
        triples(&dc(&with(base(), json!({"billing_tags": ["ok", 5, long_str('t', 129)]})))),
        [
            ("billing_tags", "Invalid", Some("invalid image \"billing_tags\" entry : 5")),
            (
                "billing_tags",
                "Invalid",
                Some(format!("invalid image \"billing_tags\" entry : {}", long_str('t', 129)).as_str())
            )
        ]
    );
    assert_eq!(
        triples(&dc(&with(base(), json!({"traits": {"a": 1, "b": "s", "c": true, "d": [], "e": {}}})))),
        [
            ("traits", "Invalid", Some("invalid image \"traits\" entry: (a, 1)")),
            ("traits", "Invalid", Some("invalid image \"traits\" entry: (e, {})"))
        ]
    );
    assert_eq!(
        only_error(json!({"traits": null})),
        invalid("traits", "invalid image \"traits\" (not an object): null")
    );
    assert_eq!(dc(&with(base(), json!({"tags": {"a": {"b": [1, null]}}}))), vec![]);
    assert_eq!(
        only_error(json!({"tags": ["role=os"]})),
        invalid("tags", "invalid image \"tags\" (not an object): [\"role=os\"]")
    );
    assert_eq!(
        only_error(json!({"tags": null})),
        invalid("tags", "invalid image \"tags\" (not an object): null")
    );
}

#[test]
fn tags_size_limit_counts_utf16_of_the_json() {
    // {"big":"…"} is 10 characters around the value.
    let fits = json!({"tags": {"big": long_str('x', 102390)}});
    assert_eq!(dc(&with(base(), fits)), vec![]);
    let too_big = json!({"tags": {"big": long_str('x', 102400)}});
    assert_eq!(
        only_error(too_big),
        invalid("tags", "image \"tags\" object is too big: 102410 characters (max 102400)")
    );
    let emoji = json!({"tags": {"big": "\u{1F600}".repeat(51200)}});
    assert_eq!(
        only_error(emoji),
        invalid("tags", "image \"tags\" object is too big: 102410 characters (max 102400)")
    );
}

#[test]
fn inherited_directories_only_for_zone_dataset() {
    assert_eq!(dc(&with(base(), json!({"inherited_directories": ["/opt", "/usr"]}))), vec![]);
    assert_eq!(
        triples(&dc(&with(zvol(), json!({"inherited_directories": ["/opt"]})))),
        [("inherited_directories", "Invalid",
          Some("invalid image \"inherited_directories\" (only valid for a type:zone-dataset image): [\"/opt\"]"))]
    );
    assert_eq!(
        triples(&dc(&with(base(), json!({"inherited_directories": [5, "/opt"]})))),
        [("inherited_directories", "Invalid", Some("invalid image \"inherited_directories\" entry: 5"))]
    );
}

#[test]
fn icon_generate_passwords_error_urn() {
    assert_eq!(
        dc(&with(
            base(),
            json!({"icon": false, "generate_passwords": false,
        "error": {"message": "x"}, "urn": "sdc:sdc:x:1"})
        )),
        vec![]
    );
    assert_eq!(
        triples(&dc(&with(
            base(),
            json!({"icon": "yes", "generate_passwords": 1, "error": "boom", "urn": 5})
        ))),
        [
            ("urn", "Invalid", None),
            ("error", "Invalid", Some("invalid image \"error\" (not an object): \"boom\"")),
            ("icon", "Invalid", Some("invalid image \"icon\" (not an accepted boolean value): \"yes\"")),
            (
                "generate_passwords",
                "Invalid",
                Some("invalid image \"generate_passwords\" (not an accepted boolean value): 1")
            )
        ]
    );
}

#[test]
fn channels_follow_the_server_configuration() {
    let in_dev = with(base(), json!({"channels": ["dev"]}));
    assert_eq!(with_channels(&in_dev), vec![]);
    assert_eq!(with_channels(&with(base(), json!({"channels": []}))), vec![]);
    assert_eq!(triples(&with_channels(&base())), [("channels", "MissingParameter", None)]);
    assert_eq!(
        triples(&dc(&in_dev)),
        [("channels", "Invalid", Some("channels is invalid with an IMGAPI not configured for channels"))]
    );
    assert_eq!(
        triples(&with_channels(&with(base(), json!({"channels": ["dev", 5]})))),
        [("channels", "Invalid", Some("invalid image \"channels\" entry: 5"))]
    );
    assert_eq!(
        triples(&with_channels(&with(base(), json!({"channels": "dev"})))),
        [("channels", "Invalid", Some("invalid image \"channels\" (not an array): \"dev\""))]
    );
    // Minimal validation has no server context: shape only.
    assert_eq!(validate_minimal(&with(minimal(), json!({"channels": ["dev"]}))), vec![]);
    assert_eq!(validate_minimal(&with(minimal(), json!({"channels": "dev"}))).len(), 1);
}

#[test]
fn values_that_make_the_js_throw_are_reported() {
    let cases = [
        (json!({"name": null}), ("name", "Invalid", None)),
        (json!({"version": null}), ("version", "Invalid", None)),
        (json!({"description": null}), ("description", "Invalid", None)),
        (json!({"homepage": 5}), ("homepage", "Invalid", Some("invalid image homepage URL protocol"))),
        (json!({"eula": ["http://x"]}), ("eula", "Invalid", Some("invalid image EULA URL protocol"))),
        (json!({"disabled": "no"}), ("disabled", "Invalid", None)),
    ];
    for (changes, (field, code, message)) in cases {
        assert_eq!(triples(&dc(&with(base(), changes.clone()))), [(field, code, message)], "{changes}");
    }
}

#[test]
fn no_json_input_panics() {
    let samples = [
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e308),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("null"),
        json!("zvol"),
        json!("\u{1F600}"),
        json!("\u{0}\u{7f}\u{85}'\"`${"),
        json!([]),
        json!([null]),
        json!([[[[1]]]]),
        json!({}),
        json!({"length": "99999"}),
        json!({"sha1": null, "size": {}, "compression": []}),
        json!({"0": {"1": {"2": []}}}),
        json!((0..150).collect::<Vec<_>>()),
        json!({"networks": [null], "min_platform": {"x": [1]}, "bootrom": {}, "brand": []}),
    ];
    let fields: Vec<&str> = KNOWN_FIELDS.iter().copied().chain(["unknown", "7"]).collect();
    for field in &fields {
        for sample in &samples {
            for start in [base(), zvol(), minimal(), Map::new()] {
                let mut manifest = start;
                manifest.insert((*field).to_owned(), sample.clone());
                let _ = dc(&manifest);
                let _ = with_channels(&manifest);
                let _ = validate_minimal(&manifest);
            }
        }
    }
    // The deepest value serde_json will parse (its recursion limit is 128) in every field:
    // String(), Number() and JSON.stringify walk it recursively.
    let deep_text = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let deep: Value = serde_json::from_str(&deep_text).expect("within serde_json's depth limit");
    for field in &fields {
        let manifest = with(base(), json!({ *field: deep.clone() }));
        let _ = dc(&manifest);
        let _ = validate_minimal(&manifest);
    }
}

// ---- JS semantics helpers (values checked against node 20)

#[test]
fn js_number_to_string() {
    let cases = [
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (-1e-7, "-1e-7"),
        (123.456, "123.456"),
        (0.000001, "0.000001"),
        (9007199254740994.0, "9007199254740994"),
        (1.5e300, "1.5e+300"),
        (5e-324, "5e-324"),
        (100.0, "100"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-0.0, "0"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
    ];
    for (number, text) in cases {
        assert_eq!(js::number_to_string(number), text);
    }
}

#[test]
fn js_string_to_number() {
    let cases: [(&str, f64); 14] = [
        ("", 0.0),
        (" 12 ", 12.0),
        ("0x1F", 31.0),
        ("0b101", 5.0),
        ("0o17", 15.0),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("+.5e1", 5.0),
        ("Infinity", f64::INFINITY),
        ("-Infinity", f64::NEG_INFINITY),
        ("\u{a0}12\u{2028}", 12.0),
        ("\u{feff}7", 7.0),
        ("-5", -5.0),
    ];
    for (text, number) in cases {
        assert_eq!(js::string_to_number(text), number, "{text:?}");
    }
    for text in ["-0x10", ".", "1_0", "infinity", "\u{85} 1", "1e", "e1", "12abc", "0x", "inf", "NaN"] {
        assert!(js::string_to_number(text).is_nan(), "{text:?}");
    }
}

#[test]
fn js_to_string_and_stringify() {
    assert_eq!(js::to_string(&json!([1, null, [2, 3], {"a": 1}, true])), "1,,2,3,[object Object],true");
    assert_eq!(
        js::json_stringify(&json!({"b": 1.0, "1": "a\"b\\c\n\u{1}é", "a": [1e21]})),
        r#"{"1":"a\"b\\c\n\u0001é","b":1,"a":[1e+21]}"#
    );
}

#[test]
fn js_format_s_inspects_like_node() {
    let cases = [
        (json!([]), "[]"),
        (json!([1, 2, 3]), "[ 1, 2, 3 ]"),
        (json!({"a": 1, "b-c": "x", "_d": null, "1": true}), "{ '1': true, a: 1, 'b-c': 'x', _d: null }"),
        (json!({"n": {"x": 1}, "l": [1], "e": [], "o": {}}), "{ n: [Object], l: [Array], e: [], o: {} }"),
        (json!((0..30).map(|i| i * 7).collect::<Vec<_>>()),
         "[\n    0,   7,  14,  21,  28,  35,  42,  49,\n   56,  63,  70,  77,  84,  91,  98, 105,\n  112, 119, 126, 133, 140, 147, 154, 161,\n  168, 175, 182, 189, 196, 203\n]"),
        (json!(["alpha", "b", "gamma", "d", "epsilon", "f", "eta", "h", "iota", "j"]),
         "[\n  'alpha',   'b',\n  'gamma',   'd',\n  'epsilon', 'f',\n  'eta',     'h',\n  'iota',    'j'\n]"),
        (json!({"s": "it's", "t": "say \"hi\"", "u": "a'b\"c`d", "w": "\u{1}\u{7f}"}),
         "{ s: \"it's\", t: 'say \"hi\"', u: 'a\\'b\"c`d', w: '\\x01\\x7F' }"),
        (json!({"a": long_str('x', 70)}), &format!("{{\n  a: '{}'\n}}", long_str('x', 70))),
    ];
    for (value, text) in cases {
        assert_eq!(js::format_s(&value), text, "{value}");
    }
    let hundred_and_one: Vec<u32> = (0..101).collect();
    let shown = js::format_s(&json!(hundred_and_one));
    assert!(shown.starts_with("[\n   0,  1,  2,"), "{shown}");
    assert!(shown.ends_with("  96, 97, 98, 99,\n  ... 1 more item\n]"), "{shown}");
}
