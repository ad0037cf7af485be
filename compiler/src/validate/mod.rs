//! Stage 2, validate: documents in, typed [`Object`]s out.
//!
//! Each document is classified by `apiVersion` and `kind`. AI Gateway kinds are checked as the
//! API server would (schema, then the CRD's CEL rules, see [`schema`] and [`rules`]) and
//! deserialized into [`crate::model`] types; v1alpha1 documents are read into the same types (the
//! versions are structurally identical apart from the rules that [`rules`] applies per version),
//! which is the whole conversion. The Gateway API and core objects the compiler reads (Gateway,
//! ReferenceGrant, Secret, Namespace) are parsed into small views. Everything else is kept as it
//! is, to be passed through.
//!
//! Checks here look at one object at a time; `aigw validate` stops after this stage. References
//! between objects are the next stage's ([`crate::resolve`]).

pub mod defaults;
pub mod names;
pub mod rules;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::diag::{Diagnostic, DiagnosticKind, FieldPath};
use crate::load::Document;
use crate::model::{self, AIGW_GROUP, EG_GROUP, GATEWAY_GROUP};
use schema::AiKind;

/// Identity of an object: group, kind, namespace (empty when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// API group (empty for core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A Gateway listener as far as route attachment is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Listener name.
    pub name: String,
    /// Hostname the listener serves, if restricted.
    pub hostname: Option<String>,
    /// Port.
    pub port: i64,
    /// Protocol (HTTP, HTTPS, ...).
    pub protocol: String,
    /// Which namespaces may attach routes.
    pub allowed_from: AllowedFrom,
    /// Which route kinds may attach (`None`: the protocol's default).
    pub allowed_kinds: Option<Vec<(String, String)>>,
}

/// `allowedRoutes.namespaces.from`.
#[derive(Debug, Clone, PartialEq)]
pub enum AllowedFrom {
    /// Only the Gateway's namespace (the default).
    Same,
    /// Any namespace.
    All,
    /// Namespaces whose labels match the selector.
    Selector(Value),
}

/// The parts of a Gateway the compiler reads.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayView {
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// GatewayConfig named by the `aigateway.envoyproxy.io/gateway-config` annotation.
    pub gateway_config: Option<String>,
}

/// A ReferenceGrant.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceGrantView {
    /// `(group, kind, namespace)` allowed to refer.
    pub from: Vec<(String, String, String)>,
    /// `(group, kind, name)` that may be referred to; no name: any.
    pub to: Vec<(String, String, Option<String>)>,
}

/// A Secret: its keys, never its values.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretView {
    /// Keys under `data` and `stringData`.
    pub keys: BTreeSet<String>,
}

/// What the compiler knows about an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// AIGatewayRoute.
    Route(Box<model::AiGatewayRoute>),
    /// AIServiceBackend.
    ServiceBackend(Box<model::AiServiceBackend>),
    /// BackendSecurityPolicy.
    SecurityPolicy(Box<model::BackendSecurityPolicy>),
    /// GatewayConfig.
    GatewayConfig(Box<model::GatewayConfig>),
    /// QuotaPolicy.
    QuotaPolicy(Box<model::QuotaPolicy>),
    /// Gateway (passed through).
    Gateway(GatewayView),
    /// ReferenceGrant (passed through).
    ReferenceGrant(ReferenceGrantView),
    /// Secret (passed through only on request).
    Secret(SecretView),
    /// Namespace (passed through); its labels.
    Namespace(BTreeMap<String, String>),
    /// Envoy Gateway EnvoyExtensionPolicy: merged when it targets generated routes.
    ExtensionPolicy,
    /// Anything else: passed through.
    Other,
}

/// A validated object and the document it came from.
#[derive(Debug, Clone)]
pub struct Object {
    /// Index into [`Validated::documents`].
    pub doc: usize,
    /// Identity.
    pub id: ObjectId,
    /// Typed content.
    pub body: Body,
}

/// Output of the stage.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Documents, with namespaces defaulted and nulls removed.
    pub documents: Vec<Document>,
    /// One object per valid document, in input order.
    pub objects: Vec<Object>,
    /// Objects that exist in the input but failed validation (their errors are reported);
    /// references to them are not reported again as dangling.
    pub rejected: BTreeSet<ObjectId>,
}

impl Validated {
    /// The document an object came from.
    pub fn document(&self, object: &Object) -> &Document {
        &self.documents[object.doc]
    }

    /// The objects of one group and kind, each with its document's value.
    pub fn objects_of<'v>(
        &'v self,
        group: &'v str,
        kind: &'v str,
    ) -> impl Iterator<Item = (&'v Object, &'v Value)> {
        self.objects
            .iter()
            .filter(move |o| o.id.group == group && o.id.kind == kind)
            .map(|o| (o, &self.document(o).value))
    }

    /// A diagnostic located at `field` of `object`.
    pub fn error_at(
        &self,
        object: &Object,
        field: FieldPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        let doc = self.document(object);
        Diagnostic::error(message)
            .at(Some(doc.location(&field)))
            .object(object.id.to_string())
            .field(field)
    }

    /// Drops the parsed content of the AI Gateway objects once the plan holds what they say:
    /// their documents keep their text (diagnostics still find lines), not their values.
    pub fn release_planned(&mut self) {
        for object in &mut self.objects {
            let planned = matches!(
                object.body,
                Body::Route(_)
                    | Body::ServiceBackend(_)
                    | Body::SecurityPolicy(_)
                    | Body::GatewayConfig(_)
                    | Body::QuotaPolicy(_)
            );
            if planned {
                object.body = Body::Other;
                if let Some(document) = self.documents.get_mut(object.doc) {
                    document.value = Value::Null;
                }
            }
        }
    }

    /// A warning located at `field` of `object`.
    pub fn warning_at(
        &self,
        object: &Object,
        field: FieldPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        let mut diag = self.error_at(object, field, message);
        diag.severity = crate::diag::Severity::Warning;
        diag
    }
}

/// Kinds that have no namespace (the ones a GitOps repository can plausibly hold).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("apiregistration.k8s.io", "APIService"),
];

/// A Secret encrypted with SOPS: its top-level `sops` metadata block. It is passed through byte
/// for byte (re-serialised, its MAC would no longer match).
pub fn is_sops_encrypted(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some("Secret")
        && value.get("sops").is_some_and(Value::is_object)
}

/// Splits `apiVersion` into group and version.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Options of the stage.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// Namespace given to namespaced objects that have none.
    pub default_namespace: String,
}

/// Validates every document; returns the objects and every diagnostic found.
pub fn validate(
    mut documents: Vec<Document>,
    options: &ValidateOptions,
) -> (Validated, Vec<Diagnostic>) {
    let mut gathered = Gathered::default();
    gathered.add(classify_all(&mut documents, options), 0);
    gathered.finish(documents)
}

/// Parses and validates every source, each file's documents checked as soon as they are
/// parsed: the same result as [`crate::load::parse_sources`] then [`validate`], without every
/// document's parsed tree existing at once (a validated AI Gateway document keeps only its
/// metadata, and a large input's memory is mostly those trees).
pub fn validate_sources(
    sources: &[crate::load::Source],
    options: &ValidateOptions,
) -> (Validated, Vec<Diagnostic>) {
    let per_file =
        crate::parallel::map(sources, |source| match crate::load::parse_source(source) {
            Ok(mut documents) => {
                let results = classify_all(&mut documents, options);
                (documents, results, None)
            }
            Err(diag) => (Vec::new(), Vec::new(), Some(diag)),
        });
    let mut documents = Vec::new();
    let mut gathered = Gathered::default();
    for (mut file_documents, results, parse_error) in per_file {
        gathered.diagnostics.extend(parse_error);
        gathered.add(results, documents.len());
        documents.append(&mut file_documents);
    }
    gathered.finish(documents)
}

/// Classifies documents on every core; results in document order, indices local to `documents`.
fn classify_all(
    documents: &mut [Document],
    options: &ValidateOptions,
) -> Vec<Result<Classified, Diagnostic>> {
    crate::parallel::map_mut(documents, |index, doc| {
        schema::drop_nulls(&mut doc.value);
        classify(index, doc, options)
    })
}

/// What classifying documents found, gathered in document order.
#[derive(Default)]
struct Gathered {
    diagnostics: Vec<Diagnostic>,
    objects: Vec<Object>,
    rejected: BTreeSet<ObjectId>,
}

impl Gathered {
    /// Adds the results of documents whose first one is document `offset` of the whole input.
    fn add(&mut self, results: Vec<Result<Classified, Diagnostic>>, offset: usize) {
        for result in results {
            match result {
                Ok((object, mut found, rejected_id)) => {
                    self.diagnostics.append(&mut found);
                    self.objects.extend(object.map(|mut o| {
                        o.doc += offset;
                        o
                    }));
                    self.rejected.extend(rejected_id);
                }
                Err(diag) => self.diagnostics.push(diag),
            }
        }
    }

    /// The stage's output over `documents`, with the checks across objects.
    fn finish(mut self, documents: Vec<Document>) -> (Validated, Vec<Diagnostic>) {
        let validated = Validated {
            documents,
            objects: self.objects,
            rejected: self.rejected,
        };
        self.diagnostics.extend(duplicates(&validated));
        (validated, self.diagnostics)
    }
}

fn duplicates(validated: &Validated) -> Vec<Diagnostic> {
    let mut seen: BTreeMap<&ObjectId, &Object> = BTreeMap::new();
    let mut out = Vec::new();
    for object in &validated.objects {
        if let Some(first) = seen.insert(&object.id, object) {
            let first_location = validated.document(first).location(&FieldPath::root());
            out.push(
                validated
                    .error_at(
                        object,
                        FieldPath::root(),
                        format!(
                            "duplicate object: {} is also defined at {}:{}",
                            object.id, first_location.file, first_location.line
                        ),
                    )
                    .kind(DiagnosticKind::DuplicateObject),
            );
        }
    }
    out
}

/// The object (when valid), the diagnostics, and the identity of an object that was rejected.
type Classified = (Option<Object>, Vec<Diagnostic>, Option<ObjectId>);

fn classify(
    index: usize,
    doc: &mut Document,
    options: &ValidateOptions,
) -> Result<Classified, Diagnostic> {
    let (id, version) = identify(doc, options)?;
    let group = id.group.clone();
    let kind = id.kind.clone();
    let object_error =
        |field: FieldPath, message: String| -> Diagnostic { error_at(doc, &id, field, message) };
    // Names the API server would refuse: the object is reported and treated as present, so
    // references to it are not reported again.
    let mut name_errors = Vec::new();
    if let Err(message) = names::check(names::rule_for(&group, &kind), &id.name) {
        name_errors.push(object_error(FieldPath::parse("metadata.name"), message));
    }
    if !id.namespace.is_empty()
        && let Err(message) = names::check(names::NameRule::Label, &id.namespace)
    {
        name_errors.push(object_error(
            FieldPath::parse("metadata.namespace"),
            format!("namespace {message}"),
        ));
    }
    if !name_errors.is_empty() {
        return Ok((None, name_errors, Some(id)));
    }

    if group == AIGW_GROUP {
        return classify_ai(index, doc, id, &version);
    }
    let body = match (group.as_str(), kind.as_str()) {
        (GATEWAY_GROUP, "Gateway") => {
            Body::Gateway(gateway_view(&doc.value).map_err(|(p, m)| object_error(p, m))?)
        }
        (GATEWAY_GROUP, "ReferenceGrant") => Body::ReferenceGrant(
            reference_grant_view(&doc.value).map_err(|(p, m)| object_error(p, m))?,
        ),
        ("", "Secret") => Body::Secret(secret_view(&doc.value)),
        ("", "Namespace") => Body::Namespace(string_map(doc.value.pointer("/metadata/labels"))),
        (EG_GROUP, "EnvoyExtensionPolicy") => Body::ExtensionPolicy,
        _ => Body::Other,
    };
    Ok((
        Some(Object {
            doc: index,
            id,
            body,
        }),
        Vec::new(),
        None,
    ))
}

/// The identity of a document (its namespace defaulted, and written into it when missing) and
/// its API version.
fn identify(
    doc: &mut Document,
    options: &ValidateOptions,
) -> Result<(ObjectId, String), Diagnostic> {
    let locate = |doc: &Document, field: &str| Some(doc.location(&FieldPath::parse(field)));
    let text = |pointer: &str| doc.value.pointer(pointer).and_then(Value::as_str);
    let api_version = text("/apiVersion").map(str::to_string);
    let kind = text("/kind").map(str::to_string);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Err(
            Diagnostic::error("every document needs string fields apiVersion and kind")
                .at(locate(doc, "")),
        );
    };
    let name = text("/metadata/name").unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(
            Diagnostic::error(format!("{kind}: metadata.name is required"))
                .at(locate(doc, "metadata"))
                .field(FieldPath::parse("metadata.name")),
        );
    }
    let (group, version) = split_api_version(&api_version);
    let (group, version) = (group.to_string(), version.to_string());
    let cluster_scoped = CLUSTER_SCOPED
        .iter()
        .any(|(g, k)| *g == group && *k == kind);
    let namespace = if cluster_scoped {
        String::new()
    } else {
        match text("/metadata/namespace").map(str::to_string) {
            Some(ns) => ns,
            None => {
                if let Some(meta) = doc.value.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert(
                        "namespace".into(),
                        Value::String(options.default_namespace.clone()),
                    );
                }
                options.default_namespace.clone()
            }
        }
    };
    let id = ObjectId {
        group: group.clone(),
        kind: kind.clone(),
        namespace,
        name,
    };
    Ok((id, version))
}

/// An error about `field` of the object `id` of `doc`.
fn error_at(doc: &Document, id: &ObjectId, field: FieldPath, message: String) -> Diagnostic {
    Diagnostic::error(message)
        .at(Some(doc.location(&field)))
        .object(id.to_string())
        .field(field)
}

/// An AI Gateway object: its kind and version checked, its schema and CEL rules applied, and
/// (when nothing is violated) its typed body.
fn classify_ai(
    index: usize,
    doc: &mut Document,
    id: ObjectId,
    version: &str,
) -> Result<Classified, Diagnostic> {
    let kind = id.kind.clone();
    let object_error =
        |field: FieldPath, message: String| -> Diagnostic { error_at(doc, &id, field, message) };
    if kind == "MCPRoute" {
        return Err(object_error(
            FieldPath::root(),
            "MCPRoute is not yet supported by aigw; remove it from the input or serve it with the upstream controller".into(),
        ));
    }
    let Some(ai_kind) = AiKind::from_name(&kind) else {
        return Err(object_error(
            FieldPath::parse("kind"),
            format!("unknown kind {kind} in {AIGW_GROUP}"),
        ));
    };
    let rule_version = match (ai_kind, version) {
        (AiKind::QuotaPolicy, "v1alpha1") => rules::Version::V1Alpha1,
        (AiKind::QuotaPolicy, _) => {
            return Err(object_error(
                FieldPath::parse("apiVersion"),
                format!("QuotaPolicy is served only as {AIGW_GROUP}/v1alpha1, not {version}"),
            ));
        }
        (_, "v1beta1") => rules::Version::V1Beta1,
        (_, "v1alpha1") => rules::Version::V1Alpha1,
        _ => {
            return Err(object_error(
                FieldPath::parse("apiVersion"),
                format!("{kind} is served as {AIGW_GROUP}/v1beta1 and v1alpha1, not {version}"),
            ));
        }
    };
    let mut found = Vec::new();
    if rule_version == rules::Version::V1Alpha1 && ai_kind != AiKind::QuotaPolicy {
        let mut warning = object_error(
            FieldPath::parse("apiVersion"),
            format!("{AIGW_GROUP}/v1alpha1 is deprecated; use {AIGW_GROUP}/v1beta1 instead"),
        );
        warning.severity = crate::diag::Severity::Warning;
        found.push(warning);
    }
    // Schema and rule violations are reported together, as the API server does; rules run
    // whenever the document still decodes.
    let mut violations = schema::check(ai_kind, &doc.value);
    let structural_ok = violations.is_empty();
    let typed = match typed_body(ai_kind, &doc.value) {
        Ok(typed) => {
            violations.extend(match &typed {
                Body::Route(r) => rules::route(&r.spec),
                Body::ServiceBackend(b) => rules::service_backend(&b.spec),
                Body::SecurityPolicy(p) => rules::security_policy(&p.spec, rule_version),
                Body::GatewayConfig(c) => rules::gateway_config(&c.spec),
                Body::QuotaPolicy(q) => rules::quota_policy(&q.spec),
                _ => Vec::new(),
            });
            Some(typed)
        }
        Err((path, message)) => {
            if structural_ok {
                violations.push(schema::Violation { path, message });
            }
            None
        }
    };
    violations.sort_by(|a, b| (&a.path, &a.message).cmp(&(&b.path, &b.message)));
    violations.dedup();
    if let (Some(typed), true) = (typed, violations.is_empty()) {
        // The typed body holds what the later stages read; of the parsed document only the
        // identity and metadata are kept (a large input's memory is mostly these trees).
        keep_metadata(&mut doc.value);
        return Ok((
            Some(Object {
                doc: index,
                id,
                body: typed,
            }),
            found,
            None,
        ));
    }
    found.extend(
        violations
            .into_iter()
            .map(|v| object_error(v.path, v.message)),
    );
    Ok((None, found, Some(id)))
}

/// Reduces a document to `apiVersion`, `kind` and `metadata`.
fn keep_metadata(value: &mut Value) {
    if let Some(fields) = value.as_object_mut() {
        fields.retain(|key, _| matches!(key.as_str(), "apiVersion" | "kind" | "metadata"));
    }
}

fn typed_body(kind: AiKind, value: &Value) -> Result<Body, (FieldPath, String)> {
    fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, (FieldPath, String)> {
        // The plain decoder is fast; the path-tracking one runs only to explain a failure.
        if let Ok(typed) = T::deserialize(value) {
            return Ok(typed);
        }
        serde_path_to_error::deserialize(value).map_err(|err| {
            let path = FieldPath::parse(&err.path().to_string());
            (path, err.into_inner().to_string())
        })
    }
    Ok(match kind {
        AiKind::Route => Body::Route(Box::new(decode(value)?)),
        AiKind::ServiceBackend => Body::ServiceBackend(Box::new(decode(value)?)),
        AiKind::SecurityPolicy => Body::SecurityPolicy(Box::new(decode(value)?)),
        AiKind::GatewayConfig => Body::GatewayConfig(Box::new(decode(value)?)),
        AiKind::QuotaPolicy => Body::QuotaPolicy(Box::new(decode(value)?)),
    })
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn gateway_view(value: &Value) -> Result<GatewayView, (FieldPath, String)> {
    let listeners_path = FieldPath::parse("spec.listeners");
    let Some(listeners) = value.pointer("/spec/listeners").and_then(Value::as_array) else {
        return Err((listeners_path, "a Gateway needs spec.listeners".into()));
    };
    let mut out = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        let path = listeners_path.index(i);
        let text = |key: &str| {
            listener
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let Some(name) = text("name") else {
            return Err((path.key("name"), "required field is missing".into()));
        };
        let Some(port) = listener.get("port").and_then(Value::as_i64) else {
            return Err((path.key("port"), "required integer field is missing".into()));
        };
        let Some(protocol) = text("protocol") else {
            return Err((path.key("protocol"), "required field is missing".into()));
        };
        let namespaces = listener.pointer("/allowedRoutes/namespaces");
        let allowed_from = match namespaces
            .and_then(|n| n.get("from"))
            .and_then(Value::as_str)
        {
            None | Some("Same") => AllowedFrom::Same,
            Some("All") => AllowedFrom::All,
            Some("Selector") => AllowedFrom::Selector(
                namespaces
                    .and_then(|n| n.get("selector"))
                    .cloned()
                    .unwrap_or(Value::Null),
            ),
            Some(other) => {
                return Err((
                    path.key("allowedRoutes").key("namespaces").key("from"),
                    format!("unsupported value {other:?}: must be one of All, Same, Selector"),
                ));
            }
        };
        let allowed_kinds = listener
            .pointer("/allowedRoutes/kinds")
            .and_then(Value::as_array)
            .map(|kinds| {
                kinds
                    .iter()
                    .map(|k| {
                        let field = |key: &str| k.get(key).and_then(Value::as_str);
                        let group = field("group").unwrap_or(GATEWAY_GROUP).to_string();
                        (group, field("kind").unwrap_or_default().to_string())
                    })
                    .collect()
            });
        out.push(Listener {
            name,
            hostname: text("hostname"),
            port,
            protocol,
            allowed_from,
            allowed_kinds,
        });
    }
    let gateway_config = value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("aigateway.envoyproxy.io/gateway-config"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(GatewayView {
        listeners: out,
        gateway_config,
    })
}

fn reference_grant_view(value: &Value) -> Result<ReferenceGrantView, (FieldPath, String)> {
    let list = |key: &str| {
        value
            .pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let mut from = Vec::new();
    for (i, entry) in list("from").iter().enumerate() {
        let (Some(group), Some(kind), Some(namespace)) = (
            text(entry, "group"),
            text(entry, "kind"),
            text(entry, "namespace"),
        ) else {
            return Err((
                FieldPath::parse("spec.from").index(i),
                "group, kind and namespace are required".into(),
            ));
        };
        from.push((group, kind, namespace));
    }
    let mut to = Vec::new();
    for (i, entry) in list("to").iter().enumerate() {
        let (Some(group), Some(kind)) = (text(entry, "group"), text(entry, "kind")) else {
            return Err((
                FieldPath::parse("spec.to").index(i),
                "group and kind are required".into(),
            ));
        };
        to.push((group, kind, text(entry, "name")));
    }
    Ok(ReferenceGrantView { from, to })
}

fn secret_view(value: &Value) -> SecretView {
    let mut keys = BTreeSet::new();
    for field in ["data", "stringData"] {
        if let Some(map) = value.get(field).and_then(Value::as_object) {
            keys.extend(map.keys().cloned());
        }
    }
    SecretView { keys }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Source, parse_sources};

    fn run(text: &str) -> (Validated, Vec<String>) {
        let (docs, diags) = parse_sources(&[Source {
            name: "in.yaml".into(),
            text: text.into(),
        }]);
        assert!(diags.is_empty());
        let (validated, diags) = validate(
            docs,
            &ValidateOptions {
                default_namespace: "default".into(),
            },
        );
        (validated, diags.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn namespaces_are_defaulted_except_for_cluster_scoped_kinds() {
        let (v, diags) = run(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(v.objects[0].id.namespace, "default");
        assert_eq!(v.documents[0].value["metadata"]["namespace"], "default");
        assert_eq!(v.objects[1].id.namespace, "");
    }

    #[test]
    fn duplicates_name_both_places() {
        let (_, diags) = run(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\n",
        );
        assert_eq!(
            diags,
            vec![
                "error: in.yaml:5: ConfigMap default/a: duplicate object: ConfigMap default/a is also defined at in.yaml:1"
            ]
        );
    }

    #[test]
    fn schema_errors_carry_file_line_object_and_field() {
        let (_, diags) = run(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata:\n  name: b\nspec:\n  schema:\n    name: OpenAl\n  backendRef:\n    name: x\n    kind: Backend\n    group: gateway.envoyproxy.io\n",
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(diags[0].starts_with("error: in.yaml:7: AIServiceBackend default/b: spec.schema.name: unsupported value \"OpenAl\""), "{}", diags[0]);
    }

    #[test]
    fn validating_as_parsed_gives_what_parsing_then_validating_gives() {
        let sources = vec![
            Source {
                name: "a.yaml".into(),
                text: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\nspec:\n  schema: {name: OpenAl}\n  backendRef: {name: x, kind: Backend, group: gateway.envoyproxy.io}\n".into(),
            },
            Source {
                name: "bad.yaml".into(),
                text: "kind: [\n".into(),
            },
            Source {
                name: "c.yaml".into(),
                text: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: ok}\nspec:\n  schema: {name: OpenAI}\n  backendRef: {name: x, kind: Backend, group: gateway.envoyproxy.io}\n".into(),
            },
        ];
        let options = ValidateOptions {
            default_namespace: "default".into(),
        };
        let (docs, mut first) = parse_sources(&sources);
        let (one, found) = validate(docs, &options);
        first.extend(found);
        let (two, mut second) = validate_sources(&sources, &options);
        crate::diag::normalize(&mut first);
        crate::diag::normalize(&mut second);
        assert_eq!(first, second);
        assert!(
            second
                .iter()
                .any(|d| d.to_string().contains("duplicate object")
                    && d.kind == crate::diag::DiagnosticKind::DuplicateObject)
        );
        let ids = |v: &Validated| {
            v.objects
                .iter()
                .map(|o| (o.doc, o.id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&one), ids(&two));
        // Each object points at its own document.
        for object in &two.objects {
            assert_eq!(
                two.documents[object.doc].value["metadata"]["name"],
                object.id.name.as_str()
            );
        }
    }

    #[test]
    fn kinds_not_served_as_v1beta1_are_rejected_clearly() {
        for (kind, expected) in [
            ("MCPRoute", "MCPRoute is not yet supported"),
            (
                "QuotaPolicy",
                "served only as aigateway.envoyproxy.io/v1alpha1",
            ),
        ] {
            let (_, diags) = run(&format!(
                "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: {kind}\nmetadata: {{name: m}}\nspec: {{}}\n"
            ));
            assert!(diags[0].contains(expected), "{kind}: {diags:?}");
        }
    }
}
