//! What every service's OpenAPI document shares: how it is rendered (served and committed as
//! the same bytes), the schema of raw bodies, and the checks each service's tests run on its
//! document (the committed copy is the generated one, every reference resolves, operation ids
//! are unique).

use std::path::Path;

use serde_json::Value;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

/// Bytes as they are (an image file, an ISO, console output): `{"type": "string", "format":
/// "binary"}`, as OpenAPI says raw bodies.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// The document as pretty JSON with a final newline: what `GET /openapi.json` answers and what
/// `docs/openapi/` holds.
pub fn render(document: utoipa::openapi::OpenApi) -> String {
    let mut value = serde_json::to_value(document).expect("an OpenAPI document serialises");
    fix_links(&mut value);
    let mut text = serde_json::to_string_pretty(&value).expect("JSON serialises");
    text.push('\n');
    text
}

/// utoipa 5.5 writes a Link object's fields in snake case (`operation_id`); OpenAPI spells
/// them `operationId`, `operationRef` and `requestBody`.
fn fix_links(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Object(links)) = object.get_mut("links") {
                for link in links.values_mut().filter_map(Value::as_object_mut) {
                    for (from, to) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(field) = link.remove(from) {
                            link.insert(to.into(), field);
                        }
                    }
                }
            }
            object.values_mut().for_each(fix_links);
        }
        Value::Array(items) => items.iter_mut().for_each(fix_links),
        _ => {}
    }
}

/// Compares the committed document at `path` with the generated one; with `UPDATE_OPENAPI` set,
/// writes it first. The error says how to regenerate (`command`).
pub fn check_committed(path: &Path, generated: &str, command: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, generated).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed == generated {
        Ok(())
    } else {
        Err(format!("{} differs from what the code generates: {command}", path.display()))
    }
}

/// The problems of a rendered document: `$ref`s to schemas it does not have (utoipa references
/// some types, such as enums of query parameters, without adding them) and repeated operation
/// ids. Empty when it is sound.
pub fn problems(document: &str) -> Vec<String> {
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(object) => {
                if let Some(target) = object.get("$ref").and_then(Value::as_str) {
                    found.push(target);
                }
                object.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let document: Value = match serde_json::from_str(document) {
        Ok(document) => document,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    let mut problems = Vec::new();
    let mut found = Vec::new();
    refs(&document, &mut found);
    for target in found {
        let known = target
            .strip_prefix("#/components/schemas/")
            .is_some_and(|name| document["components"]["schemas"].get(name).is_some());
        if !known {
            problems.push(format!("{target} is not in the document"));
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for (path, methods) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in methods.as_object().into_iter().flatten() {
            match operation["operationId"].as_str() {
                Some(id) if ids.insert(id.to_string()) => {}
                Some(id) => problems.push(format!("{method} {path}: operation id {id} repeats")),
                None => problems.push(format!("{method} {path}: no operation id")),
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_found() {
        let sound = r##"{"paths": {"/a": {"get": {"operationId": "A", "responses": {"200": {"content": {"application/json":
            {"schema": {"$ref": "#/components/schemas/X"}}}}}}}}, "components": {"schemas": {"X": {}}}}"##;
        assert!(problems(sound).is_empty(), "{:?}", problems(sound));
        let broken = r##"{"paths": {"/a": {"get": {"operationId": "A", "x": {"$ref": "#/components/schemas/Y"}},
            "post": {"operationId": "A"}}}, "components": {"schemas": {}}}"##;
        let found = problems(broken);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("Y is not in the document"));
        assert!(found[1].contains("repeats"));
    }

    #[test]
    fn link_fields_are_camel_case() {
        let mut value =
            serde_json::json!({"responses": {"200": {"links": {"L": {"operation_id": "GetImage"}}}}});
        fix_links(&mut value);
        assert_eq!(value["responses"]["200"]["links"]["L"], serde_json::json!({"operationId": "GetImage"}));
    }
}
