//! JSON schemas (function parameters, response formats) as the OpenAPI subset Gemini accepts:
//! upper-case types, `nullable`, local `$ref`s inlined, unknown keywords dropped, bounded in
//! depth and growth.

use serde_json::{Map, Value, json};

use super::{MAX_SCHEMA_DEPTH, MAX_SCHEMA_GROWTH};
use crate::translate::{TranslateError, invalid, unsupported};

/// Converts a JSON schema into the OpenAPI subset Gemini accepts as `parameters` and
/// `responseSchema`.
pub fn gemini_schema(schema: &Value) -> Result<Value, TranslateError> {
    let empty = Map::new();
    let root = schema.as_object().unwrap_or(&empty);
    let defs = root
        .get("$defs")
        .or_else(|| root.get("definitions"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut budget = json_size(schema).saturating_mul(MAX_SCHEMA_GROWTH);
    convert_schema(schema, defs, 0, &mut budget)
}

/// About the length of `value` written as JSON.
pub(super) fn json_size(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len().saturating_add(2),
        Value::Array(items) => items.iter().fold(2, |size, item| {
            size.saturating_add(json_size(item)).saturating_add(1)
        }),
        Value::Object(map) => map.iter().fold(2, |size, (key, item)| {
            size.saturating_add(key.len())
                .saturating_add(json_size(item))
                .saturating_add(4)
        }),
        _ => 4,
    }
}

pub(super) fn gemini_type(name: &str) -> Result<&'static str, TranslateError> {
    Ok(match name {
        "string" => "STRING",
        "number" => "NUMBER",
        "integer" => "INTEGER",
        "boolean" => "BOOLEAN",
        "array" => "ARRAY",
        "object" => "OBJECT",
        "null" => "NULL",
        other => return Err(invalid(format!("unknown JSON schema type {other:?}"))),
    })
}

/// Copies the keys of `from` into `into` where `into` has none.
pub(super) fn merge_missing(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        into.entry(key).or_insert(value);
    }
}

/// A JSON schema as Gemini's: each keyword family in its own step, `nullable` gathered from
/// `null` types, `null` alternatives and `null` enum values.
pub(super) fn convert_schema(
    schema: &Value,
    defs: &Map<String, Value>,
    depth: usize,
    budget: &mut usize,
) -> Result<Value, TranslateError> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(unsupported(
            "the JSON schema nests too deeply (or its $refs are recursive) for Gemini",
        ));
    }
    let source = match schema {
        Value::Object(map) => map,
        // `true` accepts anything; Gemini has no such schema, an empty one comes closest.
        Value::Bool(true) => return Ok(json!({})),
        _ => return Err(invalid("a JSON schema must be an object")),
    };
    let mut out = inline_references(source, defs, depth, budget)?;
    let mut nullable = convert_type(source, &mut out)?;
    nullable |= convert_alternatives(source, &mut out, defs, depth, budget)?;
    nullable |= convert_constants(source, &mut out)?;
    convert_children(source, &mut out, defs, depth, budget)?;
    copy_annotations(source, &mut out);
    if nullable || source.get("nullable").and_then(Value::as_bool) == Some(true) {
        out.insert("nullable".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// The schema a local `$ref` names, and the single schema of an `allOf`, converted: the start
/// of the converted schema, which the schema's own keywords complete.
fn inline_references(
    source: &Map<String, Value>,
    defs: &Map<String, Value>,
    depth: usize,
    budget: &mut usize,
) -> Result<Map<String, Value>, TranslateError> {
    let mut out = Map::new();
    if let Some(reference) = source.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"))
            .ok_or_else(|| {
                unsupported(format!(
                    "JSON schema $ref {reference:?} cannot be sent to Gemini"
                ))
            })?;
        let target = defs
            .get(name)
            .ok_or_else(|| invalid(format!("JSON schema $ref {reference:?} names nothing")))?;
        *budget = budget
            .checked_sub(json_size(target))
            .ok_or_else(|| unsupported("the JSON schema's $refs inline too much for Gemini"))?;
        if let Value::Object(resolved) = convert_schema(target, defs, depth + 1, budget)? {
            out = resolved;
        }
    }
    if let Some(Value::Array(all)) = source.get("allOf") {
        if all.len() != 1 {
            return Err(unsupported(
                "JSON schema allOf with several schemas cannot be sent to Gemini",
            ));
        }
        if let Some(Value::Object(inner)) = all
            .first()
            .map(|s| convert_schema(s, defs, depth + 1, budget))
            .transpose()?
        {
            merge_missing(&mut out, inner);
        }
    }
    Ok(out)
}

/// `type` (a name or a list of names) as Gemini's upper-case `type`, or `anyOf` for several;
/// true when `null` is among them.
fn convert_type(
    source: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<bool, TranslateError> {
    let mut nullable = false;
    match source.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => {
            let kind = gemini_type(name)?;
            if kind == "NULL" {
                nullable = true;
            } else {
                out.insert("type".into(), json!(kind));
            }
        }
        Some(Value::Array(names)) => {
            let mut kinds = Vec::new();
            for name in names {
                let name = name
                    .as_str()
                    .ok_or_else(|| invalid("JSON schema types must be strings"))?;
                match gemini_type(name)? {
                    "NULL" => nullable = true,
                    kind => kinds.push(kind),
                }
            }
            match kinds.as_slice() {
                [] => {}
                [only] => {
                    out.insert("type".into(), json!(only));
                }
                several => {
                    let any: Vec<Value> = several.iter().map(|k| json!({"type": k})).collect();
                    out.insert("anyOf".into(), Value::Array(any));
                }
            }
        }
        Some(_) => return Err(invalid("JSON schema type must be a string or a list")),
    }
    Ok(nullable)
}

/// `anyOf` and `oneOf` as Gemini's `anyOf` (a single alternative merged in); true when one
/// alternative is the `null` type.
fn convert_alternatives(
    source: &Map<String, Value>,
    out: &mut Map<String, Value>,
    defs: &Map<String, Value>,
    depth: usize,
    budget: &mut usize,
) -> Result<bool, TranslateError> {
    let mut nullable = false;
    for key in ["anyOf", "oneOf"] {
        let Some(list) = source.get(key) else {
            continue;
        };
        let list = list
            .as_array()
            .ok_or_else(|| invalid(format!("JSON schema {key} must be a list")))?;
        let mut options = Vec::new();
        for option in list {
            if option.get("type").and_then(Value::as_str) == Some("null")
                && option.as_object().is_some_and(|o| o.len() == 1)
            {
                nullable = true;
                continue;
            }
            options.push(convert_schema(option, defs, depth + 1, budget)?);
        }
        match options.len() {
            0 => {}
            1 => {
                if let Some(Value::Object(only)) = options.pop() {
                    merge_missing(out, only);
                }
            }
            _ => {
                out.insert("anyOf".into(), Value::Array(options));
            }
        }
    }
    Ok(nullable)
}

/// `const` and `enum` as Gemini's string `enum`; true when `null` is an enum value.
fn convert_constants(
    source: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<bool, TranslateError> {
    let mut nullable = false;
    if let Some(value) = source.get("const") {
        match value {
            Value::String(_) => {
                out.insert("enum".into(), json!([value]));
                out.entry("type").or_insert(json!("STRING"));
            }
            _ => return Err(unsupported("Gemini schemas allow only string constants")),
        }
    }
    if let Some(Value::Array(values)) = source.get("enum") {
        let strings: Vec<Value> = values.iter().filter(|v| !v.is_null()).cloned().collect();
        if values.iter().any(Value::is_null) {
            nullable = true;
        }
        // Gemini enumerates strings only; other enumerations are left unconstrained.
        if !strings.is_empty() && strings.iter().all(Value::is_string) {
            out.insert("enum".into(), Value::Array(strings));
            out.entry("type").or_insert(json!("STRING"));
        }
    }
    Ok(nullable)
}

/// `properties` (with the `required` names that exist) and `items`, converted in turn.
fn convert_children(
    source: &Map<String, Value>,
    out: &mut Map<String, Value>,
    defs: &Map<String, Value>,
    depth: usize,
    budget: &mut usize,
) -> Result<(), TranslateError> {
    if let Some(properties) = source.get("properties") {
        let properties = properties
            .as_object()
            .ok_or_else(|| invalid("JSON schema properties must be an object"))?;
        let mut converted = Map::new();
        for (name, property) in properties {
            converted.insert(
                name.clone(),
                convert_schema(property, defs, depth + 1, budget)?,
            );
        }
        if let Some(Value::Array(required)) = source.get("required") {
            let required: Vec<Value> = required
                .iter()
                .filter(|r| r.as_str().is_some_and(|r| converted.contains_key(r)))
                .cloned()
                .collect();
            if !required.is_empty() {
                out.insert("required".into(), Value::Array(required));
            }
        }
        if !converted.is_empty() {
            out.insert("properties".into(), Value::Object(converted));
        }
    }
    if let Some(items) = source.get("items") {
        if items.is_array() {
            return Err(unsupported("tuple JSON schemas cannot be sent to Gemini"));
        }
        out.insert(
            "items".into(),
            convert_schema(items, defs, depth + 1, budget)?,
        );
    }
    Ok(())
}

/// The annotations and bounds Gemini knows, copied; `format` only where Gemini takes it for
/// the converted type.
fn copy_annotations(source: &Map<String, Value>, out: &mut Map<String, Value>) {
    for key in [
        "title",
        "description",
        "default",
        "example",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "pattern",
        "propertyOrdering",
    ] {
        if let Some(value) = source.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    if let Some(format) = source.get("format").and_then(Value::as_str) {
        let allowed = match out.get("type").and_then(Value::as_str) {
            Some("STRING") => ["date-time", "enum"].contains(&format),
            Some("NUMBER") => ["float", "double"].contains(&format),
            Some("INTEGER") => ["int32", "int64"].contains(&format),
            _ => false,
        };
        if allowed {
            out.insert("format".into(), json!(format));
        }
    }
}
