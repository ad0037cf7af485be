//! Validation of emitted Kubernetes objects against the upstream schemas, checked the way the
//! Kubernetes API server checks a create request with strict field validation.
//!
//! Schemas are read from a folder laid out like this (see [`crds_dir`]):
//!
//! * `gateway-api/standard/*.yaml`, `gateway-api/experimental/*.yaml`: Gateway API
//!   CustomResourceDefinitions. The standard channel wins; a CRD from the experimental channel is
//!   used only for a group/kind the standard channel lacks.
//! * `envoy-gateway/*.yaml`, `ai-gateway/*.yaml`: Envoy Gateway and Envoy AI Gateway CRDs.
//! * `kubernetes/*.json`: Kubernetes OpenAPI v3 documents for the built-in kinds.
//!
//! Every CRD version with `served: true` yields one schema, keyed by (`group/version`, kind);
//! versions that are not served are known but rejected. Built-in kinds are found through
//! `x-kubernetes-group-version-kind` and keep their `$ref`s into the document's
//! `components.schemas`.
//!
//! Before compiling (JSON Schema draft 4), the OpenAPI schemas are rewritten into plain JSON Schema:
//!
//! * `nullable: true` also admits `null`.
//! * `x-kubernetes-int-or-string` and `format: int-or-string` admit integers and strings; a
//!   `resource.Quantity` admits strings (matching the quantity syntax) and numbers.
//! * An object schema with `properties` and without `additionalProperties` rejects unknown fields
//!   (`additionalProperties: false`), unless it has `x-kubernetes-preserve-unknown-fields` or
//!   `x-kubernetes-embedded-resource`. Inside a CRD (structural schema) a bare `type: object`
//!   rejects every field too, because the API server would prune them. Maps
//!   (`additionalProperties: {...}`) are kept. Subschemas of `allOf`/`anyOf`/`oneOf`/`not` are
//!   left open: in a structural schema they only add value checks to the fields declared outside.
//! * CRD `metadata` (only `type: object` upstream) is checked against the strict
//!   `io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta` of the core/v1 document.
//! * Only the formats that the API server enforces on strings are kept: `date-time`, `date`,
//!   `ipv4`, `ipv6`, `hostname` and `email` (checked by the JSON Schema library), `byte`
//!   (standard base64) and `uri` (an absolute URI, an absolute path or a host name, as the API
//!   server's format check accepts). Other formats (`int32`, `int64`, `double`, `duration`, ...)
//!   are dropped.
//! * `default`, `description`, `x-kubernetes-*` (including the CEL rules in
//!   `x-kubernetes-validations`, which are not evaluated) and other annotations are dropped.
//!
//! Before validating a custom resource, the CRD's defaults are applied the way the API server
//! does it (structural defaulting), and `null`s of non-nullable fields are dropped or replaced by
//! their default. For built-in kinds, and for `metadata`, `null` object fields are dropped, as
//! decoding into the typed Go structs does. An object also needs `metadata.name` or
//! `metadata.generateName`.
//!
//! Errors read `"<json pointer>: <message>"`, sorted; the root of the object is written `/`.
//!
//! [`CrdValidator::from_dir`] reads and rewrites every schema; each kind's validator is compiled
//! on its first use ([`CrdValidator::compile_all`] compiles them all at once).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

// Nulls are dropped as the API server does before validating, and as decoding into a typed Go
// struct ignores them.
use aigw::validate::schema::drop_nulls;
use serde_json::{Map, Value, json};

/// The core/v1 OpenAPI document, whose ObjectMeta checks the `metadata` of custom resources.
const CORE_DOCUMENT: &str = "api__v1_openapi.json";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const COMPONENTS_REF_PREFIX: &str = "#/components/schemas/";
const DEFINITIONS_REF_PREFIX: &str = "#/definitions/";
/// The syntax of a `resource.Quantity` string (the pattern Kubernetes code generators emit).
const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// Draft 4 keywords that carry over unchanged from an OpenAPI schema.
const PLAIN_KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "required",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
];
/// String formats the API server checks; every other `format` is dropped.
const ENFORCED_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "ipv4",
    "ipv6",
    "hostname",
    "email",
    "byte",
    "uri",
];

/// Validators for Kubernetes objects, keyed by (apiVersion, kind).
#[allow(dead_code)]
pub struct CrdValidator {
    kinds: HashMap<(String, String), Entry>,
}

enum Entry {
    Served(Box<Served>),
    NotServed { served_versions: Vec<String> },
}

struct Served {
    source: Source,
    compiled: OnceLock<Result<jsonschema::Validator, String>>,
}

enum Source {
    /// A custom resource: the compiled root schema and the original `openAPIV3Schema`, whose
    /// `default`s are applied before validation.
    Crd { root: Value, original: Value },
    /// A built-in kind: the name of its schema among the document's transformed schemas.
    Builtin {
        definitions: Arc<Map<String, Value>>,
        name: String,
    },
}

#[allow(dead_code)]
impl CrdValidator {
    /// Loads every schema under `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, String> {
        let mut kinds = HashMap::new();

        let mut core_definitions = None;
        for file in list_files(&dir.join("kubernetes"), "json")? {
            let definitions = load_openapi_document(&file, &mut kinds)?;
            let is_core = file.file_name().and_then(|n| n.to_str()) == Some(CORE_DOCUMENT);
            if definitions.contains_key(OBJECT_META) && (is_core || core_definitions.is_none()) {
                core_definitions = Some(definitions);
            }
        }
        let core_definitions = core_definitions.ok_or_else(|| {
            format!(
                "{}: no Kubernetes OpenAPI document defines {OBJECT_META}",
                dir.join("kubernetes").display()
            )
        })?;
        let object_meta = closure(&core_definitions, OBJECT_META)?;

        let mut standard_kinds = BTreeSet::new();
        for folder in ["gateway-api/standard", "envoy-gateway", "ai-gateway"] {
            for file in list_files(&dir.join(folder), "yaml")? {
                for crd in read_crds(&file)? {
                    standard_kinds.insert(group_kind(&crd, &file)?);
                    add_crd(&crd, &file, &object_meta, &mut kinds)?;
                }
            }
        }
        for file in list_files(&dir.join("gateway-api/experimental"), "yaml")? {
            for crd in read_crds(&file)? {
                if !standard_kinds.contains(&group_kind(&crd, &file)?) {
                    add_crd(&crd, &file, &object_meta, &mut kinds)?;
                }
            }
        }
        Ok(Self { kinds })
    }

    /// True when a schema for this apiVersion ("v1", "apps/v1", "gateway.networking.k8s.io/v1", ...) and kind is known and served.
    pub fn knows(&self, api_version: &str, kind: &str) -> bool {
        matches!(
            self.kinds.get(&(api_version.to_owned(), kind.to_owned())),
            Some(Entry::Served(_))
        )
    }

    /// Validates one whole object (apiVersion, kind, metadata, spec, ...). Err lists every violation as "<json pointer>: <message>".
    /// An unknown (apiVersion, kind), or a version that is not served, is an error too.
    pub fn validate(&self, object: &Value) -> Result<(), Vec<String>> {
        let (served, defaulted) = self.prepare(object)?;
        let validator = served.validator().map_err(|e| vec![e])?;
        let mut errors: Vec<String> = validator
            .iter_errors(&defaulted)
            .map(|error| {
                let pointer = error.instance_path().as_str();
                let pointer = if pointer.is_empty() { "/" } else { pointer };
                format!("{pointer}: {error}")
            })
            .collect();
        let metadata = defaulted.get("metadata");
        let has_name = ["name", "generateName"].iter().any(|key| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        });
        if !has_name {
            errors.push("/metadata: name or generateName is required".to_owned());
        }
        errors.sort();
        errors.dedup();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The object as it is validated: for a custom resource with the CRD's defaults applied and
    /// the `null`s of non-nullable fields dropped; for a built-in kind with `null` fields dropped.
    pub fn defaulted(&self, object: &Value) -> Result<Value, Vec<String>> {
        self.prepare(object).map(|(_, defaulted)| defaulted)
    }

    /// Compiles every known schema, so that a schema the library cannot compile shows up.
    pub fn compile_all(&self) -> Result<usize, Vec<String>> {
        let mut keys: Vec<_> = self.kinds.keys().collect();
        keys.sort();
        let mut errors = Vec::new();
        let mut count = 0;
        for key in keys {
            if let Some(Entry::Served(served)) = self.kinds.get(key) {
                match served.validator() {
                    Ok(_) => count += 1,
                    Err(e) => errors.push(format!("{} {}: {e}", key.0, key.1)),
                }
            }
        }
        if errors.is_empty() {
            Ok(count)
        } else {
            Err(errors)
        }
    }

    fn prepare(&self, object: &Value) -> Result<(&Served, Value), Vec<String>> {
        let Some(fields) = object.as_object() else {
            return Err(vec![format!("/: expected an object, found {object}")]);
        };
        let api_version = fields.get("apiVersion").and_then(Value::as_str);
        let kind = fields.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return Err(vec![
                "/: apiVersion and kind must be set as strings".to_owned(),
            ]);
        };
        match self.kinds.get(&(api_version.to_owned(), kind.to_owned())) {
            None => Err(vec![format!(
                "/: no schema for kind {kind} in apiVersion {api_version}"
            )]),
            Some(Entry::NotServed { served_versions }) => Err(vec![format!(
                "/: apiVersion {api_version} of kind {kind} is not served (served versions: {})",
                if served_versions.is_empty() {
                    "none".to_owned()
                } else {
                    served_versions.join(", ")
                }
            )]),
            Some(Entry::Served(served)) => {
                let mut copy = object.clone();
                match &served.source {
                    Source::Crd { original, .. } => {
                        apply_defaults(&mut copy, original);
                        if let Some(metadata) = copy.get_mut("metadata") {
                            drop_nulls(metadata);
                        }
                    }
                    Source::Builtin { .. } => drop_nulls(&mut copy),
                }
                Ok((served, copy))
            }
        }
    }
}

impl Served {
    fn validator(&self) -> Result<&jsonschema::Validator, String> {
        self.compiled
            .get_or_init(|| {
                let root = match &self.source {
                    Source::Crd { root, .. } => root.clone(),
                    Source::Builtin { definitions, name } => {
                        let mut root = Map::new();
                        root.insert(
                            "$ref".to_owned(),
                            Value::String(format!("{DEFINITIONS_REF_PREFIX}{name}")),
                        );
                        root.insert(
                            "definitions".to_owned(),
                            Value::Object(closure(definitions, name)?),
                        );
                        Value::Object(root)
                    }
                };
                compile(&root)
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn compile(root: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::draft4::options()
        .should_validate_formats(true)
        .with_format("byte", is_base64)
        .with_format("uri", is_request_uri_or_hostname)
        .build(root)
        .map_err(|e| format!("schema does not compile: {e}"))
}

/// The `.yaml` or `.json` files directly in `dir`, sorted, without the Gateway API
/// ValidatingAdmissionPolicy files.
fn list_files(dir: &Path, extension: &str) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{}: cannot list: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.extension().and_then(|e| e.to_str()) == Some(extension)
            && !name.ends_with("_vap_safeupgrades.yaml")
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no .{extension} schema files", dir.display()));
    }
    Ok(files)
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// The CustomResourceDefinitions among the YAML documents of `path`.
fn read_crds(path: &Path) -> Result<Vec<Value>, String> {
    let text = read_text(path)?;
    let documents: Vec<Value> = serde_saphyr::from_str_multiple(&text)
        .map_err(|e| format!("{}: invalid YAML: {e}", path.display()))?;
    Ok(documents
        .into_iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .collect())
}

fn str_at<'a>(value: &'a Value, pointer: &str, path: &Path) -> Result<&'a str, String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{}: CRD has no string at {pointer}", path.display()))
}

fn group_kind(crd: &Value, path: &Path) -> Result<(String, String), String> {
    Ok((
        str_at(crd, "/spec/group", path)?.to_owned(),
        str_at(crd, "/spec/names/kind", path)?.to_owned(),
    ))
}

fn add_crd(
    crd: &Value,
    path: &Path,
    object_meta: &Map<String, Value>,
    kinds: &mut HashMap<(String, String), Entry>,
) -> Result<(), String> {
    let (group, kind) = group_kind(crd, path)?;
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{}: CRD {kind} has no spec.versions", path.display()))?;
    let served_versions: Vec<String> = versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    for version in versions {
        let name = str_at(version, "/name", path)?;
        let key = (format!("{group}/{name}"), kind.clone());
        if kinds.contains_key(&key) {
            return Err(format!(
                "{}: {} {} is defined twice",
                path.display(),
                key.0,
                key.1
            ));
        }
        let entry = if version.get("served").and_then(Value::as_bool) == Some(true) {
            let original = version
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{}: {kind} {name} has no schema.openAPIV3Schema",
                        path.display()
                    )
                })?;
            let root = crd_root(&original, object_meta);
            Entry::Served(Box::new(Served {
                source: Source::Crd { root, original },
                compiled: OnceLock::new(),
            }))
        } else {
            Entry::NotServed {
                served_versions: served_versions.clone(),
            }
        };
        kinds.insert(key, entry);
    }
    Ok(())
}

/// The compiled root of a CRD version: the strict schema, with `metadata` checked against
/// ObjectMeta (and any constraint the CRD itself puts on `metadata`).
fn crd_root(original: &Value, object_meta: &Map<String, Value>) -> Value {
    let mut root = transform(original, Mode::Crd, false);
    if let Some(properties) = root.get_mut("properties").and_then(Value::as_object_mut) {
        let own = original
            .pointer("/properties/metadata")
            .map(|m| transform(m, Mode::Crd, true))
            .unwrap_or_else(|| json!({}));
        properties.insert(
            "metadata".to_owned(),
            json!({ "allOf": [{ "$ref": format!("{DEFINITIONS_REF_PREFIX}{OBJECT_META}") }, own] }),
        );
    }
    if let Some(map) = root.as_object_mut() {
        map.insert("definitions".to_owned(), Value::Object(object_meta.clone()));
    }
    root
}

/// Reads one Kubernetes OpenAPI v3 document, registers its kinds and returns its transformed
/// schemas.
fn load_openapi_document(
    path: &Path,
    kinds: &mut HashMap<(String, String), Entry>,
) -> Result<Arc<Map<String, Value>>, String> {
    let text = read_text(path)?;
    let document: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
    let schemas = document
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{}: no components.schemas", path.display()))?;

    let mut definitions = Map::new();
    for (name, schema) in schemas {
        let transformed = match name.as_str() {
            // resource.Quantity and intstr.IntOrString have a custom JSON form.
            "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
                json!({ "type": ["string", "number"], "pattern": QUANTITY_PATTERN })
            }
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
                json!({ "type": ["integer", "string"] })
            }
            _ => transform(schema, Mode::Builtin, false),
        };
        definitions.insert(name.clone(), transformed);
    }
    let definitions = Arc::new(definitions);

    for (name, schema) in schemas {
        let Some(gvks) = schema
            .get("x-kubernetes-group-version-kind")
            .and_then(Value::as_array)
        else {
            continue;
        };
        for gvk in gvks {
            let group = gvk.get("group").and_then(Value::as_str).unwrap_or("");
            let (Some(version), Some(kind)) = (
                gvk.get("version").and_then(Value::as_str),
                gvk.get("kind").and_then(Value::as_str),
            ) else {
                continue;
            };
            let api_version = if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            };
            kinds
                .entry((api_version, kind.to_owned()))
                .or_insert_with(|| {
                    Entry::Served(Box::new(Served {
                        source: Source::Builtin {
                            definitions: Arc::clone(&definitions),
                            name: name.clone(),
                        },
                        compiled: OnceLock::new(),
                    }))
                });
        }
    }
    Ok(definitions)
}

/// The schema named `name` and every schema it reaches through `$ref`.
fn closure(definitions: &Map<String, Value>, name: &str) -> Result<Map<String, Value>, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![name.to_owned()];
    while let Some(next) = pending.pop() {
        if found.contains_key(&next) {
            continue;
        }
        let schema = definitions
            .get(&next)
            .ok_or_else(|| format!("$ref to an unknown schema {next}"))?;
        collect_refs(schema, &mut pending);
        found.insert(next, schema.clone());
    }
    Ok(found.into_iter().collect())
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => {
                        if let Some(name) = target.strip_prefix(DEFINITIONS_REF_PREFIX) {
                            out.push(name.to_owned());
                        }
                    }
                    _ => collect_refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        _ => {}
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A structural CRD schema: a bare `type: object` has no fields at all.
    Crd,
    /// A Kubernetes OpenAPI schema: a bare `type: object` is free-form.
    Builtin,
}

/// Rewrites one OpenAPI schema node (and its subschemas) into plain draft 4 JSON Schema.
/// `in_junctor` is true below `allOf`/`anyOf`/`oneOf`/`not`, where no field strictness is added.
fn transform(schema: &Value, mode: Mode, in_junctor: bool) -> Value {
    let Some(source) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    for keyword in PLAIN_KEYWORDS {
        if let Some(value) = source.get(*keyword) {
            out.insert((*keyword).to_owned(), value.clone());
        }
    }
    if let Some(Value::String(target)) = source.get("$ref") {
        let target = match target.strip_prefix(COMPONENTS_REF_PREFIX) {
            Some(name) => format!("{DEFINITIONS_REF_PREFIX}{name}"),
            None => target.clone(),
        };
        out.insert("$ref".to_owned(), Value::String(target));
    }
    if let Some(Value::String(format)) = source.get("format") {
        if format == "int-or-string" {
            int_or_string(&mut out);
        } else if ENFORCED_FORMATS.contains(&format.as_str()) {
            out.insert("format".to_owned(), Value::String(format.clone()));
        }
    }
    for keyword in ["properties", "patternProperties"] {
        if let Some(Value::Object(properties)) = source.get(keyword) {
            let properties = properties
                .iter()
                .map(|(name, sub)| (name.clone(), transform(sub, mode, in_junctor)))
                .collect();
            out.insert(keyword.to_owned(), Value::Object(properties));
        }
    }
    match source.get("additionalProperties") {
        Some(Value::Bool(allowed)) => {
            out.insert("additionalProperties".to_owned(), Value::Bool(*allowed));
        }
        Some(sub @ Value::Object(_)) => {
            out.insert(
                "additionalProperties".to_owned(),
                transform(sub, mode, in_junctor),
            );
        }
        _ => {}
    }
    match source.get("items") {
        Some(sub @ Value::Object(_)) => {
            out.insert("items".to_owned(), transform(sub, mode, in_junctor));
        }
        Some(Value::Array(subs)) => {
            let subs = subs
                .iter()
                .map(|s| transform(s, mode, in_junctor))
                .collect();
            out.insert("items".to_owned(), Value::Array(subs));
        }
        _ => {}
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = source.get(keyword) {
            let subs = subs.iter().map(|s| transform(s, mode, true)).collect();
            out.insert(keyword.to_owned(), Value::Array(subs));
        }
    }
    if let Some(sub @ Value::Object(_)) = source.get("not") {
        out.insert("not".to_owned(), transform(sub, mode, true));
    }

    let flag = |name: &str| source.get(name).and_then(Value::as_bool) == Some(true);
    if flag("x-kubernetes-int-or-string")
        && !out.contains_key("anyOf")
        && !out.contains_key("oneOf")
    {
        int_or_string(&mut out);
    }
    let open =
        flag("x-kubernetes-preserve-unknown-fields") || flag("x-kubernetes-embedded-resource");
    let is_object_type = out.get("type").and_then(Value::as_str) == Some("object");
    let untyped_or_object = is_object_type || !out.contains_key("type");
    if !in_junctor
        && !open
        && !out.contains_key("additionalProperties")
        && !out.contains_key("patternProperties")
        && ((out.contains_key("properties") && untyped_or_object)
            || (mode == Mode::Crd && is_object_type))
    {
        // An explicit (possibly empty) `properties` makes the library name the unexpected field.
        out.entry("properties").or_insert_with(|| json!({}));
        out.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    if flag("nullable") {
        return nullable(out);
    }
    Value::Object(out)
}

/// Makes a schema accept integers and strings (and nothing else by type).
fn int_or_string(out: &mut Map<String, Value>) {
    out.remove("format");
    out.insert("type".to_owned(), json!(["integer", "string"]));
}

/// Lets `null` through a schema as well.
fn nullable(mut out: Map<String, Value>) -> Value {
    let has_junctor = ["allOf", "anyOf", "oneOf", "not"]
        .iter()
        .any(|k| out.contains_key(*k));
    if has_junctor || out.contains_key("$ref") {
        return json!({ "anyOf": [{ "type": "null" }, Value::Object(out)] });
    }
    match out.get_mut("type") {
        Some(Value::String(single)) => {
            let single = std::mem::take(single);
            out.insert("type".to_owned(), json!([single, "null"]));
        }
        Some(Value::Array(types)) if !types.contains(&json!("null")) => {
            types.push(json!("null"));
        }
        _ => {}
    }
    if let Some(Value::Array(values)) = out.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    Value::Object(out)
}

/// Structural defaulting as the API server does it for custom resources: a `null` in a field
/// that is not nullable is replaced by the field's default or dropped, a missing field with a
/// default gets it, and this repeats for every present value (defaults included).
fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(properties) = properties {
                for (name, property) in properties {
                    let default = property.get("default");
                    let nullable = property.get("nullable").and_then(Value::as_bool) == Some(true);
                    match fields.get(name) {
                        None => {
                            if let Some(default) = default {
                                fields.insert(name.clone(), default.clone());
                            }
                        }
                        Some(Value::Null) if !nullable => match default {
                            Some(default) => {
                                fields.insert(name.clone(), default.clone());
                            }
                            None => {
                                fields.remove(name);
                            }
                        },
                        Some(_) => {}
                    }
                }
            }
            let additional = schema.get("additionalProperties").filter(|s| s.is_object());
            for (name, child) in fields.iter_mut() {
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => apply_defaults(child, property),
                    None => {
                        if let Some(additional) = additional {
                            apply_defaults(child, additional);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// The `byte` format: standard base64 with padding.
fn is_base64(s: &str) -> bool {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 {
        return false;
    }
    bytes[..bytes.len() - padding]
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The `uri` format as the API server checks it: an absolute URI (`scheme:...`), an absolute
/// path, or a host name.
fn is_request_uri_or_hostname(s: &str) -> bool {
    if s.is_empty() || s.chars().any(|c| c.is_control() || c == ' ') {
        return false;
    }
    if s.starts_with('/') {
        return true;
    }
    if let Some((scheme, _)) = s.split_once(':') {
        let mut chars = scheme.chars();
        if chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return true;
        }
    }
    is_hostname(s)
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 255
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// [`crds_dir`], saying on standard error that `what` is skipped when there is none.
#[allow(dead_code)]
pub fn crds_dir_or_skip(what: &str) -> Option<PathBuf> {
    let dir = crds_dir();
    if dir.is_none() {
        eprintln!("AIGW_CRDS_DIR not set and ../shared/crds missing: {what} skipped");
    }
    dir
}

/// The schema folder: `AIGW_CRDS_DIR` if set, else `<CARGO_MANIFEST_DIR>/../../shared/crds`.
/// Returns None when the folder does not exist. When the env var `CI` is "true" a missing folder
/// is a failure instead: this panics.
#[allow(dead_code, clippy::panic)]
pub fn crds_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("AIGW_CRDS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("..")
            .join("shared")
            .join("crds"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "schema folder {} does not exist; set AIGW_CRDS_DIR to the folder holding \
             gateway-api/, envoy-gateway/, ai-gateway/ and kubernetes/ (in CI the schema \
             validation must not be skipped)",
            dir.display()
        );
    }
    None
}
