//! Image manifest validation: a port of node-imgmanifest 3.2.x's `validate*Manifest` rules.
//!
//! The reference IMGAPI answers a bad manifest with `422 ValidationFailed` and an `errors[]`
//! list built by node-imgmanifest. Clients and test suites compare those lists, so this port
//! reproduces the JS outcome field by field: the same fields, codes, messages and order,
//! including the JS type coercions (`Number(x)`, `String(x)`, truthiness) that decide them.
//! The `js` submodule holds those coercions and the parts of node's `util.format` that the
//! messages depend on.
//!
//! Where the JS throws a `TypeError` instead of reporting (e.g. `name: null`, `files: [null]`),
//! the reference server answers 500; here the error the validator evidently meant is reported
//! instead, so no JSON input can make validation fail in any other way.

use serde_json::{Map, Value};

/// One problem with one manifest field, as IMGAPI reports it in `errors[]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: String, // "MissingParameter" or "Invalid" (exactly as imgmanifest)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>, // exactly imgmanifest's message text where it has one
}

impl FieldError {
    /// `{field, code: "MissingParameter"}` without a message.
    pub fn missing(field: impl Into<String>) -> Self {
        Self { field: field.into(), code: CODE_MISSING.to_owned(), message: None }
    }

    /// `{field, code: "Invalid"}` without a message.
    pub fn invalid(field: impl Into<String>) -> Self {
        Self { field: field.into(), code: CODE_INVALID.to_owned(), message: None }
    }

    /// `{field, code: "Invalid", message}`.
    pub fn invalid_with(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), code: CODE_INVALID.to_owned(), message: Some(message.into()) }
    }

    fn missing_with(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), code: CODE_MISSING.to_owned(), message: Some(message.into()) }
    }
}

/// Which server-side rules apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationMode {
    /// The server has channels configured, so `channels` is required.
    pub channels_required: bool,
}

/// The `message` of the reference server's `ValidationFailed` body for these errors:
/// `"invalid image data: <field>, <field>, …"`.
pub fn summary_message(errors: &[FieldError]) -> String {
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    format!("invalid image data: {}", fields.join(", "))
}

/// validateDcManifest-equivalent: the full set of rules the server applies before storing
/// a manifest (create, import, update). Public and private images are both allowed (dc mode).
/// Returns every problem found (empty vec = valid), in the order imgmanifest reports them.
pub fn validate_full(manifest: &Map<String, Value>, mode: ValidationMode) -> Vec<FieldError> {
    let mut required = FULL_REQUIRED_FIELDS.to_vec();
    let channels = if mode.channels_required {
        required.push("channels");
        ChannelsConfig::Configured
    } else {
        ChannelsConfig::NotConfigured
    };
    Validator::new(manifest, channels).run(&required)
}

/// validateMinimalManifest-equivalent (what imgadm checks before installing).
///
/// A present `channels` is only checked for shape here: the JS dereferences the missing
/// options object and throws, so there is no reference verdict to copy.
pub fn validate_minimal(manifest: &Map<String, Value>) -> Vec<FieldError> {
    Validator::new(manifest, ChannelsConfig::Unspecified).run(MINIMAL_REQUIRED_FIELDS)
}

const CODE_MISSING: &str = "MissingParameter";
const CODE_INVALID: &str = "Invalid";

/// `validateDcManifest`'s required fields, in the order their validators run.
const FULL_REQUIRED_FIELDS: &[&str] = &[
    "v",
    "uuid",
    "owner",
    "name",
    "version",
    "disabled",
    "activated",
    "published_at",
    "public",
    "state",
    "type",
    "os",
    "files",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
];

const MINIMAL_REQUIRED_FIELDS: &[&str] = &["v", "uuid", "name", "version", "type", "os"];

/// imgmanifest's `fields` table: every known top-level key, in the order optional fields
/// are validated. Anything else is a spurious field.
pub const KNOWN_FIELDS: &[&str] = &[
    "v",
    "uuid",
    "urn",
    "owner",
    "name",
    "version",
    "description",
    "homepage",
    "eula",
    "disabled",
    "activated",
    "published_at",
    "state",
    "public",
    "type",
    "os",
    "origin",
    "error",
    "files",
    "icon",
    "acl",
    "requirements",
    "users",
    "billing_tags",
    "traits",
    "tags",
    "generate_passwords",
    "inherited_directories",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
    "channels",
];

const MAX_URL_LENGTH: usize = 1024;
const MAX_NAME_LENGTH: usize = 1024;
const MAX_VERSION_LENGTH: usize = 512;
const MAX_DESCRIPTION_LENGTH: usize = 10 * 1024;
const MAX_BILLING_TAG_LENGTH: usize = 128;
const MAX_TAGS_LENGTH: usize = 100 * 1024;

const VALID_STATES: &[&str] = &["active", "unactivated", "disabled", "failed", "creating"];
// Order matters: the messages list them joined with ", ".
const VALID_TYPES: &[&str] = &["zone-dataset", "zvol", "lx-dataset", "lxd", "docker", "other"];
const VALID_OSES: &[&str] = &["smartos", "linux", "windows", "bsd", "illumos", "other"];
const VALID_FILE_COMPRESSIONS: &[&str] = &["gzip", "bzip2", "xz", "none"];
const VALID_BOOTROMS: &[&str] = &["bios", "uefi"];

/// The JS checks type and os with `VALID_TYPES[value] === undefined` on a plain object, so
/// the names `Object.prototype` carries also pass (`"type": "constructor"` is accepted).
const OBJECT_PROTOTYPE_PROPERTIES: &[&str] = &[
    "constructor",
    "__defineGetter__",
    "__defineSetter__",
    "hasOwnProperty",
    "__lookupGetter__",
    "__lookupSetter__",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toString",
    "valueOf",
    "__proto__",
    "toLocaleString",
];

/// The `requirements` keys with a validator; any other key is "unsupported".
const KNOWN_REQUIREMENTS: &[&str] =
    &["networks", "brand", "ssh_key", "min_ram", "max_ram", "min_platform", "max_platform", "bootrom"];

/// How a present `channels` field is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelsConfig {
    /// The server has channels: `channels` must be an array of strings.
    Configured,
    /// The server has none: any `channels` value is an error.
    NotConfigured,
    /// Minimal validation, which has no server context: check the shape only.
    Unspecified,
}

/// One validation run over one manifest; collects errors in imgmanifest's order.
struct Validator<'a> {
    manifest: &'a Map<String, Value>,
    channels: ChannelsConfig,
    errors: Vec<FieldError>,
}

impl<'a> Validator<'a> {
    fn new(manifest: &'a Map<String, Value>, channels: ChannelsConfig) -> Self {
        Self { manifest, channels, errors: Vec::new() }
    }

    /// imgmanifest's `validateFields`: required fields first (they report absence), then every
    /// other known field that is present, then one `Invalid` per unknown key.
    fn run(mut self, required: &[&str]) -> Vec<FieldError> {
        for field in required {
            self.check_field(field);
        }
        for field in KNOWN_FIELDS {
            if !required.contains(field) && self.manifest.contains_key(*field) {
                self.check_field(field);
            }
        }
        for (key, _) in js::own_entries(self.manifest) {
            if !KNOWN_FIELDS.contains(&key) {
                self.errors.push(FieldError::invalid(key));
            }
        }
        self.errors
    }

    fn check_field(&mut self, field: &str) {
        match field {
            "v" => self.check_v(),
            "uuid" | "owner" | "origin" => self.check_uuid_field(field),
            "urn" => self.check_urn(),
            "name" => self.check_name(),
            "version" => self.check_version(),
            "description" => self.check_description(),
            "homepage" => self.check_url_field("homepage", "homepage"),
            "eula" => self.check_url_field("eula", "EULA"),
            "disabled" | "activated" => self.check_plain_bool(field),
            "published_at" => self.check_published_at(),
            "state" => self.check_state(),
            "public" => self.check_public(),
            "type" => self.check_enum_with_null("type", VALID_TYPES),
            "os" => self.check_enum_with_null("os", VALID_OSES),
            "nic_driver" => {
                self.check_zvol_string("nic_driver", "(cannot have a value when image type is zvol)")
            }
            // The doubled space is imgmanifest's (string concatenation slip).
            "disk_driver" => {
                self.check_zvol_string("disk_driver", "(cannot have a value  when image type is zvol)")
            }
            "cpu_type" => self.check_zvol_string("cpu_type", "(cannot have a value when image type is zvol)"),
            "image_size" => self.check_image_size(),
            "channels" => self.check_channels(),
            "error" => self.check_error(),
            "files" => self.check_files(),
            "icon" => self.check_described_bool("icon"),
            "generate_passwords" => self.check_described_bool("generate_passwords"),
            "acl" => self.check_acl(),
            "requirements" => self.check_requirements(),
            "users" => self.check_users(),
            "billing_tags" => self.check_billing_tags(),
            "traits" => self.check_traits(),
            "tags" => self.check_tags(),
            "inherited_directories" => self.check_inherited_directories(),
            _ => {}
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.manifest.get(field)
    }

    fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// `type === "zvol"` etc.: the JS compares strictly, so only that exact string counts.
    fn field_is(&self, field: &str, expected: &str) -> bool {
        matches!(self.get(field), Some(Value::String(s)) if s == expected)
    }

    /// `boolFromString(manifest.activated) === true`. An unparseable `activated` makes the JS
    /// throw; it is reported by its own validator and counts as "not activated" here.
    fn is_activated(&self) -> bool {
        self.get("activated").and_then(bool_from_string) == Some(true)
    }

    fn check_v(&mut self) {
        let Some(v) = self.get("v") else {
            return self.push(FieldError::missing("v"));
        };
        // `Number(v)`: "2", null, true and [2] all pass; only NaN and negatives fail.
        let number = js::to_number(v);
        if number.is_nan() || number < 0.0 {
            self.push(FieldError::invalid_with("v", "\"v\" must be a positive integer"));
        }
    }

    fn check_uuid_field(&mut self, field: &str) {
        match self.get(field) {
            None => self.push(FieldError::missing(field)),
            // `UUID_RE.test(x)` stringifies x first, so `["<uuid>"]` passes.
            Some(value) if !is_uuid(&js::to_string(value)) => {
                self.push(FieldError::invalid(field));
            }
            Some(_) => {}
        }
    }

    fn check_urn(&mut self) {
        match self.get("urn") {
            None => self.push(FieldError::missing("urn")),
            Some(Value::String(_)) => {}
            Some(_) => self.push(FieldError::invalid("urn")),
        }
    }

    fn check_name(&mut self) {
        self.check_length_then_pattern(
            "name",
            MAX_NAME_LENGTH,
            is_valid_name,
            "image name has invalid characters (only alpha-numeric characters and \" \", \
             \".\", \"-\", \"_\" and \"/\" are allowed)",
        );
    }

    fn check_version(&mut self) {
        // The message omits "+" although the pattern allows it (imgmanifest's wording).
        self.check_length_then_pattern(
            "version",
            MAX_VERSION_LENGTH,
            is_valid_version,
            "image version has invalid characters (only alpha-numeric characters and \".\", \
             \"-\", \"_\" and \"/\" are allowed)",
        );
    }

    /// name and version: `x.length > MAX`, then `RE.test(String(x))`.
    fn check_length_then_pattern(
        &mut self,
        field: &str,
        max_length: usize,
        pattern_matches: fn(&str) -> bool,
        bad_characters_message: &str,
    ) {
        match self.get(field) {
            None => self.push(FieldError::missing(field)),
            // `null.length` throws in the JS.
            Some(Value::Null) => self.push(FieldError::invalid(field)),
            Some(value) if js::length_exceeds(value, max_length) => {
                self.push(FieldError::invalid_with(
                    field,
                    format!("image {field} is too long, max {max_length} characters"),
                ));
            }
            Some(value) if !pattern_matches(&js::to_string(value)) => {
                self.push(FieldError::invalid_with(field, bad_characters_message));
            }
            Some(_) => {}
        }
    }

    fn check_description(&mut self) {
        match self.get("description") {
            None => self.push(FieldError::missing("description")),
            Some(Value::Null) => self.push(FieldError::invalid("description")),
            // Only the length is checked: a number description passes.
            Some(value) if js::length_exceeds(value, MAX_DESCRIPTION_LENGTH) => {
                self.push(FieldError::invalid_with(
                    "description",
                    format!("image description is too long, max {MAX_DESCRIPTION_LENGTH} characters"),
                ));
            }
            Some(_) => {}
        }
    }

    /// homepage and eula: `url.parse(x).protocol` must be http: or https:, then the length.
    fn check_url_field(&mut self, field: &str, label: &str) {
        let protocol_error =
            || FieldError::invalid_with(field, format!("invalid image {label} URL protocol"));
        match self.get(field) {
            None => self.push(FieldError::missing(field)),
            Some(Value::String(url)) => {
                if !has_http_protocol(url) {
                    self.push(protocol_error());
                } else if js::utf16_len(url) > MAX_URL_LENGTH {
                    self.push(FieldError::invalid_with(
                        field,
                        format!("image {label} URL is too long (max {MAX_URL_LENGTH} characters)"),
                    ));
                }
            }
            // `url.parse()` throws on a non-string; it has no http(s) protocol either way.
            Some(_) => self.push(protocol_error()),
        }
    }

    /// disabled and activated: `true`, `false`, `"true"` or `"false"`.
    fn check_plain_bool(&mut self, field: &str) {
        match self.get(field) {
            None => self.push(FieldError::missing(field)),
            // The JS throws from boolFromString here; its intended report has no message.
            Some(value) if bool_from_string(value).is_none() => {
                self.push(FieldError::invalid(field));
            }
            Some(_) => {}
        }
    }

    /// icon and generate_passwords: as `check_plain_bool`, with imgmanifest's intended message.
    fn check_described_bool(&mut self, field: &str) {
        match self.get(field) {
            None => self.push(FieldError::missing(field)),
            Some(value) if bool_from_string(value).is_none() => {
                self.push(FieldError::invalid_with(
                    field,
                    format!(
                        "invalid image \"{field}\" (not an accepted boolean value): {}",
                        js::json_stringify(value)
                    ),
                ));
            }
            Some(_) => {}
        }
    }

    fn check_published_at(&mut self) {
        match self.get("published_at") {
            None if self.is_activated() => self.push(FieldError::missing_with(
                "published_at",
                "if activated is \"true\" published_at must be present",
            )),
            // Falsy values (null, "", 0, false) are not checked at all.
            Some(value) if js::truthy(value) && !is_published_at(&js::to_string(value)) => {
                self.push(FieldError::invalid_with(
                    "published_at",
                    "published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format",
                ));
            }
            _ => {}
        }
    }

    fn check_state(&mut self) {
        match self.get("state") {
            None => self.push(FieldError::missing("state")),
            Some(Value::String(s)) if VALID_STATES.contains(&s.as_str()) => {}
            Some(_) => self.push(FieldError::invalid("state")),
        }
    }

    fn check_public(&mut self) {
        match self.get("public") {
            None => self.push(FieldError::missing("public")),
            // The JS catches boolFromString's TypeError (called without a name) and reports
            // its text verbatim. In dc mode either boolean is allowed.
            Some(value) if bool_from_string(value).is_none() => {
                self.push(FieldError::invalid_with(
                    "public",
                    format!("TypeError: invalid value for \"undefined\": {}", js::json_stringify(value)),
                ));
            }
            Some(_) => {}
        }
    }

    /// type and os: one of `allowed`, or the string "null" while the image is a placeholder.
    fn check_enum_with_null(&mut self, field: &str, allowed: &[&str]) {
        let Some(value) = self.get(field) else {
            return self.push(FieldError::missing(field));
        };
        if matches!(value, Value::String(s) if s == "null") {
            if !self.field_is("state", "creating") && !self.field_is("state", "failed") {
                self.push(FieldError::invalid_with(field, format!("invalid image {field}, \"null\"")));
            }
            return;
        }
        // `ALLOWED[value] === undefined`: the value is used as a property key.
        let key = js::to_string(value);
        if !allowed.contains(&key.as_str()) && !OBJECT_PROTOTYPE_PROPERTIES.contains(&key.as_str()) {
            self.push(FieldError::invalid_with(
                field,
                format!(
                    "invalid image {field}, \"{}\", must be one of: {}",
                    js::format_s(value),
                    allowed.join(", ")
                ),
            ));
        }
    }

    /// nic_driver, disk_driver, cpu_type: required for zvol images, refused for others.
    fn check_zvol_string(&mut self, field: &str, not_zvol_remark: &str) {
        let is_zvol = self.field_is("type", "zvol");
        match self.get(field) {
            None if is_zvol => self.push(FieldError::missing(field)),
            None => {}
            // Falsy values ("", null, 0) slip past this branch and meet the string check.
            Some(value) if js::truthy(value) && !is_zvol => {
                self.push(FieldError::invalid_with(
                    field,
                    format!("invalid image {field}: \"{}\" {not_zvol_remark}", js::format_s(value)),
                ));
            }
            Some(Value::String(_)) => {}
            Some(value) => self.push(FieldError::invalid_with(
                field,
                format!("invalid image {field}: \"{}\" (must be a string)", js::format_s(value)),
            )),
        }
    }

    fn check_image_size(&mut self) {
        let is_zvol = self.field_is("type", "zvol");
        match self.get("image_size") {
            None if is_zvol => self.push(FieldError::missing("image_size")),
            None => {}
            Some(value) if js::truthy(value) && !is_zvol => {
                self.push(FieldError::invalid_with(
                    "image_size",
                    format!(
                        "invalid image image_size: \"{}\" (cannot have a value when image type \
                         is zvol)",
                        js::format_s(value)
                    ),
                ));
            }
            // `isPositiveInteger(Number(x))` only checks integrality: "10", -5, null pass.
            Some(value) if !is_integral(js::to_number(value)) => {
                self.push(FieldError::invalid_with(
                    "image_size",
                    format!(
                        "invalid image image_size: \"{}\" (must be a positive integer)",
                        js::format_s(value)
                    ),
                ));
            }
            Some(_) => {}
        }
    }

    fn check_channels(&mut self) {
        let Some(value) = self.get("channels") else {
            return self.push(FieldError::missing("channels"));
        };
        if self.channels == ChannelsConfig::NotConfigured {
            return self.push(FieldError::invalid_with(
                "channels",
                "channels is invalid with an IMGAPI not configured for channels",
            ));
        }
        // An empty array passes (the JS does not require a channel).
        match value {
            Value::Array(channels) => {
                for channel in channels.iter().filter(|c| !c.is_string()) {
                    self.push(FieldError::invalid_with(
                        "channels",
                        format!("invalid image \"channels\" entry: {}", js::json_stringify(channel)),
                    ));
                }
            }
            _ => self.push(FieldError::invalid_with(
                "channels",
                format!("invalid image \"channels\" (not an array): {}", js::json_stringify(value)),
            )),
        }
    }

    fn check_error(&mut self) {
        match self.get("error") {
            None => self.push(FieldError::missing("error")),
            // `typeof x !== 'object'`: null and arrays are objects to JS.
            Some(Value::Null | Value::Object(_) | Value::Array(_)) => {}
            Some(value) => self.push(FieldError::invalid_with(
                "error",
                format!("invalid image \"error\" (not an object): {}", js::json_stringify(value)),
            )),
        }
    }

    fn check_files(&mut self) {
        let Some(value) = self.get("files") else {
            if self.is_activated() {
                self.push(FieldError::missing_with(
                    "files",
                    "if activated is \"true\" files must be present",
                ));
            }
            return;
        };
        let Value::Array(files) = value else {
            return self.push(FieldError::invalid_with(
                "files",
                format!("invalid image \"files\" (not an array): {}", js::format_s(value)),
            ));
        };
        // lxd images carry a second file; everything else at most one.
        if files.len() > 2 || (!self.field_is("type", "lxd") && files.len() > 1) {
            return self.push(FieldError::invalid_with("files", "invalid image \"files\": too many files"));
        }
        for file in files {
            // Non-object entries have none of the properties (`null` makes the JS throw).
            let property = |key: &str| match file {
                Value::Object(entry) => entry.get(key),
                _ => None,
            };
            if !property("sha1").is_some_and(js::truthy) {
                self.push(FieldError::invalid_with(
                    "files",
                    "invalid image \"files\": file missing \"sha1\" field",
                ));
            }
            if !property("size").is_some_and(js::truthy) {
                self.push(FieldError::invalid_with(
                    "files",
                    "invalid image \"files\": file missing \"size\" field",
                ));
            }
            match property("compression") {
                Some(compression) if js::truthy(compression) => {
                    let known = matches!(compression, Value::String(s)
                        if VALID_FILE_COMPRESSIONS.contains(&s.as_str()));
                    if !known {
                        self.push(FieldError::invalid_with(
                            "files",
                            format!(
                                "invalid image \"files\": invalid compression \"{}\" (must be \
                                 one of {})",
                                js::format_s(compression),
                                VALID_FILE_COMPRESSIONS.join(", ")
                            ),
                        ));
                    }
                }
                _ => self.push(FieldError::invalid_with(
                    "files",
                    "invalid image \"files\": file missing \"compression\" field",
                )),
            }
        }
    }

    fn check_acl(&mut self) {
        let Some(value) = self.get("acl") else {
            return self.push(FieldError::missing("acl"));
        };
        let Value::Array(acl) = value else {
            return self.push(FieldError::invalid_with(
                "acl",
                format!("invalid image \"acl\" (not an array): {}", js::format_s(value)),
            ));
        };
        // Only the first bad entry is reported.
        if let Some((index, item)) = acl.iter().enumerate().find(|(_, item)| !is_uuid(&js::to_string(item))) {
            self.push(FieldError::invalid_with(
                "acl",
                format!("invalid image \"acl\" (item {index} is not a UUID): {}", js::format_s(item)),
            ));
        }
    }

    fn check_requirements(&mut self) {
        // The JS validates a shallow copy made with `Object.keys`, so strings and arrays turn
        // into index-keyed objects whose every key is an "unsupported requirement", and
        // numbers and booleans into empty (valid) objects.
        match self.get("requirements") {
            None => self.push(FieldError::missing("requirements")),
            Some(Value::Object(requirements)) => self.check_requirements_object(requirements),
            Some(Value::Array(items)) => self.push_unsupported_indices(items.len()),
            Some(Value::String(s)) => self.push_unsupported_indices(js::utf16_len(s)),
            Some(Value::Bool(_) | Value::Number(_)) => {}
            // `Object.keys(null)` throws; report the check the JS meant to make.
            Some(Value::Null) => self.push(FieldError::invalid_with(
                "requirements",
                "invalid image \"requirements\" (not an object): null",
            )),
        }
    }

    fn push_unsupported_indices(&mut self, count: usize) {
        for index in 0..count {
            self.push(unsupported_requirement(&index.to_string()));
        }
    }

    fn check_requirements_object(&mut self, requirements: &Map<String, Value>) {
        let truthy = |key: &str| requirements.get(key).filter(|v| js::truthy(v));

        if let Some(networks) = truthy("networks") {
            match networks {
                Value::Array(entries) => {
                    for entry in entries.iter().filter(|n| !is_network_entry(n)) {
                        self.push(FieldError::invalid_with(
                            "requirements.networks",
                            format!(
                                "invalid image \"requirements.networks\" entry: {}",
                                js::json_stringify(entry)
                            ),
                        ));
                    }
                }
                _ => self.push(FieldError::invalid_with(
                    "requirements.networks",
                    format!(
                        "invalid image \"requirements.networks\" (not an array): {}",
                        js::json_stringify(networks)
                    ),
                )),
            }
        }

        if let Some(brand) = truthy("brand").filter(|b| !b.is_string()) {
            self.push(FieldError::invalid_with(
                "requirements.brand",
                format!("invalid image \"requirements.brand\" (not a string): {}", js::json_stringify(brand)),
            ));
        }

        if let Some(ssh_key) = truthy("ssh_key").filter(|k| !k.is_boolean()) {
            self.push(FieldError::invalid_with(
                "requirements.ssh_key",
                format!(
                    "invalid image \"requirements.ssh_key\" (not a boolean): {}",
                    js::json_stringify(ssh_key)
                ),
            ));
        }

        let min_ram = self.check_ram(truthy("min_ram"), "min_ram");
        let max_ram = self.check_ram(truthy("max_ram"), "max_ram");
        if let (Some(min_ram), Some(max_ram)) = (min_ram, max_ram) {
            // Equal is fine. The error is filed under max_ram.
            if max_ram - min_ram < 0.0 {
                self.push(FieldError::invalid_with(
                    "requirements.max_ram",
                    format!(
                        "min_ram must be <= max_ram, but:min_ram={}, max_ram={}",
                        js::number_to_string(min_ram),
                        js::number_to_string(max_ram)
                    ),
                ));
            }
        }

        self.check_platform(truthy("min_platform"), "min_platform");
        self.check_platform(truthy("max_platform"), "max_platform");

        if let Some(bootrom) = truthy("bootrom") {
            match requirements.get("brand").filter(|b| js::truthy(b)) {
                None => self.push(FieldError::missing_with(
                    "requirements.bootrom",
                    "\"requirements.brand\" not specified. \"requirements.bootrom\" requires \
                     \"requirements.brand\" to be set to \"bhyve\"",
                )),
                Some(brand) if brand.as_str() != Some("bhyve") => {
                    self.push(FieldError::invalid_with(
                        "requirements.bootrom",
                        format!(
                            "invalid bootrom \"requirements.bootrom\" not supported with \"{}\" \
                             brand; \"requirements.brand\" must be \"bhyve\"",
                            js::format_s(brand)
                        ),
                    ));
                }
                Some(_) => {
                    let known = matches!(bootrom, Value::String(s)
                        if VALID_BOOTROMS.contains(&s.as_str()));
                    if !known {
                        self.push(FieldError::invalid_with(
                            "requirements.bootrom",
                            format!(
                                "invalid bootrom \"requirements.bootrom\" invalid entry \"{}\"; \
                                 must be one of: {}",
                                js::format_s(bootrom),
                                VALID_BOOTROMS.join(", ")
                            ),
                        ));
                    }
                }
            }
        }

        for (key, _) in js::own_entries(requirements) {
            if !KNOWN_REQUIREMENTS.contains(&key) {
                self.push(unsupported_requirement(key));
            }
        }
    }

    /// min_ram / max_ram: a number with no fractional part (the JS does not check the sign).
    /// Returns the value when it is usable for the min <= max comparison.
    fn check_ram(&mut self, value: Option<&Value>, key: &str) -> Option<f64> {
        let value = value?;
        match value {
            Value::Number(n) if is_integral(js::number_value(n)) => Some(js::number_value(n)),
            _ => {
                self.push(FieldError::invalid_with(
                    format!("requirements.{key}"),
                    format!(
                        "invalid image \"requirements.{key}\" (not a positive integer): {}",
                        js::json_stringify(value)
                    ),
                ));
                None
            }
        }
    }

    /// min_platform / max_platform: a non-empty object of `{"<sdc version>": "<timestamp>"}`.
    fn check_platform(&mut self, value: Option<&Value>, key: &str) {
        let Some(value) = value else { return };
        let entries: Vec<(String, &Value)> = match value {
            Value::Object(map) => js::own_entries(map).into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            // `for (k in array)` walks the indices.
            Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
            _ => Vec::new(),
        };
        if entries.is_empty() {
            return self.push(FieldError::invalid_with(
                format!("requirements.{key}"),
                format!(
                    "invalid image \"requirements.{key}\" (not an object): {}",
                    js::json_stringify(value)
                ),
            ));
        }
        for (platform, timestamp) in entries {
            if !is_platform_timestamp(timestamp) {
                self.push(FieldError::invalid_with(
                    format!("requirements.{key}"),
                    format!(
                        "invalid image \"requirements.{key}\" entry: \"{platform}: {}\" not a \
                         valid platform version",
                        js::format_s(timestamp)
                    ),
                ));
            }
        }
    }

    fn check_users(&mut self) {
        let Some(value) = self.get("users") else {
            return self.push(FieldError::missing("users"));
        };
        let Value::Array(users) = value else {
            return self.push(FieldError::invalid_with(
                "users",
                format!("invalid image \"users\" (not an array): {}", js::json_stringify(value)),
            ));
        };
        // Each entry is exactly `{"name": …}`.
        for user in users {
            let is_user = matches!(user, Value::Object(u) if u.len() == 1 && u.contains_key("name"));
            if !is_user {
                self.push(FieldError::invalid_with(
                    "users",
                    format!("invalid image \"users\" entry: {}", js::json_stringify(user)),
                ));
            }
        }
    }

    fn check_billing_tags(&mut self) {
        let Some(value) = self.get("billing_tags") else {
            return self.push(FieldError::missing("billing_tags"));
        };
        let Value::Array(tags) = value else {
            return self.push(FieldError::invalid_with(
                "billing_tags",
                format!("invalid image \"billing_tags\" (not an array): {}", js::format_s(value)),
            ));
        };
        for tag in tags {
            let is_tag = matches!(tag, Value::String(s) if js::utf16_len(s) <= MAX_BILLING_TAG_LENGTH);
            if !is_tag {
                // "entry :" (space before the colon) is imgmanifest's text.
                self.push(FieldError::invalid_with(
                    "billing_tags",
                    format!("invalid image \"billing_tags\" entry : {}", js::format_s(tag)),
                ));
            }
        }
    }

    fn check_traits(&mut self) {
        let Some(value) = self.get("traits") else {
            return self.push(FieldError::missing("traits"));
        };
        let entries: Vec<(String, &Value)> = match value {
            Value::Object(map) => js::own_entries(map).into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
            // `typeof null === 'object'` and then `Object.keys(null)` throws; report it as
            // the not-an-object case the check is meant to catch.
            _ => {
                return self.push(FieldError::invalid_with(
                    "traits",
                    format!("invalid image \"traits\" (not an object): {}", js::json_stringify(value)),
                ));
            }
        };
        for (key, trait_value) in entries {
            // Only strings, booleans and arrays are allowed as trait values.
            if !matches!(trait_value, Value::String(_) | Value::Bool(_) | Value::Array(_)) {
                self.push(FieldError::invalid_with(
                    "traits",
                    format!("invalid image \"traits\" entry: ({key}, {})", js::json_stringify(trait_value)),
                ));
            }
        }
    }

    fn check_tags(&mut self) {
        let Some(value) = self.get("tags") else {
            return self.push(FieldError::missing("tags"));
        };
        // Any JSON value may sit inside the object; only the serialized size is limited.
        // (`null` makes the JS throw after its size check; it is not an object either.)
        if !value.is_object() {
            return self.push(FieldError::invalid_with(
                "tags",
                format!("invalid image \"tags\" (not an object): {}", js::json_stringify(value)),
            ));
        }
        let length = js::utf16_len(&js::json_stringify(value));
        if length > MAX_TAGS_LENGTH {
            self.push(FieldError::invalid_with(
                "tags",
                format!("image \"tags\" object is too big: {length} characters (max {MAX_TAGS_LENGTH})"),
            ));
        }
    }

    fn check_inherited_directories(&mut self) {
        let Some(value) = self.get("inherited_directories") else {
            return self.push(FieldError::missing("inherited_directories"));
        };
        if !self.field_is("type", "zone-dataset") {
            return self.push(FieldError::invalid_with(
                "inherited_directories",
                format!(
                    "invalid image \"inherited_directories\" (only valid for a \
                     type:zone-dataset image): {}",
                    js::json_stringify(value)
                ),
            ));
        }
        let Value::Array(directories) = value else {
            return self.push(FieldError::invalid_with(
                "inherited_directories",
                format!(
                    "invalid image \"inherited_directories\" (not an array): {}",
                    js::json_stringify(value)
                ),
            ));
        };
        for directory in directories.iter().filter(|d| !d.is_string()) {
            self.push(FieldError::invalid_with(
                "inherited_directories",
                format!("invalid image \"inherited_directories\" entry: {}", js::json_stringify(directory)),
            ));
        }
    }
}

fn unsupported_requirement(key: &str) -> FieldError {
    // Reported under the bare key, not "requirements.<key>" (imgmanifest's choice).
    FieldError::invalid_with(key, format!("unsupported requirement \"{key}\""))
}

/// imgmanifest's `boolFromString` for a present value: `None` where the JS would throw.
fn bool_from_string(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// `n % 1 === 0`: false for NaN and the infinities.
fn is_integral(number: f64) -> bool {
    number % 1.0 == 0.0
}

/// `/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/` (lower case only).
pub(crate) fn is_uuid(s: &str) -> bool {
    const GROUP_LENGTHS: [usize; 5] = [8, 4, 4, 4, 12];
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == GROUP_LENGTHS.len()
        && groups.iter().zip(GROUP_LENGTHS).all(|(group, length)| {
            group.len() == length && group.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// `/^[A-Za-z0-9._/ -]+$/`
fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/ -".contains(&b))
}

/// `/^[A-Za-z0-9._/+-]+$/`
fn is_valid_version(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/+-".contains(&b))
}

/// `/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/`
fn is_published_at(s: &str) -> bool {
    const SECONDS_PRECISION: &[u8] = b"dddd-dd-ddTdd:dd:ddZ";
    const MILLISECONDS_PRECISION: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let shape_matches = |shape: &[u8]| {
        s.len() == shape.len()
            && s.bytes().zip(shape).all(|(b, &want)| match want {
                b'd' => b.is_ascii_digit(),
                literal => b == literal,
            })
    };
    shape_matches(SECONDS_PRECISION) || shape_matches(MILLISECONDS_PRECISION)
}

/// What `url.parse(s).protocol` decides for http/https: node skips leading whitespace
/// (code units below 33, U+00A0, U+FEFF), then matches `/^[a-z0-9.+-]+:/i` and lower-cases it.
fn has_http_protocol(url: &str) -> bool {
    let rest = url.trim_start_matches(|c: char| c < '!' || c == '\u{a0}' || c == '\u{feff}');
    let Some((scheme, _)) = rest.split_once(':') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

/// `requirements.networks[]` entries are exactly `{"name": …, "description": …}`.
fn is_network_entry(entry: &Value) -> bool {
    matches!(entry, Value::Object(n)
        if n.len() == 2 && n.contains_key("name") && n.contains_key("description"))
}

/// imgmanifest's `validPlatformVersion`: "YYYYMMDDTHHMMSSZ", checked piecewise with
/// `Number(substr)` comparisons (so e.g. a non-numeric year is not rejected).
fn is_platform_timestamp(value: &Value) -> bool {
    // Anything but a string has no `.length === 16` or makes `substr` throw.
    let Value::String(s) = value else {
        return false;
    };
    let units: Vec<u16> = s.encode_utf16().collect();
    if units.len() != 16 {
        return false;
    }
    let part = |start: usize, len: usize| String::from_utf16_lossy(&units[start..start + len]);
    let number = |start: usize, len: usize| js::string_to_number(&part(start, len));
    const MIN_YEAR: f64 = 2012.0;
    // Each comparison is false for NaN, exactly as in the JS.
    let rejected = number(0, 4) < MIN_YEAR
        || number(4, 2) > 12.0
        || number(4, 2) == 0.0
        || number(6, 2) > 31.0
        || number(6, 2) == 0.0
        || part(8, 1) != "T"
        || number(9, 2) > 23.0
        || number(11, 2) > 59.0
        || number(13, 2) > 59.0
        || part(15, 1) != "Z";
    !rejected
}

/// JavaScript value semantics for JSON values, as far as imgmanifest's checks and node's
/// `util.format` (node 20) depend on them.
pub(crate) mod js {
    use serde_json::{Map, Number, Value};

    /// JS truthiness: `null`, `false`, `0`, `-0` and `""` are falsy.
    pub(crate) fn truthy(value: &Value) -> bool {
        match value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => number_value(n) != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    pub(crate) fn number_value(number: &Number) -> f64 {
        number.as_f64().unwrap_or(f64::NAN)
    }

    /// The length JS reports for a string (UTF-16 code units).
    pub(crate) fn utf16_len(s: &str) -> usize {
        s.encode_utf16().count()
    }

    /// `value.length > max`: strings and arrays have a length; an object may carry a
    /// `length` key; everything else has `undefined`, which compares false.
    pub(crate) fn length_exceeds(value: &Value, max: usize) -> bool {
        match value {
            Value::String(s) => utf16_len(s) > max,
            Value::Array(items) => items.len() > max,
            Value::Object(map) => map.get("length").is_some_and(|len| to_number(len) > max as f64),
            _ => false,
        }
    }

    /// `Number(value)`.
    pub(crate) fn to_number(value: &Value) -> f64 {
        match value {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => number_value(n),
            Value::String(s) => string_to_number(s),
            // Arrays convert through their `toString()` (`[5]` is 5, `[]` is 0).
            Value::Array(_) => string_to_number(&to_string(value)),
            Value::Object(_) => f64::NAN,
        }
    }

    /// The whitespace `Number("…")` trims: WhiteSpace and LineTerminator.
    fn is_js_whitespace(c: char) -> bool {
        matches!(
            c,
            '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
        )
    }

    /// `Number(s)` for a string (ECMAScript StringToNumber).
    pub(crate) fn string_to_number(s: &str) -> f64 {
        let trimmed = s.trim_matches(is_js_whitespace);
        if trimmed.is_empty() {
            return 0.0;
        }
        let bytes = trimmed.as_bytes();
        if bytes.len() >= 2 && bytes[0] == b'0' {
            let radix = match bytes[1] {
                b'x' | b'X' => Some(16),
                b'o' | b'O' => Some(8),
                b'b' | b'B' => Some(2),
                _ => None,
            };
            if let Some(radix) = radix {
                return radix_integer_to_number(&trimmed[2..], radix);
            }
        }
        let unsigned = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
        if unsigned == "Infinity" {
            return if trimmed.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY };
        }
        if !is_decimal_literal(unsigned) {
            return f64::NAN;
        }
        trimmed.parse::<f64>().unwrap_or(f64::NAN)
    }

    /// `0x…`, `0o…`, `0b…` digits (no sign, no separators).
    fn radix_integer_to_number(digits: &str, radix: u32) -> f64 {
        if digits.is_empty() {
            return f64::NAN;
        }
        let mut value = 0.0_f64;
        for c in digits.chars() {
            match c.to_digit(radix) {
                Some(d) => value = value * f64::from(radix) + f64::from(d),
                None => return f64::NAN,
            }
        }
        value
    }

    /// StrUnsignedDecimalLiteral without "Infinity": `1`, `1.`, `.5`, `1.5e-3`.
    fn is_decimal_literal(s: &str) -> bool {
        let bytes = s.as_bytes();
        let mut i = 0;
        let digits_from = |mut i: usize| {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        let int_end = digits_from(i);
        let mut has_digits = int_end > i;
        i = int_end;
        if i < bytes.len() && bytes[i] == b'.' {
            let frac_end = digits_from(i + 1);
            has_digits |= frac_end > i + 1;
            i = frac_end;
        }
        if !has_digits {
            return false;
        }
        if i < bytes.len() && matches!(bytes[i], b'e' | b'E') {
            i += 1;
            if i < bytes.len() && matches!(bytes[i], b'+' | b'-') {
                i += 1;
            }
            let exp_end = digits_from(i);
            if exp_end == i {
                return false;
            }
            i = exp_end;
        }
        i == bytes.len()
    }

    /// `String(number)` (Number::toString, shortest round-trip digits).
    pub(crate) fn number_to_string(number: f64) -> String {
        if number.is_nan() {
            return "NaN".to_owned();
        }
        if number == 0.0 {
            return "0".to_owned();
        }
        if number.is_infinite() {
            return if number > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
        }
        let sign = if number < 0.0 { "-" } else { "" };
        // Rust's `{:e}` gives the same shortest digits; only the layout differs.
        let scientific = format!("{:e}", number.abs());
        let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let exponent: i64 = exponent.parse().unwrap_or(0);
        let digit_count = digits.len() as i64;
        // JS's `n`: the value is 0.<digits> × 10^point.
        let point = exponent + 1;
        let body = if digit_count <= point && point <= 21 {
            format!("{digits}{}", "0".repeat((point - digit_count) as usize))
        } else if 0 < point && point <= 21 {
            let (int_part, frac_part) = digits.split_at(point as usize);
            format!("{int_part}.{frac_part}")
        } else if -6 < point && point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else {
            let exp = point - 1;
            let exp_sign = if exp >= 0 { "+" } else { "-" };
            let (first, rest) = digits.split_at(1);
            let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
            format!("{first}{fraction}e{exp_sign}{}", exp.abs())
        };
        format!("{sign}{body}")
    }

    /// `String(value)`; arrays join their elements with "," (null elements become "").
    pub(crate) fn to_string(value: &Value) -> String {
        match value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => number_to_string(number_value(n)),
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|item| if item.is_null() { String::new() } else { to_string(item) })
                .collect::<Vec<_>>()
                .join(","),
            Value::Object(_) => "[object Object]".to_owned(),
        }
    }

    /// An array index key ("0", "7", not "07"): JS lists these first, in numeric order.
    fn array_index(key: &str) -> Option<u32> {
        let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty());
        if !canonical || !key.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        key.parse::<u32>().ok().filter(|index| *index != u32::MAX)
    }

    /// An object's entries in JS property order (`Object.keys`, `for…in`, JSON.stringify):
    /// array-index keys ascending, then the other keys in insertion order.
    pub(crate) fn own_entries(map: &Map<String, Value>) -> Vec<(&str, &Value)> {
        let mut indexed: Vec<(u32, &str, &Value)> = Vec::new();
        let mut named: Vec<(&str, &Value)> = Vec::new();
        for (key, value) in map {
            match array_index(key) {
                Some(index) => indexed.push((index, key, value)),
                None => named.push((key, value)),
            }
        }
        indexed.sort_by_key(|(index, _, _)| *index);
        indexed.into_iter().map(|(_, k, v)| (k, v)).chain(named).collect()
    }

    /// `JSON.stringify(value)` (what `%j` prints).
    pub(crate) fn json_stringify(value: &Value) -> String {
        let mut out = String::new();
        write_json(&mut out, value);
        out
    }

    fn write_json(out: &mut String, value: &Value) {
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&number_to_string(number_value(n))),
            Value::String(s) => write_json_string(out, s),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json(out, item);
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                for (i, (key, item)) in own_entries(map).into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(out, key);
                    out.push(':');
                    write_json(out, item);
                }
                out.push('}');
            }
        }
    }

    fn write_json_string(out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
    }

    /// What node's `util.format('%s', value)` prints: strings as-is, numbers as
    /// `formatNumber` does (`-0` stays "-0"), objects and arrays through `util.inspect`
    /// with depth 0.
    pub(crate) fn format_s(value: &Value) -> String {
        match value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(number_value(n)),
            Value::String(s) => s.clone(),
            Value::Array(_) | Value::Object(_) => inspect::inspect(value),
        }
    }

    /// util.inspect's number format.
    fn format_number(number: f64) -> String {
        if number == 0.0 && number.is_sign_negative() {
            "-0".to_owned()
        } else {
            number_to_string(number)
        }
    }

    /// node 20's `util.inspect(value, {depth: 0, compact: 3})` (breakLength 80) for JSON
    /// objects and arrays: the top level is listed, non-empty nested containers become
    /// `[Object]` / `[Array]`.
    mod inspect {
        use super::{format_number, number_value, own_entries, utf16_len};
        use serde_json::Value;

        const BREAK_LENGTH: usize = 80;
        const COMPACT: usize = 3;
        const MAX_ARRAY_LENGTH: usize = 100;
        const MAX_STRING_LENGTH: usize = 10_000;
        /// Children of the top level are formatted two columns in.
        const CHILD_INDENTATION: usize = 2;

        pub(crate) fn inspect(value: &Value) -> String {
            match value {
                Value::Array(items) if items.is_empty() => "[]".to_owned(),
                Value::Array(items) => {
                    let shown = items.len().min(MAX_ARRAY_LENGTH);
                    let mut output: Vec<String> = items[..shown].iter().map(format_child).collect();
                    let remaining = items.len() - shown;
                    if remaining > 0 {
                        let plural = if remaining > 1 { "s" } else { "" };
                        output.push(format!("... {remaining} more item{plural}"));
                    }
                    reduce_to_single_string(output, ("[", "]"), Some(items))
                }
                Value::Object(map) if map.is_empty() => "{}".to_owned(),
                Value::Object(map) => {
                    let output = own_entries(map)
                        .into_iter()
                        .map(|(key, item)| format!("{}: {}", format_key(key), format_child(item)))
                        .collect();
                    reduce_to_single_string(output, ("{", "}"), None)
                }
                scalar => format_child(scalar),
            }
        }

        fn format_key(key: &str) -> String {
            let bare = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if bare {
                key.to_owned()
            } else if key == "__proto__" {
                "['__proto__']".to_owned()
            } else {
                quote_string(key)
            }
        }

        /// A value one level down (beyond depth 0).
        fn format_child(value: &Value) -> String {
            match value {
                Value::Null => "null".to_owned(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => format_number(number_value(n)),
                Value::String(s) => format_string(s),
                Value::Array(items) if items.is_empty() => "[]".to_owned(),
                Value::Array(_) => "[Array]".to_owned(),
                Value::Object(map) if map.is_empty() => "{}".to_owned(),
                Value::Object(_) => "[Object]".to_owned(),
            }
        }

        /// formatPrimitive for a nested string: truncated past maxStringLength, and split
        /// after each newline into `'…' +` lines when long.
        fn format_string(s: &str) -> String {
            let units: Vec<u16> = s.encode_utf16().collect();
            let (shown, trailer) = if units.len() > MAX_STRING_LENGTH {
                let remaining = units.len() - MAX_STRING_LENGTH;
                let plural = if remaining > 1 { "s" } else { "" };
                (
                    String::from_utf16_lossy(&units[..MAX_STRING_LENGTH]),
                    format!("... {remaining} more character{plural}"),
                )
            } else {
                (s.to_owned(), String::new())
            };
            let length = utf16_len(&shown);
            // (node also requires more than kMinLineLength (16), implied by this bound.)
            if length > BREAK_LENGTH - CHILD_INDENTATION - 4 {
                let separator = format!(" +\n{}", " ".repeat(CHILD_INDENTATION + 2));
                let lines: Vec<String> = shown.split_inclusive('\n').map(quote_string).collect();
                return lines.join(&separator) + &trailer;
            }
            quote_string(&shown) + &trailer
        }

        /// strEscape: single quotes unless the text has one, then double quotes or
        /// backticks; control characters as `\xNN`.
        fn quote_string(s: &str) -> String {
            let quote = if !s.contains('\'') {
                '\''
            } else if !s.contains('"') {
                '"'
            } else if !s.contains('`') && !s.contains("${") {
                '`'
            } else {
                '\''
            };
            let mut out = String::with_capacity(s.len() + 2);
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\'' if quote == '\'' => out.push_str("\\'"),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\u{c}' => out.push_str("\\f"),
                    '\r' => out.push_str("\\r"),
                    c if c < ' ' || ('\u{7f}'..='\u{9f}').contains(&c) => {
                        out.push_str(&format!("\\x{:02X}", u32::from(c)));
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }

        fn reduce_to_single_string(
            output: Vec<String>,
            braces: (&str, &str),
            array: Option<&Vec<Value>>,
        ) -> String {
            let entries = output.len();
            let output = match array {
                Some(items) if entries > 6 => group_array_elements(output, items),
                _ => output,
            };
            if entries == output.len() {
                let start = output.len() + braces.0.len() + 10;
                if is_below_break_length(&output, start) {
                    let joined = output.join(", ");
                    if !joined.contains('\n') {
                        return format!("{} {joined} {}", braces.0, braces.1);
                    }
                }
            }
            format!("{}\n  {}\n{}", braces.0, output.join(",\n  "), braces.1)
        }

        fn is_below_break_length(output: &[String], start: usize) -> bool {
            let mut total = output.len() + start;
            if total + output.len() > BREAK_LENGTH {
                return false;
            }
            for entry in output {
                total += utf16_len(entry);
                if total > BREAK_LENGTH {
                    return false;
                }
            }
            true
        }

        /// groupArrayElements: lay out many short array entries in aligned columns.
        fn group_array_elements(output: Vec<String>, items: &[Value]) -> Vec<String> {
            const SEPARATOR_SPACE: usize = 2;
            let has_more_items = items.len() > MAX_ARRAY_LENGTH;
            let output_length = if has_more_items { output.len() - 1 } else { output.len() };
            let data_len: Vec<usize> = output[..output_length].iter().map(|s| string_width(s)).collect();
            let total_length: usize = data_len.iter().map(|len| len + SEPARATOR_SPACE).sum();
            let max_length = data_len.iter().copied().max().unwrap_or(0);
            let actual_max = max_length + SEPARATOR_SPACE;
            if !(actual_max * 3 < BREAK_LENGTH
                && (total_length as f64 / actual_max as f64 > 5.0 || max_length <= 6))
            {
                return output;
            }
            let average_bias = (actual_max as f64 - total_length as f64 / output.len() as f64).sqrt();
            let biased_max = (actual_max as f64 - 3.0 - average_bias).max(1.0);
            let columns = [
                ((2.5 * biased_max * output_length as f64).sqrt() / biased_max).round(),
                (BREAK_LENGTH / actual_max) as f64,
                (COMPACT * 4) as f64,
                15.0,
            ]
            .into_iter()
            .fold(f64::INFINITY, f64::min);
            if columns <= 1.0 {
                return output;
            }
            let columns = columns as usize;
            let max_line_length: Vec<usize> = (0..columns)
                .map(|column| {
                    (column..output_length).step_by(columns).map(|j| data_len[j]).max().unwrap_or(0)
                        + SEPARATOR_SPACE
                })
                .collect();
            // Numbers are right-aligned, anything else left-aligned.
            let pad_start = items.iter().take(output.len()).all(Value::is_number);
            let mut grouped = Vec::new();
            for row_start in (0..output_length).step_by(columns) {
                let row_end = (row_start + columns).min(output_length);
                let mut line = String::new();
                for j in row_start..row_end {
                    let is_last = j + 1 == row_end;
                    let cell = if is_last { output[j].clone() } else { format!("{}, ", output[j]) };
                    // The target is in string-length units, corrected for wide characters.
                    let column_width = max_line_length[j - row_start] as i64;
                    let wide_correction = utf16_len(&output[j]) as i64 - data_len[j] as i64;
                    let target = match (is_last, pad_start) {
                        (false, _) => column_width + wide_correction,
                        (true, true) => column_width + wide_correction - SEPARATOR_SPACE as i64,
                        (true, false) => 0,
                    };
                    let fill_width = (target - utf16_len(&cell) as i64).max(0) as usize;
                    let fill = " ".repeat(fill_width);
                    if pad_start {
                        line.push_str(&fill);
                        line.push_str(&cell);
                    } else {
                        line.push_str(&cell);
                        line.push_str(&fill);
                    }
                }
                grouped.push(line);
            }
            if has_more_items {
                if let Some(more) = output.last() {
                    grouped.push(more.clone());
                }
            }
            grouped
        }

        /// getStringWidth, approximately: East Asian wide characters count two columns,
        /// combining marks and zero-width characters none.
        fn string_width(s: &str) -> usize {
            s.chars()
                .map(|c| {
                    let code = u32::from(c);
                    if is_zero_width(code) {
                        0
                    } else if is_full_width(code) {
                        2
                    } else {
                        1
                    }
                })
                .sum()
        }

        fn is_zero_width(code: u32) -> bool {
            code <= 0x1f
                || (0x7f..=0x9f).contains(&code)
                || (0x300..=0x36f).contains(&code)
                || (0x200b..=0x200f).contains(&code)
                || (0x20d0..=0x20ff).contains(&code)
                || (0xfe00..=0xfe0f).contains(&code)
                || (0xfe20..=0xfe2f).contains(&code)
                || (0xe0100..=0xe01ef).contains(&code)
        }

        fn is_full_width(code: u32) -> bool {
            code >= 0x1100
                && (code <= 0x115f
                    || code == 0x2329
                    || code == 0x232a
                    || ((0x2e80..=0x3247).contains(&code) && code != 0x303f)
                    || (0x3250..=0x4dbf).contains(&code)
                    || (0x4e00..=0xa4c6).contains(&code)
                    || (0xa960..=0xa97c).contains(&code)
                    || (0xac00..=0xd7a3).contains(&code)
                    || (0xf900..=0xfaff).contains(&code)
                    || (0xfe10..=0xfe19).contains(&code)
                    || (0xfe30..=0xfe6b).contains(&code)
                    || (0xff01..=0xff60).contains(&code)
                    || (0xffe0..=0xffe6).contains(&code)
                    || (0x1b000..=0x1b001).contains(&code)
                    || (0x1f200..=0x1f251).contains(&code)
                    || (0x1f300..=0x1f64f).contains(&code)
                    || (0x20000..=0x3fffd).contains(&code))
        }
    }
}

#[cfg(test)]
mod tests {
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
    const JS_VERDICTS: &str = r##"[
{"name":"valid active zone-dataset","mode":"dc","base":"BASE","set":{},"expected":[]},
{"name":"valid complete zvol with every optional field","mode":"dc","base":"ZVOL","set":{"description":"good manifest","homepage":"http://imgapi.co","eula":"https://imgapi.co/eula","origin":"f9f8d4e5-30d9-438e-88f7-ea745370049b","error":{"message":"no peers available"},"icon":true,"urn":"sdc:sdc:foo:1.2.3","acl":["f9f8d4e5-30d9-438e-88f7-ea745370049b"],"requirements":{"networks":[{"name":"net0","description":"public"}],"brand":"bhyve","bootrom":"uefi","ssh_key":true,"min_ram":512,"max_ram":8192,"min_platform":{"7.0":"20130308T102805Z"},"max_platform":{"7.0":"20230308T102805Z"}},"users":[{"name":"root"},{"name":"admin"}],"billing_tags":["xxl"],"traits":{"provisionable":true,"ssd":"yes","tiers":["a"]},"tags":{"foo":"bar","n":{"deep":[1]}},"generate_passwords":false},"expected":[]},
{"name":"empty manifest","mode":"dc","manifest":{},"expected":[{"field":"v","code":"MissingParameter"},{"field":"uuid","code":"MissingParameter"},{"field":"owner","code":"MissingParameter"},{"field":"name","code":"MissingParameter"},{"field":"version","code":"MissingParameter"},{"field":"disabled","code":"MissingParameter"},{"field":"activated","code":"MissingParameter"},{"field":"public","code":"MissingParameter"},{"field":"state","code":"MissingParameter"},{"field":"type","code":"MissingParameter"},{"field":"os","code":"MissingParameter"}]},
{"name":"empty manifest (minimal)","mode":"minimal","manifest":{},"expected":[{"field":"v","code":"MissingParameter"},{"field":"uuid","code":"MissingParameter"},{"field":"name","code":"MissingParameter"},{"field":"version","code":"MissingParameter"},{"field":"type","code":"MissingParameter"},{"field":"os","code":"MissingParameter"}]},
{"name":"spec example: bad name, version, type, os","mode":"dc","base":"BASE","set":{"name":"foo*bar","version":"1.0 beta","type":"vm","os":"plan9"},"expected":[{"field":"name","code":"Invalid","message":"image name has invalid characters (only alpha-numeric characters and \" \", \".\", \"-\", \"_\" and \"/\" are allowed)"},{"field":"version","code":"Invalid","message":"image version has invalid characters (only alpha-numeric characters and \".\", \"-\", \"_\" and \"/\" are allowed)"},{"field":"type","code":"Invalid","message":"invalid image type, \"vm\", must be one of: zone-dataset, zvol, lx-dataset, lxd, docker, other"},{"field":"os","code":"Invalid","message":"invalid image os, \"plan9\", must be one of: smartos, linux, windows, bsd, illumos, other"}]},
{"name":"unactivated placeholder-free image needs no files or published_at","mode":"dc","base":"BASE","set":{"activated":false,"state":"unactivated"},"unset":["files","published_at"],"expected":[]},
{"name":"errors come in required, then optional, then unknown order","mode":"dc","base":"BASE","set":{"zzz":1,"acl":"x","v":-1,"tags":[],"aaa":2},"expected":[{"field":"v","code":"Invalid","message":"\"v\" must be a positive integer"},{"field":"acl","code":"Invalid","message":"invalid image \"acl\" (not an array): x"},{"field":"tags","code":"Invalid","message":"invalid image \"tags\" (not an object): []"},{"field":"zzz","code":"Invalid"},{"field":"aaa","code":"Invalid"}]},
{"name":"v as string \"2\" and null pass","mode":"dc","base":"BASE","set":{"v":"2"},"expected":[]},
{"name":"v null passes (Number(null) is 0)","mode":"dc","base":"BASE","set":{"v":null},"expected":[]},
{"name":"v negative","mode":"dc","base":"BASE","set":{"v":-1},"expected":[{"field":"v","code":"Invalid","message":"\"v\" must be a positive integer"}]},
{"name":"v non-numeric string","mode":"dc","base":"BASE","set":{"v":"two"},"expected":[{"field":"v","code":"Invalid","message":"\"v\" must be a positive integer"}]},
{"name":"v object","mode":"dc","base":"BASE","set":{"v":{}},"expected":[{"field":"v","code":"Invalid","message":"\"v\" must be a positive integer"}]},
{"name":"uuid upper-case, owner junk, origin junk","mode":"dc","base":"BASE","set":{"uuid":"1F9B7958-289E-4EA3-8F88-5486A40D6823","owner":"me","origin":"nope"},"expected":[{"field":"uuid","code":"Invalid"},{"field":"owner","code":"Invalid"},{"field":"origin","code":"Invalid"}]},
{"name":"uuid wrapped in an array passes (String coercion)","mode":"dc","base":"BASE","set":{"uuid":["1f9b7958-289e-4ea3-8f88-5486a40d6823"],"origin":["f9f8d4e5-30d9-438e-88f7-ea745370049b"]},"expected":[]},
{"name":"urn not a string","mode":"dc","base":"BASE","set":{"urn":5},"expected":[{"field":"urn","code":"Invalid"}]},
{"name":"name and version too long","mode":"dc","base":"BASE","set":{"name":"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn","version":"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"},"expected":[{"field":"name","code":"Invalid","message":"image name is too long, max 1024 characters"},{"field":"version","code":"Invalid","message":"image version is too long, max 512 characters"}]},
{"name":"name and version at the limit","mode":"dc","base":"BASE","set":{"name":"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn","version":"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"},"expected":[]},
{"name":"name number, version array pass","mode":"dc","base":"BASE","set":{"name":123,"version":["1.0"]},"expected":[]},
{"name":"version with plus passes, name with plus fails","mode":"dc","base":"BASE","set":{"name":"a+b","version":"1.0+build"},"expected":[{"field":"name","code":"Invalid","message":"image name has invalid characters (only alpha-numeric characters and \" \", \".\", \"-\", \"_\" and \"/\" are allowed)"}]},
{"name":"empty name and version","mode":"dc","base":"BASE","set":{"name":"","version":""},"expected":[{"field":"name","code":"Invalid","message":"image name has invalid characters (only alpha-numeric characters and \" \", \".\", \"-\", \"_\" and \"/\" are allowed)"},{"field":"version","code":"Invalid","message":"image version has invalid characters (only alpha-numeric characters and \".\", \"-\", \"_\" and \"/\" are allowed)"}]},
{"name":"name object","mode":"dc","base":"BASE","set":{"name":{"a":1}},"expected":[{"field":"name","code":"Invalid","message":"image name has invalid characters (only alpha-numeric characters and \" \", \".\", \"-\", \"_\" and \"/\" are allowed)"}]},
{"name":"description number passes","mode":"dc","base":"BASE","set":{"description":42},"expected":[]},
{"name":"homepage ftp, eula too long","mode":"dc","base":"BASE","set":{"homepage":"ftp://example.com","eula":"https://example.com/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"},"expected":[{"field":"homepage","code":"Invalid","message":"invalid image homepage URL protocol"},{"field":"eula","code":"Invalid","message":"image EULA URL is too long (max 1024 characters)"}]},
{"name":"homepage upper-case scheme and leading space pass","mode":"dc","base":"BASE","set":{"homepage":"HTTP://Example.com","eula":" https://x"},"expected":[]},
{"name":"homepage without scheme","mode":"dc","base":"BASE","set":{"homepage":"example.com/page","eula":"http//x"},"expected":[{"field":"homepage","code":"Invalid","message":"invalid image homepage URL protocol"},{"field":"eula","code":"Invalid","message":"invalid image EULA URL protocol"}]},
{"name":"booleans as \"true\"/\"false\" strings pass","mode":"dc","base":"BASE","set":{"disabled":"false","activated":"true","public":"false","icon":"true","generate_passwords":"false"},"expected":[]},
{"name":"published_at date only","mode":"dc","base":"BASE","set":{"published_at":"2019-01-02"},"expected":[{"field":"published_at","code":"Invalid","message":"published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format"}]},
{"name":"published_at without fraction passes","mode":"dc","base":"BASE","set":{"published_at":"2019-01-02T03:04:05Z"},"expected":[]},
{"name":"published_at with 2-digit fraction","mode":"dc","base":"BASE","set":{"published_at":"2019-01-02T03:04:05.67Z"},"expected":[{"field":"published_at","code":"Invalid","message":"published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format"}]},
{"name":"published_at number","mode":"dc","base":"BASE","set":{"published_at":5},"expected":[{"field":"published_at","code":"Invalid","message":"published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format"}]},
{"name":"activated: published_at and files missing","mode":"dc","base":"BASE","set":{},"unset":["published_at","files"],"expected":[{"field":"published_at","code":"MissingParameter","message":"if activated is \"true\" published_at must be present"},{"field":"files","code":"MissingParameter","message":"if activated is \"true\" files must be present"}]},
{"name":"activated \"true\": published_at and files missing","mode":"dc","base":"BASE","set":{"activated":"true"},"unset":["published_at","files"],"expected":[{"field":"published_at","code":"MissingParameter","message":"if activated is \"true\" published_at must be present"},{"field":"files","code":"MissingParameter","message":"if activated is \"true\" files must be present"}]},
{"name":"activated: falsy published_at is not checked","mode":"dc","base":"BASE","set":{"published_at":""},"expected":[]},
{"name":"activated: null published_at is not checked","mode":"dc","base":"BASE","set":{"published_at":null},"expected":[]},
{"name":"state unknown and non-string","mode":"dc","base":"BASE","set":{"state":"installed"},"expected":[{"field":"state","code":"Invalid"}]},
{"name":"state number","mode":"dc","base":"BASE","set":{"state":5},"expected":[{"field":"state","code":"Invalid"}]},
{"name":"public not a boolean","mode":"dc","base":"BASE","set":{"public":"yes"},"expected":[{"field":"public","code":"Invalid","message":"TypeError: invalid value for \"undefined\": \"yes\""}]},
{"name":"public null","mode":"dc","base":"BASE","set":{"public":null},"expected":[{"field":"public","code":"Invalid","message":"TypeError: invalid value for \"undefined\": null"}]},
{"name":"public with escapes","mode":"dc","base":"BASE","set":{"public":"a\"b\\c\n\u0001é"},"expected":[{"field":"public","code":"Invalid","message":"TypeError: invalid value for \"undefined\": \"a\\\"b\\\\c\\n\\u0001é\""}]},
{"name":"type \"null\" outside a placeholder","mode":"dc","base":"BASE","set":{"type":"null","os":"null"},"expected":[{"field":"type","code":"Invalid","message":"invalid image type, \"null\""},{"field":"os","code":"Invalid","message":"invalid image os, \"null\""}]},
{"name":"type/os \"null\" while creating","mode":"dc","base":"BASE","set":{"type":"null","os":"null","state":"creating"},"expected":[]},
{"name":"type/os \"null\" while failed","mode":"dc","base":"BASE","set":{"type":"null","os":"null","state":"failed"},"expected":[]},
{"name":"type names from Object.prototype pass","mode":"dc","base":"BASE","set":{"type":"constructor","os":"__proto__"},"expected":[]},
{"name":"type number, os null","mode":"dc","base":"BASE","set":{"type":5,"os":null},"expected":[{"field":"type","code":"Invalid","message":"invalid image type, \"5\", must be one of: zone-dataset, zvol, lx-dataset, lxd, docker, other"},{"field":"os","code":"Invalid","message":"invalid image os, \"null\", must be one of: smartos, linux, windows, bsd, illumos, other"}]},
{"name":"type object, os array","mode":"dc","base":"BASE","set":{"type":{"a":1,"b-c":"it's"},"os":["linux","bsd"]},"expected":[{"field":"type","code":"Invalid","message":"invalid image type, \"{ a: 1, 'b-c': \"it's\" }\", must be one of: zone-dataset, zvol, lx-dataset, lxd, docker, other"},{"field":"os","code":"Invalid","message":"invalid image os, \"[ 'linux', 'bsd' ]\", must be one of: smartos, linux, windows, bsd, illumos, other"}]},
{"name":"type lxd and os illumos pass","mode":"dc","base":"BASE","set":{"type":"lxd","os":"illumos"},"expected":[]},
{"name":"zvol missing drivers and size","mode":"dc","base":"BASE","set":{"type":"zvol"},"expected":[{"field":"nic_driver","code":"MissingParameter"},{"field":"disk_driver","code":"MissingParameter"},{"field":"cpu_type","code":"MissingParameter"},{"field":"image_size","code":"MissingParameter"}]},
{"name":"zvol image_size as string passes","mode":"dc","base":"ZVOL","set":{"image_size":"10240"},"expected":[]},
{"name":"zvol image_size fractional","mode":"dc","base":"ZVOL","set":{"image_size":1.5},"expected":[{"field":"image_size","code":"Invalid","message":"invalid image image_size: \"1.5\" (must be a positive integer)"}]},
{"name":"zvol image_size non-numeric","mode":"dc","base":"ZVOL","set":{"image_size":"big"},"expected":[{"field":"image_size","code":"Invalid","message":"invalid image image_size: \"big\" (must be a positive integer)"}]},
{"name":"zvol negative image_size passes","mode":"dc","base":"ZVOL","set":{"image_size":-5},"expected":[]},
{"name":"zvol drivers not strings","mode":"dc","base":"ZVOL","set":{"nic_driver":5,"disk_driver":true,"cpu_type":["host"]},"expected":[{"field":"nic_driver","code":"Invalid","message":"invalid image nic_driver: \"5\" (must be a string)"},{"field":"disk_driver","code":"Invalid","message":"invalid image disk_driver: \"true\" (must be a string)"},{"field":"cpu_type","code":"Invalid","message":"invalid image cpu_type: \"[ 'host' ]\" (must be a string)"}]},
{"name":"non-zvol with zvol fields","mode":"dc","base":"BASE","set":{"nic_driver":"virtio","disk_driver":"virtio","cpu_type":"host","image_size":10},"expected":[{"field":"nic_driver","code":"Invalid","message":"invalid image nic_driver: \"virtio\" (cannot have a value when image type is zvol)"},{"field":"disk_driver","code":"Invalid","message":"invalid image disk_driver: \"virtio\" (cannot have a value  when image type is zvol)"},{"field":"cpu_type","code":"Invalid","message":"invalid image cpu_type: \"host\" (cannot have a value when image type is zvol)"},{"field":"image_size","code":"Invalid","message":"invalid image image_size: \"10\" (cannot have a value when image type is zvol)"}]},
{"name":"non-zvol with falsy zvol fields","mode":"dc","base":"BASE","set":{"nic_driver":"","disk_driver":false,"cpu_type":null,"image_size":0},"expected":[{"field":"disk_driver","code":"Invalid","message":"invalid image disk_driver: \"false\" (must be a string)"},{"field":"cpu_type","code":"Invalid","message":"invalid image cpu_type: \"null\" (must be a string)"}]},
{"name":"non-zvol with odd zvol values (number formatting)","mode":"dc","base":"BASE","set":{"nic_driver":1e+21,"disk_driver":1e-7,"cpu_type":0.000001,"image_size":123.456},"expected":[{"field":"nic_driver","code":"Invalid","message":"invalid image nic_driver: \"1e+21\" (cannot have a value when image type is zvol)"},{"field":"disk_driver","code":"Invalid","message":"invalid image disk_driver: \"1e-7\" (cannot have a value  when image type is zvol)"},{"field":"cpu_type","code":"Invalid","message":"invalid image cpu_type: \"0.000001\" (cannot have a value when image type is zvol)"},{"field":"image_size","code":"Invalid","message":"invalid image image_size: \"123.456\" (cannot have a value when image type is zvol)"}]},
{"name":"non-zvol negative zero cpu_type","mode":"dc","base":"BASE","set":{"cpu_type":0},"expected":[{"field":"cpu_type","code":"Invalid","message":"invalid image cpu_type: \"0\" (must be a string)"}]},
{"name":"non-zvol array and object zvol values (inspect)","mode":"dc","base":"BASE","set":{"nic_driver":[0,7,14,21,28,35,42,49,56,63,70,77,84,91,98,105,112,119,126,133,140,147,154,161,168,175,182,189,196,203],"disk_driver":["alpha","b","gamma","d","epsilon","f","eta","h","iota","j"],"cpu_type":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119],"image_size":{"alpha":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","beta":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","gamma":"cccccccccccccccccccccccccccccccccccccccc","nested":{"x":1},"list":[1],"empty":[],"obj":{}}},"expected":[{"field":"nic_driver","code":"Invalid","message":"invalid image nic_driver: \"[\n    0,   7,  14,  21,  28,  35,  42,  49,\n   56,  63,  70,  77,  84,  91,  98, 105,\n  112, 119, 126, 133, 140, 147, 154, 161,\n  168, 175, 182, 189, 196, 203\n]\" (cannot have a value when image type is zvol)"},{"field":"disk_driver","code":"Invalid","message":"invalid image disk_driver: \"[\n  'alpha',   'b',\n  'gamma',   'd',\n  'epsilon', 'f',\n  'eta',     'h',\n  'iota',    'j'\n]\" (cannot have a value  when image type is zvol)"},{"field":"cpu_type","code":"Invalid","message":"invalid image cpu_type: \"[\n   0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11,\n  12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,\n  24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,\n  36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,\n  48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,\n  60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71,\n  72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83,\n  84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,\n  96, 97, 98, 99,\n  ... 20 more items\n]\" (cannot have a value when image type is zvol)"},{"field":"image_size","code":"Invalid","message":"invalid image image_size: \"{\n  alpha: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',\n  beta: 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',\n  gamma: 'cccccccccccccccccccccccccccccccccccccccc',\n  nested: [Object],\n  list: [Array],\n  empty: [],\n  obj: {}\n}\" (cannot have a value when image type is zvol)"}]},
{"name":"non-zvol string inspect quoting","mode":"dc","base":"BASE","set":{"nic_driver":{"1":2,"a":"it's","b":"say \"hi\"","c":"both ' and \" and `","d":"tab\there","e":"","f g":1,"_ok":3}},"expected":[{"field":"nic_driver","code":"Invalid","message":"invalid image nic_driver: \"{\n  '1': 2,\n  a: \"it's\",\n  b: 'say \"hi\"',\n  c: 'both \\' and \" and `',\n  d: 'tab\\there',\n  e: '\\x7F\\x85',\n  'f g': 1,\n  _ok: 3\n}\" (cannot have a value when image type is zvol)"}]},
{"name":"non-zvol long string in object splits at newlines","mode":"dc","base":"BASE","set":{"nic_driver":{"s":"line one\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nend"}},"expected":[{"field":"nic_driver","code":"Invalid","message":"invalid image nic_driver: \"{\n  s: 'line one\\n' +\n    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\n' +\n    'end'\n}\" (cannot have a value when image type is zvol)"}]},
{"name":"non-zvol short array of mixed values","mode":"dc","base":"BASE","set":{"nic_driver":[null,true,"x",1.5,0,[],{},[1],{"a":1}]},"expected":[{"field":"nic_driver","code":"Invalid","message":"invalid image nic_driver: \"[\n  null,     true,\n  'x',      1.5,\n  0,        [],\n  {},       [Array],\n  [Object]\n]\" (cannot have a value when image type is zvol)"}]},
{"name":"files not an array","mode":"dc","base":"BASE","set":{"files":{"sha1":"97f20b32c2016782257176fb58a35e5044f05840"}},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\" (not an array): { sha1: '97f20b32c2016782257176fb58a35e5044f05840' }"}]},
{"name":"files string","mode":"dc","base":"BASE","set":{"files":"file.gz"},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\" (not an array): file.gz"}]},
{"name":"two files on a zone-dataset","mode":"dc","base":"BASE","set":{"files":[{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":12345,"compression":"gzip"},{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":12345,"compression":"gzip"}]},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\": too many files"}]},
{"name":"two files on lxd pass","mode":"dc","base":"BASE","set":{"type":"lxd","files":[{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":12345,"compression":"gzip"},{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":12345,"compression":"gzip"}]},"expected":[]},
{"name":"three files on lxd","mode":"dc","base":"BASE","set":{"type":"lxd","files":[{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":12345,"compression":"gzip"},{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":12345,"compression":"gzip"},{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":12345,"compression":"gzip"}]},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\": too many files"}]},
{"name":"file missing every field","mode":"dc","base":"BASE","set":{"files":[{}]},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"sha1\" field"},{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"size\" field"},{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"compression\" field"}]},
{"name":"file with falsy fields","mode":"dc","base":"BASE","set":{"files":[{"sha1":"","size":0,"compression":""}]},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"sha1\" field"},{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"size\" field"},{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"compression\" field"}]},
{"name":"file with unknown compression","mode":"dc","base":"BASE","set":{"files":[{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":1,"compression":"lz4"}]},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\": invalid compression \"lz4\" (must be one of gzip, bzip2, xz, none)"}]},
{"name":"file with numeric compression","mode":"dc","base":"BASE","set":{"files":[{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":1,"compression":7}]},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\": invalid compression \"7\" (must be one of gzip, bzip2, xz, none)"}]},
{"name":"file with xz, none, bzip2 pass","mode":"dc","base":"BASE","set":{"type":"lxd","files":[{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":1,"compression":"xz"},{"sha1":"97f20b32c2016782257176fb58a35e5044f05840","size":2,"compression":"none","dataset_guid":"123"}]},"expected":[]},
{"name":"file entry is a string","mode":"dc","base":"BASE","set":{"files":["x"]},"expected":[{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"sha1\" field"},{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"size\" field"},{"field":"files","code":"Invalid","message":"invalid image \"files\": file missing \"compression\" field"}]},
{"name":"empty files array passes","mode":"dc","base":"BASE","set":{"files":[]},"expected":[]},
{"name":"acl not an array","mode":"dc","base":"BASE","set":{"acl":"x"},"expected":[{"field":"acl","code":"Invalid","message":"invalid image \"acl\" (not an array): x"}]},
{"name":"acl object","mode":"dc","base":"BASE","set":{"acl":{"a":1}},"expected":[{"field":"acl","code":"Invalid","message":"invalid image \"acl\" (not an array): { a: 1 }"}]},
{"name":"acl only first bad item reported","mode":"dc","base":"BASE","set":{"acl":["f9f8d4e5-30d9-438e-88f7-ea745370049b","bad","worse"]},"expected":[{"field":"acl","code":"Invalid","message":"invalid image \"acl\" (item 1 is not a UUID): bad"}]},
{"name":"acl item object","mode":"dc","base":"BASE","set":{"acl":[{"a":1}]},"expected":[{"field":"acl","code":"Invalid","message":"invalid image \"acl\" (item 0 is not a UUID): { a: 1 }"}]},
{"name":"acl item empty object","mode":"dc","base":"BASE","set":{"acl":[{}]},"expected":[{"field":"acl","code":"Invalid","message":"invalid image \"acl\" (item 0 is not a UUID): {}"}]},
{"name":"acl empty passes","mode":"dc","base":"BASE","set":{"acl":[]},"expected":[]},
{"name":"requirements networks not an array","mode":"dc","base":"BASE","set":{"requirements":{"networks":{"name":"net0"}}},"expected":[{"field":"requirements.networks","code":"Invalid","message":"invalid image \"requirements.networks\" (not an array): {\"name\":\"net0\"}"}]},
{"name":"requirements networks bad entries","mode":"dc","base":"BASE","set":{"requirements":{"networks":[{"name":"net0"},{"name":"a","description":"b","c":1},"net1",[1,2],{"name":null,"description":null}]}},"expected":[{"field":"requirements.networks","code":"Invalid","message":"invalid image \"requirements.networks\" entry: {\"name\":\"net0\"}"},{"field":"requirements.networks","code":"Invalid","message":"invalid image \"requirements.networks\" entry: {\"name\":\"a\",\"description\":\"b\",\"c\":1}"},{"field":"requirements.networks","code":"Invalid","message":"invalid image \"requirements.networks\" entry: \"net1\""},{"field":"requirements.networks","code":"Invalid","message":"invalid image \"requirements.networks\" entry: [1,2]"}]},
{"name":"requirements brand and ssh_key wrong types","mode":"dc","base":"BASE","set":{"requirements":{"brand":5,"ssh_key":"yes"}},"expected":[{"field":"requirements.brand","code":"Invalid","message":"invalid image \"requirements.brand\" (not a string): 5"},{"field":"requirements.ssh_key","code":"Invalid","message":"invalid image \"requirements.ssh_key\" (not a boolean): \"yes\""}]},
{"name":"requirements falsy values skip checks","mode":"dc","base":"BASE","set":{"requirements":{"brand":0,"ssh_key":0,"min_ram":0,"networks":"","min_platform":null,"bootrom":""}},"expected":[]},
{"name":"requirements ram not integers","mode":"dc","base":"BASE","set":{"requirements":{"min_ram":1.5,"max_ram":"1024"}},"expected":[{"field":"requirements.min_ram","code":"Invalid","message":"invalid image \"requirements.min_ram\" (not a positive integer): 1.5"},{"field":"requirements.max_ram","code":"Invalid","message":"invalid image \"requirements.max_ram\" (not a positive integer): \"1024\""}]},
{"name":"requirements min_ram above max_ram","mode":"dc","base":"BASE","set":{"requirements":{"min_ram":2048,"max_ram":1024}},"expected":[{"field":"requirements.max_ram","code":"Invalid","message":"min_ram must be <= max_ram, but:min_ram=2048, max_ram=1024"}]},
{"name":"requirements equal and negative rams pass","mode":"dc","base":"BASE","set":{"requirements":{"min_ram":-5,"max_ram":-5}},"expected":[]},
{"name":"requirements platform not objects","mode":"dc","base":"BASE","set":{"requirements":{"min_platform":"x","max_platform":{}}},"expected":[{"field":"requirements.min_platform","code":"Invalid","message":"invalid image \"requirements.min_platform\" (not an object): \"x\""},{"field":"requirements.max_platform","code":"Invalid","message":"invalid image \"requirements.max_platform\" (not an object): {}"}]},
{"name":"requirements platform empty array and true","mode":"dc","base":"BASE","set":{"requirements":{"min_platform":[],"max_platform":true}},"expected":[{"field":"requirements.min_platform","code":"Invalid","message":"invalid image \"requirements.min_platform\" (not an object): []"},{"field":"requirements.max_platform","code":"Invalid","message":"invalid image \"requirements.max_platform\" (not an object): true"}]},
{"name":"requirements platform bad timestamps","mode":"dc","base":"BASE","set":{"requirements":{"min_platform":{"6.5":"2013","7.0":"20110308T102805Z","7.1":"20131308T102805Z","7.2":"20130300T102805Z","7.3":"20130308X102805Z"},"max_platform":{"7.0":"20130308T242805Z","7.1":"20130308T106005Z","7.2":"20130308T102860Z","7.3":"20130308T102805z","7.4":5,"7.5":["20130308T102805Z"]}}},"expected":[{"field":"requirements.min_platform","code":"Invalid","message":"invalid image \"requirements.min_platform\" entry: \"6.5: 2013\" not a valid platform version"},{"field":"requirements.min_platform","code":"Invalid","message":"invalid image \"requirements.min_platform\" entry: \"7.0: 20110308T102805Z\" not a valid platform version"},{"field":"requirements.min_platform","code":"Invalid","message":"invalid image \"requirements.min_platform\" entry: \"7.1: 20131308T102805Z\" not a valid platform version"},{"field":"requirements.min_platform","code":"Invalid","message":"invalid image \"requirements.min_platform\" entry: \"7.2: 20130300T102805Z\" not a valid platform version"},{"field":"requirements.min_platform","code":"Invalid","message":"invalid image \"requirements.min_platform\" entry: \"7.3: 20130308X102805Z\" not a valid platform version"},{"field":"requirements.max_platform","code":"Invalid","message":"invalid image \"requirements.max_platform\" entry: \"7.0: 20130308T242805Z\" not a valid platform version"},{"field":"requirements.max_platform","code":"Invalid","message":"invalid image \"requirements.max_platform\" entry: \"7.1: 20130308T106005Z\" not a valid platform version"},{"field":"requirements.max_platform","code":"Invalid","message":"invalid image \"requirements.max_platform\" entry: \"7.2: 20130308T102860Z\" not a valid platform version"},{"field":"requirements.max_platform","code":"Invalid","message":"invalid image \"requirements.max_platform\" entry: \"7.3: 20130308T102805z\" not a valid platform version"},{"field":"requirements.max_platform","code":"Invalid","message":"invalid image \"requirements.max_platform\" entry: \"7.4: 5\" not a valid platform version"},{"field":"requirements.max_platform","code":"Invalid","message":"invalid image \"requirements.max_platform\" entry: \"7.5: [ '20130308T102805Z' ]\" not a valid platform version"}]},
{"name":"requirements platform timestamps that pass by coercion","mode":"dc","base":"BASE","set":{"requirements":{"min_platform":{"a":"Infi0101T000000Z","b":"2e100101T000000Z","c":"2013ab01T0000 5Z"}}},"expected":[]},
{"name":"requirements platform as array","mode":"dc","base":"BASE","set":{"requirements":{"min_platform":["20130308T102805Z","bad"]}},"expected":[{"field":"requirements.min_platform","code":"Invalid","message":"invalid image \"requirements.min_platform\" entry: \"1: bad\" not a valid platform version"}]},
{"name":"requirements unknown keys","mode":"dc","base":"BASE","set":{"requirements":{"foo":1,"networks":[],"bar":2}},"expected":[{"field":"foo","code":"Invalid","message":"unsupported requirement \"foo\""},{"field":"bar","code":"Invalid","message":"unsupported requirement \"bar\""}]},
{"name":"requirements bootrom without brand","mode":"dc","base":"BASE","set":{"requirements":{"bootrom":"bios"}},"expected":[{"field":"requirements.bootrom","code":"MissingParameter","message":"\"requirements.brand\" not specified. \"requirements.bootrom\" requires \"requirements.brand\" to be set to \"bhyve\""}]},
{"name":"requirements bootrom with joyent brand","mode":"dc","base":"BASE","set":{"requirements":{"bootrom":"bios","brand":"joyent"}},"expected":[{"field":"requirements.bootrom","code":"Invalid","message":"invalid bootrom \"requirements.bootrom\" not supported with \"joyent\" brand; \"requirements.brand\" must be \"bhyve\""}]},
{"name":"requirements bootrom unknown with bhyve","mode":"dc","base":"BASE","set":{"requirements":{"bootrom":"pxe","brand":"bhyve"}},"expected":[{"field":"requirements.bootrom","code":"Invalid","message":"invalid bootrom \"requirements.bootrom\" invalid entry \"pxe\"; must be one of: bios, uefi"}]},
{"name":"requirements bootrom with numeric brand","mode":"dc","base":"BASE","set":{"requirements":{"bootrom":"bios","brand":5}},"expected":[{"field":"requirements.brand","code":"Invalid","message":"invalid image \"requirements.brand\" (not a string): 5"},{"field":"requirements.bootrom","code":"Invalid","message":"invalid bootrom \"requirements.bootrom\" not supported with \"5\" brand; \"requirements.brand\" must be \"bhyve\""}]},
{"name":"requirements bootrom object with bhyve","mode":"dc","base":"BASE","set":{"requirements":{"bootrom":{"a":1},"brand":"bhyve"}},"expected":[{"field":"requirements.bootrom","code":"Invalid","message":"invalid bootrom \"requirements.bootrom\" invalid entry \"{ a: 1 }\"; must be one of: bios, uefi"}]},
{"name":"requirements string","mode":"dc","base":"BASE","set":{"requirements":"ab"},"expected":[{"field":"0","code":"Invalid","message":"unsupported requirement \"0\""},{"field":"1","code":"Invalid","message":"unsupported requirement \"1\""}]},
{"name":"requirements array","mode":"dc","base":"BASE","set":{"requirements":[1,2]},"expected":[{"field":"0","code":"Invalid","message":"unsupported requirement \"0\""},{"field":"1","code":"Invalid","message":"unsupported requirement \"1\""}]},
{"name":"requirements number and empty object pass","mode":"dc","base":"BASE","set":{"requirements":5,"tags":{}},"expected":[]},
{"name":"users not an array","mode":"dc","base":"BASE","set":{"users":{"name":"root"}},"expected":[{"field":"users","code":"Invalid","message":"invalid image \"users\" (not an array): {\"name\":\"root\"}"}]},
{"name":"users bad entries","mode":"dc","base":"BASE","set":{"users":[{"name":"root"},{"name":"a","uid":1},{"user":"x"},"root",[1]]},"expected":[{"field":"users","code":"Invalid","message":"invalid image \"users\" entry: {\"name\":\"a\",\"uid\":1}"},{"field":"users","code":"Invalid","message":"invalid image \"users\" entry: {\"user\":\"x\"}"},{"field":"users","code":"Invalid","message":"invalid image \"users\" entry: \"root\""},{"field":"users","code":"Invalid","message":"invalid image \"users\" entry: [1]"}]},
{"name":"users name null passes","mode":"dc","base":"BASE","set":{"users":[{"name":null}]},"expected":[]},
{"name":"billing_tags not an array","mode":"dc","base":"BASE","set":{"billing_tags":"xxl"},"expected":[{"field":"billing_tags","code":"Invalid","message":"invalid image \"billing_tags\" (not an array): xxl"}]},
{"name":"billing_tags bad entries","mode":"dc","base":"BASE","set":{"billing_tags":["ok",5,"ttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt","tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt",{"a":1}]},"expected":[{"field":"billing_tags","code":"Invalid","message":"invalid image \"billing_tags\" entry : 5"},{"field":"billing_tags","code":"Invalid","message":"invalid image \"billing_tags\" entry : ttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"},{"field":"billing_tags","code":"Invalid","message":"invalid image \"billing_tags\" entry : { a: 1 }"}]},
{"name":"traits not an object","mode":"dc","base":"BASE","set":{"traits":"x"},"expected":[{"field":"traits","code":"Invalid","message":"invalid image \"traits\" (not an object): \"x\""}]},
{"name":"traits bad values","mode":"dc","base":"BASE","set":{"traits":{"a":1,"b":null,"c":"s","d":true,"e":[],"f":{"g":1}}},"expected":[{"field":"traits","code":"Invalid","message":"invalid image \"traits\" entry: (a, 1)"},{"field":"traits","code":"Invalid","message":"invalid image \"traits\" entry: (b, null)"},{"field":"traits","code":"Invalid","message":"invalid image \"traits\" entry: (f, {\"g\":1})"}]},
{"name":"traits array","mode":"dc","base":"BASE","set":{"traits":[5,"ok"]},"expected":[{"field":"traits","code":"Invalid","message":"invalid image \"traits\" entry: (0, 5)"}]},
{"name":"tags array","mode":"dc","base":"BASE","set":{"tags":["role=os"]},"expected":[{"field":"tags","code":"Invalid","message":"invalid image \"tags\" (not an object): [\"role=os\"]"}]},
{"name":"tags string","mode":"dc","base":"BASE","set":{"tags":"x"},"expected":[{"field":"tags","code":"Invalid","message":"invalid image \"tags\" (not an object): \"x\""}]},
{"name":"inherited_directories on zvol","mode":"dc","base":"ZVOL","set":{"inherited_directories":["/opt"]},"expected":[{"field":"inherited_directories","code":"Invalid","message":"invalid image \"inherited_directories\" (only valid for a type:zone-dataset image): [\"/opt\"]"}]},
{"name":"inherited_directories not an array","mode":"dc","base":"BASE","set":{"inherited_directories":"/opt"},"expected":[{"field":"inherited_directories","code":"Invalid","message":"invalid image \"inherited_directories\" (not an array): \"/opt\""}]},
{"name":"inherited_directories bad entries","mode":"dc","base":"BASE","set":{"inherited_directories":[5,"/opt",null]},"expected":[{"field":"inherited_directories","code":"Invalid","message":"invalid image \"inherited_directories\" entry: 5"},{"field":"inherited_directories","code":"Invalid","message":"invalid image \"inherited_directories\" entry: null"}]},
{"name":"error not an object","mode":"dc","base":"BASE","set":{"error":"boom"},"expected":[{"field":"error","code":"Invalid","message":"invalid image \"error\" (not an object): \"boom\""}]},
{"name":"error null and array pass","mode":"dc","base":"BASE","set":{"error":null},"expected":[]},
{"name":"icon false passes","mode":"dc","base":"BASE","set":{"icon":false},"expected":[]},
{"name":"unknown keys in JS property order","mode":"dc","base":"BASE","set":{"2":4,"10":2,"zeta":1,"alpha":3,"01":5},"expected":[{"field":"2","code":"Invalid"},{"field":"10","code":"Invalid"},{"field":"zeta","code":"Invalid"},{"field":"alpha","code":"Invalid"},{"field":"01","code":"Invalid"}]},
{"name":"channels without configured channels","mode":"dc","base":"BASE","set":{"channels":["dev"]},"expected":[{"field":"channels","code":"Invalid","message":"channels is invalid with an IMGAPI not configured for channels"}]},
{"name":"channels configured: valid","mode":"dc-channels","base":"BASE","set":{"channels":["dev","release"]},"expected":[]},
{"name":"channels configured: missing","mode":"dc-channels","base":"BASE","set":{},"expected":[{"field":"channels","code":"MissingParameter"}]},
{"name":"channels configured: empty passes","mode":"dc-channels","base":"BASE","set":{"channels":[]},"expected":[]},
{"name":"channels configured: not an array","mode":"dc-channels","base":"BASE","set":{"channels":"dev"},"expected":[{"field":"channels","code":"Invalid","message":"invalid image \"channels\" (not an array): \"dev\""}]},
{"name":"channels configured: bad entries","mode":"dc-channels","base":"BASE","set":{"channels":["dev",5,{"a":1},null]},"expected":[{"field":"channels","code":"Invalid","message":"invalid image \"channels\" entry: 5"},{"field":"channels","code":"Invalid","message":"invalid image \"channels\" entry: {\"a\":1}"},{"field":"channels","code":"Invalid","message":"invalid image \"channels\" entry: null"}]},
{"name":"minimal valid","mode":"minimal","base":"MINIMAL","set":{},"expected":[]},
{"name":"minimal zvol needs no drivers","mode":"minimal","base":"MINIMAL","set":{"type":"zvol"},"expected":[]},
{"name":"minimal activated without files or published_at","mode":"minimal","base":"MINIMAL","set":{"activated":true},"expected":[]},
{"name":"minimal validates optional dc fields when present","mode":"minimal","base":"MINIMAL","set":{"owner":"x","state":"x","public":1,"disabled":false,"files":"x","published_at":"x","nic_driver":"virtio"},"expected":[{"field":"owner","code":"Invalid"},{"field":"published_at","code":"Invalid","message":"published_at date not in \"YYYY-MM-DDTHH:MM:SS(.SSS)Z\" format"},{"field":"state","code":"Invalid"},{"field":"public","code":"Invalid","message":"TypeError: invalid value for \"undefined\": 1"},{"field":"files","code":"Invalid","message":"invalid image \"files\" (not an array): x"},{"field":"nic_driver","code":"Invalid","message":"invalid image nic_driver: \"virtio\" (cannot have a value when image type is zvol)"}]},
{"name":"minimal placeholder type/os \"null\"","mode":"minimal","base":"MINIMAL","set":{"type":"null","os":"null","state":"creating"},"expected":[]},
{"name":"minimal \"null\" type without state","mode":"minimal","base":"MINIMAL","set":{"type":"null"},"expected":[{"field":"type","code":"Invalid","message":"invalid image type, \"null\""}]},
{"name":"minimal missing everything but unknown key","mode":"minimal","manifest":{"foo":1},"expected":[{"field":"v","code":"MissingParameter"},{"field":"uuid","code":"MissingParameter"},{"field":"name","code":"MissingParameter"},{"field":"version","code":"MissingParameter"},{"field":"type","code":"MissingParameter"},{"field":"os","code":"MissingParameter"},{"field":"foo","code":"Invalid"}]}
]
"##;

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
                mismatches
                    .push(format!("{}:\n  js:   {}\n  rust: {}", case["name"], case["expected"], actual));
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
            [
                "v",
                "uuid",
                "owner",
                "name",
                "version",
                "disabled",
                "activated",
                "public",
                "state",
                "type",
                "os"
            ]
        );
        assert!(errors.iter().all(|e| e.code == "MissingParameter" && e.message.is_none()));

        let minimal_fields: Vec<String> =
            validate_minimal(&Map::new()).into_iter().map(|e| e.field).collect();
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
                    Some(
                        "invalid image nic_driver: \"virtio\" (cannot have a value when image type is zvol)"
                    )
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
                    Some(
                        format!("invalid image image_size: \"{shown}\" (must be a positive integer)")
                            .as_str()
                    )
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
            only_error(json!({"type": "lxd", "files": [file.clone(), file.clone(), file.clone()]}))
                .2
                .as_deref(),
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
        for ok in [
            json!({"min_ram": 512, "max_ram": 512}),
            json!({"min_ram": -5}),
            json!({"max_ram": 0, "min_ram": 9}),
        ] {
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
            invalid("requirements.max_platform",
                "invalid image \"requirements.max_platform\" entry: \"7.0: null\" not a valid platform version")
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
                (
                    "requirements.brand",
                    "Invalid",
                    Some("invalid image \"requirements.brand\" (not a string): 5")
                ),
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
            triples(&dc(&with(
                base(),
                json!({"users": [{"name": "a", "uid": 1}, {"user": "x"}, "root", null]})
            ))),
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
}
