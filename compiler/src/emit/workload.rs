//! The extproc workload of one instance, rendered from the templates in `templates/` (embedded
//! at build time) and checked against the typed k8s-openapi objects.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::shard::PartFile;
use super::{GENERATED_FROM, MANAGED_BY, lineage, through_typed};
use crate::diag::Diagnostic;
use crate::plan::{self, Instance};

const TEMPLATES: [(&str, &str); 5] = [
    (
        "serviceaccount",
        include_str!("../../../templates/serviceaccount.yaml.j2"),
    ),
    (
        "configmap",
        include_str!("../../../templates/configmap.yaml.j2"),
    ),
    (
        "deployment",
        include_str!("../../../templates/deployment.yaml.j2"),
    ),
    (
        "service",
        include_str!("../../../templates/service.yaml.j2"),
    ),
    (
        "poddisruptionbudget",
        include_str!("../../../templates/poddisruptionbudget.yaml.j2"),
    ),
];

fn environment() -> &'static Result<minijinja::Environment<'static>, String> {
    static ENV: OnceLock<Result<minijinja::Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|err| format!("template {name}: {err}"))?;
        }
        Ok(env)
    })
}

/// The filter config as the YAML text stored in the ConfigMap.
pub fn config_text(instance: &Instance) -> Result<String, String> {
    let value = serde_json::to_value(&instance.config).map_err(|err| err.to_string())?;
    Ok(crate::render::yaml(&value))
}

/// Labels of the extproc's objects; the selector is the last two.
fn labels(instance: &Instance) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "aigw-extproc".to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "extproc".to_string(),
        ),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (
            super::routing::EXTPROC_LABEL.to_string(),
            instance.name.clone(),
        ),
    ])
}

/// Renders the workload objects of `instance`.
pub fn emit(instance: &Instance) -> Result<Vec<Value>, Vec<Diagnostic>> {
    let fail = |message: String| {
        vec![Diagnostic::error(format!(
            "Gateway {}/{}: {message}",
            instance.gateway.namespace, instance.gateway.name
        ))]
    };
    let env = environment()
        .as_ref()
        .map_err(|err| fail(format!("internal error: {err}")))?;
    let files = super::shard::split(&instance.config).map_err(fail)?;
    let config_text = files.root.clone();
    // The root lists every part's checksum: its hash covers the whole set.
    let config_hash = plan::hex(&Sha256::digest(config_text.as_bytes()));
    let labels = labels(instance);
    let selector: BTreeMap<&str, &str> = BTreeMap::from([
        ("app.kubernetes.io/name", "aigw-extproc"),
        (super::routing::EXTPROC_LABEL, instance.name.as_str()),
    ]);
    let annotations = json!({GENERATED_FROM: lineage(&instance.gateway)});
    // Argo CD applies lower waves first: config and identity before the workload that reads them.
    let config_annotations =
        json!({GENERATED_FROM: lineage(&instance.gateway), "argocd.argoproj.io/sync-wave": "-1"});
    let mut service_account_annotations = instance.workload.service_account_annotations.clone();
    service_account_annotations.insert(GENERATED_FROM.into(), lineage(&instance.gateway));
    service_account_annotations.insert("argocd.argoproj.io/sync-wave".into(), "-1".into());
    let context = json!({
        "name": &instance.name,
        "namespace": &instance.namespace,
        "labels": &labels,
        "pod_labels": &labels,
        "selector": &selector,
        "annotations": &annotations,
        "config_annotations": &config_annotations,
        "service_account_annotations": &service_account_annotations,
        "config_file": plan::CONFIG_FILE,
        "config_dir": plan::CONFIG_DIR,
        "config_hash": &config_hash,
        "image": &instance.workload.image,
        "replicas": instance.workload.replicas,
        "env": &instance.workload.env,
        "resources": &instance.workload.resources,
        "security_context": &instance.workload.security_context,
        "extra_volume_mounts": &instance.workload.volume_mounts,
        "secrets": instance.secrets.iter().map(|s| json!({"secret": s.secret, "volume": s.volume, "mount_path": s.mount_path})).collect::<Vec<_>>(),
        "grpc_port": plan::GRPC_PORT,
        "admin_port": plan::ADMIN_PORT,
    });
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (name, _) in TEMPLATES {
        if name == "poddisruptionbudget" && instance.workload.replicas < 2 {
            continue;
        }
        let rendered = env
            .get_template(name)
            .and_then(|template| template.render(minijinja::value::Serde(&context)))
            .map_err(|err| format!("internal error: template {name}: {err:#}"));
        let value = rendered.and_then(|text| {
            serde_saphyr::from_str::<Value>(&text)
                .map_err(|err| format!("internal error: template {name} is not valid YAML: {err}"))
        });
        let typed = value.and_then(|value| match name {
            "serviceaccount" => through_typed::<ServiceAccount>(value, "ServiceAccount"),
            "configmap" => through_typed::<ConfigMap>(value, "ConfigMap"),
            "deployment" => through_typed::<Deployment>(value, "Deployment"),
            "service" => through_typed::<Service>(value, "Service"),
            _ => through_typed::<PodDisruptionBudget>(value, "PodDisruptionBudget"),
        });
        let typed = typed.map(|mut value| {
            if name == "configmap" {
                value["data"][plan::CONFIG_FILE] = Value::String(config_text.clone());
            }
            value
        });
        match typed {
            Ok(value) if name == "configmap" => {
                objects.extend(part_config_maps(instance, &value, &files.parts));
                objects.push(value);
            }
            Ok(mut value) if name == "deployment" && !files.parts.is_empty() => {
                project_parts(instance, &mut value, &files.parts);
                objects.push(value);
            }
            Ok(value) => objects.push(value),
            Err(err) => errors.extend(fail(err)),
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// Name of the ConfigMap holding one part of a sharded filter config.
pub fn part_config_map_name(instance: &Instance, part: &PartFile) -> String {
    plan::bounded_name(&format!("{}-part-{}", instance.name, part.id), 253)
}

/// Key of a part's text in its ConfigMap.
const PART_KEY: &str = "part.yaml";

/// One ConfigMap per part, like the root one (`root`).
fn part_config_maps(instance: &Instance, root: &Value, parts: &[PartFile]) -> Vec<Value> {
    parts
        .iter()
        .map(|part| {
            let mut value = root.clone();
            value["metadata"]["name"] = Value::String(part_config_map_name(instance, part));
            value["data"] = json!({ PART_KEY: part.text });
            value
        })
        .collect()
}

/// Mounts the root ConfigMap and every part ConfigMap as one projected volume, the parts under
/// `parts/`: the kubelet updates it as one, and the extproc checks the parts' checksums anyway.
fn project_parts(instance: &Instance, deployment: &mut Value, parts: &[PartFile]) {
    let mut sources = vec![json!({"configMap": {
        "name": instance.name,
        "items": [{"key": plan::CONFIG_FILE, "path": plan::CONFIG_FILE}],
    }})];
    sources.extend(parts.iter().map(|part| {
        json!({"configMap": {
            "name": part_config_map_name(instance, part),
            "items": [{"key": PART_KEY, "path": part.path}],
        }})
    }));
    let volumes = deployment.pointer_mut("/spec/template/spec/volumes");
    let config = volumes
        .and_then(Value::as_array_mut)
        .and_then(|volumes| volumes.iter_mut().find(|v| v["name"] == "config"));
    if let Some(config) = config {
        *config = json!({
            "name": "config",
            "projected": {"defaultMode": 292, "sources": sources},
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        assert!(environment().is_ok(), "{:?}", environment().as_ref().err());
    }
}
