//! The image's metadata as `imgagent:` user properties of its dataset: written escaped (zfs
//! limits what a value may hold), read back into a `LocalImage`.

use super::*;

/// The user properties of an image, as set: escaped values, nothing for empty or absent ones
/// (zfs-fuse cannot set an empty value; reading an unset one back gives "").
pub(super) fn properties_of(
    meta: &ImageMeta,
    content: ContentKind,
    content_size: u64,
    imported_at: &str,
) -> Vec<(&'static str, String)> {
    let content = match content {
        ContentKind::ZfsStream => "zfs-stream",
        ContentKind::RawDisk => "raw-disk",
    };
    let values = [
        (property::UUID, meta.uuid.to_string()),
        (property::NAME, meta.name.clone()),
        (property::VERSION, meta.version.clone()),
        (property::OS, meta.os.clone()),
        (property::TYPE, meta.image_type.clone()),
        (property::ORIGIN, meta.origin.map(|o| o.to_string()).unwrap_or_default()),
        (property::SHA1, meta.sha1.clone()),
        (property::SIZE, meta.size.to_string()),
        (property::COMPRESSION, meta.compression.clone()),
        (property::IMAGE_SIZE_MIB, meta.image_size_mib.map(|m| m.to_string()).unwrap_or_default()),
        (property::SOURCE, meta.source.clone()),
        (property::CONTENT, content.to_string()),
        (property::CONTENT_SIZE, content_size.to_string()),
        (property::IMPORTED_AT, imported_at.to_string()),
    ];
    values.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k, encode_value(&v))).collect()
}

/// Rebuilds an image from its dataset's `imgagent:` properties (raw, as `zfs get` printed them).
pub(super) fn image_from_properties(
    dataset: &str,
    props: &BTreeMap<String, String>,
) -> Result<LocalImage, String> {
    let text = |key: &str| props.get(key).map(|v| decode_value(v)).unwrap_or_default();
    let required = |key: &str| props.get(key).map(|v| decode_value(v)).ok_or_else(|| format!("no {key}"));
    let number = |key: &str| -> Result<u64, String> {
        required(key)?.parse().map_err(|_| format!("{key} is not a number"))
    };
    let uuid: Uuid =
        required(property::UUID)?.parse().map_err(|_| format!("{} is not a uuid", property::UUID))?;
    if !dataset.ends_with(&format!("/{uuid}")) {
        return Err(format!("{} {uuid} does not match the dataset name", property::UUID));
    }
    let origin = match props.get(property::ORIGIN) {
        None => None,
        Some(v) => Some(decode_value(v).parse().map_err(|_| format!("{} is not a uuid", property::ORIGIN))?),
    };
    let image_size_mib = match props.get(property::IMAGE_SIZE_MIB) {
        None => None,
        Some(v) => Some(
            decode_value(v).parse().map_err(|_| format!("{} is not a number", property::IMAGE_SIZE_MIB))?,
        ),
    };
    let content = match required(property::CONTENT)?.as_str() {
        "zfs-stream" => ContentKind::ZfsStream,
        "raw-disk" => ContentKind::RawDisk,
        other => return Err(format!("unknown {} {other:?}", property::CONTENT)),
    };
    Ok(LocalImage {
        meta: ImageMeta {
            uuid,
            name: text(property::NAME),
            version: text(property::VERSION),
            os: text(property::OS),
            image_type: text(property::TYPE),
            origin,
            sha1: text(property::SHA1),
            size: number(property::SIZE)?,
            compression: text(property::COMPRESSION),
            image_size_mib,
            source: text(property::SOURCE),
        },
        content,
        location: dataset.to_string(),
        content_size: number(property::CONTENT_SIZE)?,
        imported_at: required(property::IMPORTED_AT)?,
    })
}

/// Escapes what `zfs get -H` output cannot carry (line breaks, tabs and other control
/// characters) and `%` itself as `%XX`; everything else stays readable in `zfs get`.
pub(super) fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '%' || c.is_ascii_control() {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn decode_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
