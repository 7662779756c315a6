//! The image record: manifest fields, the server-managed file and icon, the state machine, and
//! the two JSON forms (the API form in sdc-imgapi's key order, and the on-disk record).
//!
//! Image states (sdc-imgapi; `creating` and `failed` only come from admin updates here):
//!
//! ```text
//!   create/import           activate (disabled=false)
//!  --------------> unactivated ----------------------> active
//!                       |                              ^   |
//!                       | activate (disabled=true)     |   | disable
//!                       |                       enable |   v
//!                       +----------------------------> disabled
//! ```

pub mod upgrade;
pub mod validate;

use std::sync::OnceLock;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The owner the reference server gives images that have none.
pub const ZERO_OWNER: &str = "00000000-0000-0000-0000-000000000000";

/// The order in which sdc-imgapi's `serialize()` emits manifest keys.
const API_KEY_ORDER: &[&str] = &[
    "v",
    "uuid",
    "owner",
    "name",
    "version",
    "state",
    "disabled",
    "public",
    "published_at",
    "type",
    "os",
    "files",
    "acl",
    "description",
    "homepage",
    "eula",
    "icon",
    "urn",
    "requirements",
    "users",
    "generate_passwords",
    "inherited_directories",
    "origin",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
    "tags",
    "billing_tags",
    "traits",
    "error",
    "channels",
];

/// Keys the server manages itself; they never live in [`Image::fields`].
const SERVER_KEYS: &[&str] = &["files", "icon", "activated"];

/// The state of an image, as in the manifest's `state` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    Unactivated,
    Active,
    Disabled,
    Creating,
    Failed,
}

impl ImageState {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unactivated" => Self::Unactivated,
            "active" => Self::Active,
            "disabled" => Self::Disabled,
            "creating" => Self::Creating,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unactivated => "unactivated",
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Creating => "creating",
            Self::Failed => "failed",
        }
    }

    /// The state an image is in after activation, enable or disable, given its flags.
    pub fn derived(activated: bool, disabled: bool) -> Self {
        match (activated, disabled) {
            (false, _) => Self::Unactivated,
            (true, false) => Self::Active,
            (true, true) => Self::Disabled,
        }
    }
}

pub use imgapi_client::Compression;

/// The image file as stored: what the API shows plus what serving it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub sha1: String,
    pub size: u64,
    pub compression: Compression,
    pub dataset_guid: Option<String>,
    /// base64 MD5 of the bytes, sent as `Content-MD5`.
    pub content_md5: String,
    /// Upload time, ISO 8601, sent as `Last-Modified`.
    pub mtime: String,
    /// File name inside the image's directory.
    pub path: String,
}

/// The image icon as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIcon {
    pub sha1: String,
    pub size: u64,
    pub content_type: String,
    pub content_md5: String,
    pub mtime: String,
    pub path: String,
}

/// One image: its manifest fields plus the server-managed parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub uuid: Uuid,
    /// Every manifest key except `files`, `icon` and `activated`, validated.
    pub fields: Map<String, Value>,
    pub activated: bool,
    pub file: Option<ImageFile>,
    pub icon: Option<ImageIcon>,
    /// The API form, rendered on first use. Stored images are immutable (a change clones,
    /// edits and replaces), so the cache never goes stale: a clone starts empty.
    pub rendered: RenderCache,
}

/// Which optional parts of the API form to include.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// `channels` is shown only to clients that negotiated API version 2.
    pub channels: bool,
    /// `files[].stor` (`inclAdminFields=true`).
    pub admin_fields: bool,
}

impl RenderOptions {
    fn slot(self) -> usize {
        usize::from(self.channels) | usize::from(self.admin_fields) << 1
    }
}

/// Memoised renderings of one image: what ListImages concatenates, and the entity tag.
///
/// Rendering a 2 KB manifest costs more than sending it; a listing of 1,000 images would
/// otherwise spend most of its time rebuilding the same JSON for every request.
#[derive(Default)]
pub struct RenderCache {
    list_items: [OnceLock<Bytes>; 4],
    etag: OnceLock<String>,
}

impl Clone for RenderCache {
    fn clone(&self) -> Self {
        RenderCache::default()
    }
}

impl PartialEq for RenderCache {
    /// A cache is derived data: it never makes two images differ.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RenderCache")
    }
}

impl Image {
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    pub fn bool_field(&self, key: &str) -> bool {
        match self.fields.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        }
    }

    pub fn state(&self) -> ImageState {
        self.str_field("state")
            .and_then(ImageState::parse)
            .unwrap_or_else(|| ImageState::derived(self.activated, self.disabled()))
    }

    pub fn disabled(&self) -> bool {
        self.bool_field("disabled")
    }

    pub fn public(&self) -> bool {
        self.bool_field("public")
    }

    pub fn owner(&self) -> &str {
        self.str_field("owner").unwrap_or(ZERO_OWNER)
    }

    pub fn origin(&self) -> Option<&str> {
        self.str_field("origin")
    }

    pub fn acl(&self) -> impl Iterator<Item = &str> {
        self.fields.get("acl").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
    }

    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.fields.get("channels").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
    }

    pub fn in_channel(&self, channel: &str) -> bool {
        self.channels().any(|c| c == channel)
    }

    /// `published_at` in milliseconds since the epoch; images never published sort first (0).
    pub fn published_ms(&self) -> i64 {
        self.str_field("published_at").and_then(parse_timestamp_ms).unwrap_or(0)
    }

    /// Sets `state` from `activated` and `disabled`.
    pub fn recompute_state(&mut self) {
        let state = ImageState::derived(self.activated, self.disabled());
        self.fields.insert("state".into(), Value::from(state.as_str()));
    }

    /// The manifest as the API returns it: known keys only, in sdc-imgapi's order.
    pub fn to_api(&self, options: RenderOptions) -> Map<String, Value> {
        let mut out = Map::new();
        for &key in API_KEY_ORDER {
            let value = match key {
                "files" => Some(Value::Array(
                    self.file.iter().map(|f| file_to_api(f, options.admin_fields)).collect(),
                )),
                "icon" => self.icon.as_ref().map(|_| Value::Bool(true)),
                "channels" if !options.channels => None,
                "error" if self.state() != ImageState::Failed => None,
                "published_at"
                | "requirements"
                | "users"
                | "tags"
                | "generate_passwords"
                | "inherited_directories"
                | "image_size"
                | "channels"
                | "error"
                | "v"
                | "uuid"
                | "owner"
                | "name"
                | "version"
                | "state"
                | "disabled"
                | "public" => self.fields.get(key).filter(|v| !v.is_null()).cloned(),
                "acl" | "billing_tags" => self.fields.get(key).filter(|v| non_empty_array(v)).cloned(),
                "traits" => self.fields.get(key).filter(|v| non_empty_object(v)).cloned(),
                "type" | "os" => self.fields.get(key).filter(|v| v.as_str() != Some("null")).cloned(),
                // description, homepage, eula, urn, origin and the zvol drivers: only if truthy.
                _ => self.fields.get(key).filter(|v| truthy(v)).cloned(),
            };
            if let Some(value) = value {
                out.insert(key.to_string(), value);
            }
        }
        out
    }

    /// The manifest's entity tag: sha1 of its compact JSON (as sdc-imgapi computes it), quoted.
    pub fn etag(&self) -> String {
        use sha1::Digest;
        self.rendered
            .etag
            .get_or_init(|| {
                let api = self.to_api(RenderOptions { channels: true, admin_fields: false });
                let compact = serde_json::to_vec(&api).expect("manifests serialize");
                format!("\"{}\"", hex::encode(sha1::Sha1::digest(&compact)))
            })
            .clone()
    }

    /// The API form as one element of a pretty-printed JSON array (`JSON.stringify(list,
    /// null, 2)`): indented one level, without the separating comma. [`list_json`] joins them.
    pub fn list_item_json(&self, options: RenderOptions) -> Bytes {
        self.rendered.list_items[options.slot()]
            .get_or_init(|| {
                let array = serde_json::to_vec_pretty(&[self.to_api(options)]).expect("manifests serialize");
                // "[\n" + item + "\n]": the item is already indented as an array element.
                Bytes::copy_from_slice(&array[2..array.len() - 2])
            })
            .clone()
    }

    /// The view the validator checks: the API fields plus `activated`, `files` and `icon`.
    pub fn validation_view(&self) -> Map<String, Value> {
        let mut view = self.fields.clone();
        view.insert("activated".into(), Value::Bool(self.activated));
        view.insert("files".into(), Value::Array(self.file.iter().map(|f| file_to_api(f, false)).collect()));
        if self.icon.is_some() {
            view.insert("icon".into(), Value::Bool(true));
        }
        view
    }

    /// The record written to `<datadir>/<uuid>/manifest.json`.
    pub fn to_disk(&self) -> Value {
        let mut out = self.fields.clone();
        out.insert("uuid".into(), Value::from(self.uuid.to_string()));
        out.insert("activated".into(), Value::Bool(self.activated));
        let files = self.file.iter().map(|f| {
            let mut m = file_to_api(f, false);
            let obj = m.as_object_mut().expect("file_to_api builds an object");
            obj.insert("contentMD5".into(), Value::from(f.content_md5.clone()));
            obj.insert("mtime".into(), Value::from(f.mtime.clone()));
            obj.insert("path".into(), Value::from(f.path.clone()));
            m
        });
        out.insert("files".into(), Value::Array(files.collect()));
        if let Some(icon) = &self.icon {
            out.insert(
                "icon".into(),
                serde_json::json!({
                    "sha1": icon.sha1, "size": icon.size, "contentType": icon.content_type,
                    "contentMD5": icon.content_md5, "mtime": icon.mtime, "path": icon.path,
                }),
            );
        }
        Value::Object(out)
    }

    /// Reads an on-disk record. Records written by the Go `imgapi` (no `activated`, no file
    /// `path`) are understood too; `legacy_file` then says which file name holds the bytes.
    pub fn from_disk(record: Value) -> Result<Self, RecordError> {
        let Value::Object(mut fields) = record else {
            return Err(RecordError("record is not a JSON object".into()));
        };
        let uuid = fields
            .get("uuid")
            .and_then(Value::as_str)
            .and_then(|u| Uuid::parse_str(u).ok())
            .ok_or_else(|| RecordError("record has no valid uuid".into()))?;
        let activated = match fields.get("activated") {
            Some(Value::Bool(b)) => *b,
            _ => fields.get("state").and_then(Value::as_str).is_some_and(|s| s != "unactivated"),
        };
        let file = match fields.get("files").and_then(Value::as_array).and_then(|f| f.first()) {
            Some(entry) => Some(file_from_disk(entry)?),
            None => None,
        };
        let icon = match fields.get("icon") {
            Some(Value::Object(icon)) => Some(icon_from_disk(icon)?),
            _ => None,
        };
        for key in SERVER_KEYS {
            fields.remove(*key);
        }
        Ok(Image { uuid, fields, activated, file, icon, rendered: RenderCache::default() })
    }
}

/// A pretty-printed JSON array of images (with the trailing newline every response body has),
/// byte for byte what serialising the array of their API forms would give.
pub fn list_json(items: &[Bytes]) -> Vec<u8> {
    if items.is_empty() {
        return b"[]\n".to_vec();
    }
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 2).sum::<usize>() + 4);
    out.extend_from_slice(b"[\n");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"\n]\n");
    out
}

/// Compares an `If-Match` / `If-None-Match` list with an entity tag, ignoring quotes and `W/`.
pub fn etag_matches(list: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").trim_matches('"').to_string();
    let etag = bare(etag);
    list.split(',').any(|t| t.trim() == "*" || bare(t) == etag)
}

/// A stored record that cannot be understood.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(String);

fn file_to_api(file: &ImageFile, admin_fields: bool) -> Value {
    let mut m = Map::new();
    m.insert("sha1".into(), Value::from(file.sha1.clone()));
    m.insert("size".into(), Value::from(file.size));
    m.insert("compression".into(), Value::from(file.compression.as_str()));
    if let Some(guid) = &file.dataset_guid {
        m.insert("dataset_guid".into(), Value::from(guid.clone()));
    }
    if admin_fields {
        m.insert("stor".into(), Value::from("local"));
    }
    Value::Object(m)
}

fn file_from_disk(entry: &Value) -> Result<ImageFile, RecordError> {
    let get = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_owned);
    let sha1 = get("sha1").ok_or_else(|| RecordError("file has no sha1".into()))?;
    let size = entry
        .get("size")
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)))
        .ok_or_else(|| RecordError("file has no size".into()))?;
    let compression = get("compression")
        .as_deref()
        .and_then(Compression::parse)
        .ok_or_else(|| RecordError("file has an invalid compression".into()))?;
    Ok(ImageFile {
        sha1,
        size,
        compression,
        dataset_guid: get("dataset_guid"),
        // Empty for Go-server records: the store fills these in when it loads them.
        content_md5: get("contentMD5").unwrap_or_default(),
        mtime: get("mtime").unwrap_or_default(),
        path: get("path").unwrap_or_default(),
    })
}

fn icon_from_disk(icon: &Map<String, Value>) -> Result<ImageIcon, RecordError> {
    let get = |k: &str| {
        icon.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| RecordError(format!("icon has no {k}")))
    };
    Ok(ImageIcon {
        sha1: get("sha1")?,
        size: icon
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| RecordError("icon has no size".into()))?,
        content_type: get("contentType")?,
        content_md5: get("contentMD5")?,
        mtime: get("mtime")?,
        path: get("path")?,
    })
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn non_empty_array(v: &Value) -> bool {
    v.as_array().is_some_and(|a| !a.is_empty())
}

fn non_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(|o| !o.is_empty())
}

/// Now, as the reference server writes `published_at`: `2026-11-22T10:50:37.855Z`.
pub fn now_timestamp() -> String {
    format_timestamp(Utc::now())
}

pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses the date strings clients send (ISO 8601 with or without fraction or offset, a bare
/// date, or an RFC 2822 date), as JavaScript's `Date.parse` would, into epoch milliseconds.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image(fields: Value) -> Image {
        Image {
            uuid: Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap(),
            fields: fields.as_object().unwrap().clone(),
            activated: true,
            file: Some(ImageFile {
                sha1: "db8ef7fde4395a58b1a169e644bac3804cce62d9".into(),
                size: 379882274,
                compression: Compression::Gzip,
                dataset_guid: None,
                content_md5: "XkT6MzRWXbFFNuCsEgw4xw==".into(),
                mtime: "2026-11-22T10:50:33.000Z".into(),
                path: "file.db8ef7fde4395a58b1a169e644bac3804cce62d9".into(),
            }),
            icon: None,
            rendered: RenderCache::default(),
        }
    }

    #[test]
    fn api_form_uses_reference_order_and_omission_rules() {
        let img = image(json!({
            "tags": {"role": "db"}, "name": "base", "v": 2, "os": "smartos",
            "uuid": "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b", "version": "1.0", "type": "zone-dataset",
            "state": "active", "disabled": false, "public": false, "owner": ZERO_OWNER,
            "acl": [], "description": "", "traits": {}, "billing_tags": [], "error": {"message": "x"},
            "channels": ["dev"], "published_at": "2026-01-01T00:00:00Z"
        }));
        let api = img.to_api(RenderOptions::default());
        let keys: Vec<_> = api.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "v",
                "uuid",
                "owner",
                "name",
                "version",
                "state",
                "disabled",
                "public",
                "published_at",
                "type",
                "os",
                "files",
                "tags"
            ]
        );
        assert_eq!(api["files"][0]["size"], json!(379882274));
        assert!(api["files"][0].get("stor").is_none());
        let api = img.to_api(RenderOptions { channels: true, admin_fields: true });
        assert_eq!(api["channels"], json!(["dev"]));
        assert_eq!(api["files"][0]["stor"], json!("local"));
    }

    #[test]
    fn disk_record_round_trips() {
        let mut img = image(json!({"v": 2, "uuid": "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b", "name": "x"}));
        img.icon = Some(ImageIcon {
            sha1: "a".into(),
            size: 5,
            content_type: "image/png".into(),
            content_md5: "b".into(),
            mtime: "c".into(),
            path: "icon.a".into(),
        });
        let back = Image::from_disk(img.to_disk()).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn go_server_records_are_understood() {
        let record = json!({
            "description": "Snapshot", "disabled": false,
            "files": [{"compression": "gzip", "sha1": "db8e", "size": 3.79882274e+08}],
            "name": "couchbase-server", "os": "smartos", "public": false, "state": "active",
            "type": "zone-dataset", "uuid": "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b", "v": 2,
            "version": "4.5.0-snapshot", "icon": false
        });
        let img = Image::from_disk(record).unwrap();
        assert!(img.activated);
        let file = img.file.unwrap();
        assert_eq!(file.size, 379882274);
        assert_eq!(file.path, "");
        assert!(img.icon.is_none());
        assert!(!img.fields.contains_key("icon"));
    }

    #[test]
    fn timestamps_parse_like_javascript_date() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_timestamp_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_timestamp_ms("Thu, 01 Jan 1970 00:00:02 GMT"), Some(2000));
        assert_eq!(parse_timestamp_ms("bogus"), None);
        assert_eq!(
            format_timestamp(DateTime::from_timestamp_millis(1500).unwrap()),
            "1970-01-01T00:00:01.500Z"
        );
    }

    #[test]
    fn list_json_is_the_pretty_array_byte_for_byte() {
        let plain = image(json!({"v": 2, "name": "a", "state": "active", "disabled": false, "public": true}));
        let tricky = image(json!({"v": 2, "name": "é \"q\"\n\u{1}", "version": "1", "state": "active",
            "disabled": false, "public": false, "tags": {"k": [1, {"x": null}], "e": {}}, "acl": []}));
        for options in [RenderOptions::default(), RenderOptions { channels: true, admin_fields: true }] {
            for images in [vec![], vec![&plain], vec![&plain, &tricky, &plain]] {
                let apis: Vec<_> = images.iter().map(|i| i.to_api(options)).collect();
                let mut want = serde_json::to_vec_pretty(&apis).unwrap();
                want.push(b'\n');
                let items: Vec<_> = images.iter().map(|i| i.list_item_json(options)).collect();
                assert_eq!(String::from_utf8(list_json(&items)).unwrap(), String::from_utf8(want).unwrap());
            }
        }
    }

    #[test]
    fn a_changed_clone_renders_afresh() {
        let original = image(json!({"v": 2, "name": "before"}));
        let before = original.list_item_json(RenderOptions::default());
        let etag = original.etag();
        let mut changed = original.clone();
        changed.fields.insert("name".into(), json!("after"));
        assert!(String::from_utf8_lossy(&changed.list_item_json(RenderOptions::default())).contains("after"));
        assert_ne!(changed.etag(), etag);
        assert_eq!(original.list_item_json(RenderOptions::default()), before);
    }
}
