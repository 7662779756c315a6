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

pub(crate) mod js;

#[cfg(test)]
mod tests;
