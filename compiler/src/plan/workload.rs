//! The extproc's workload: image, replicas, resources, security context and ServiceAccount
//! annotations, from GatewayConfig and the command line.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Planner, SERVICE_ACCOUNT_ANNOTATIONS, Workload};
use crate::diag::FieldPath;
use crate::model::GatewayConfig;
use crate::validate::Object;

pub(super) fn default_tag(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let tag = last
        .split_once(':')
        .map(|(_, t)| format!(":{t}"))
        .unwrap_or_default();
    let digest = image
        .split_once('@')
        .map(|(_, d)| format!("@{d}"))
        .unwrap_or_default();
    format!("{tag}{digest}")
}

fn default_resources() -> Value {
    serde_json::json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}})
}

fn default_security_context() -> Value {
    serde_json::json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsGroup": 65532,
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

impl Planner<'_> {
    pub(super) fn workload(
        &mut self,
        config_object: Option<&Object>,
        config: Option<&GatewayConfig>,
    ) -> Workload {
        let k8s = config
            .and_then(|c| c.spec.ext_proc.as_ref())
            .and_then(|e| e.kubernetes.clone())
            .unwrap_or_default();
        let image = match (&k8s.image, &k8s.image_repository) {
            (Some(image), _) => image.clone(),
            (None, Some(repository)) => {
                let tag = default_tag(&self.options.extproc_image);
                format!("{repository}{tag}")
            }
            (None, None) => self.options.extproc_image.clone(),
        };
        let mut service_account_annotations = BTreeMap::new();
        if let Some(object) = config_object {
            let doc = self.input.document(object);
            if let Some(text) = doc
                .value
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(SERVICE_ACCOUNT_ANNOTATIONS))
                .and_then(Value::as_str)
            {
                match serde_saphyr::from_str::<BTreeMap<String, String>>(text) {
                    Ok(map) => service_account_annotations = map,
                    Err(err) => self.diags.push(self.input.error_at(
                        object,
                        FieldPath::parse("metadata.annotations"),
                        format!(
                            "annotation {SERVICE_ACCOUNT_ANNOTATIONS} must be a YAML or JSON map of strings: {}",
                            err.to_string().lines().next().unwrap_or_default()
                        ),
                    )),
                }
            }
        }
        Workload {
            image,
            replicas: self.options.replicas,
            env: k8s.env,
            resources: k8s.resources.unwrap_or_else(default_resources),
            security_context: k8s
                .security_context
                .unwrap_or_else(default_security_context),
            volume_mounts: k8s.volume_mounts,
            service_account_annotations,
        }
    }
}
