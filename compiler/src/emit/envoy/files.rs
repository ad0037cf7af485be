//! The extproc's files: its filter config with credential paths relative to the Gateway's folder,
//! and the Secret data it reads, written key by key.

use std::collections::BTreeMap;

use aigw_filterconfig::{Credential, FilterConfig, OidcExchange};
use base64::Engine;
use serde_json::Value;

use super::gateway::GatewayContext;
use super::{Emitter, GatewaySummary, SECRETS_DIR, text};
use crate::diag::{Diagnostic, FieldPath};
use crate::plan::{self, Instance};
use crate::validate::{Body, Object, Validated};
use crate::write::FileEntry;

/// The data of a Secret or ConfigMap document, key by key (`stringData` over `data`, base64
/// decoded for Secrets).
pub(super) fn object_data(
    value: &Value,
    secret: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    if let Some(data) = value.get("data").and_then(Value::as_object) {
        for (key, item) in data {
            let text = item.as_str().unwrap_or_default();
            let bytes = if secret {
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|err| format!("data.{key} is not valid base64: {err}"))?
            } else {
                text.as_bytes().to_vec()
            };
            out.insert(key.clone(), bytes);
        }
    }
    if secret && let Some(data) = value.get("stringData").and_then(Value::as_object) {
        for (key, item) in data {
            out.insert(
                key.clone(),
                item.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
    }
    Ok(out)
}

/// A Secret key as a file name: what Kubernetes allows in a key, less `.` and `..`.
pub(super) fn is_file_name(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The filter config with credential paths relative to the Gateway's folder.
pub(super) fn relocated(config: &FilterConfig) -> FilterConfig {
    fn relocate(path: &mut String) {
        let root = format!("{}/", plan::SECRETS_ROOT);
        if let Some(rest) = path.strip_prefix(&root) {
            *path = format!("{SECRETS_DIR}/{rest}");
        } else if let Some(rest) = path.strip_prefix(&format!("file:{root}")) {
            *path = format!("file:{SECRETS_DIR}/{rest}");
        }
    }
    fn relocate_oidc(oidc: &mut OidcExchange) {
        relocate(&mut oidc.client_secret_file);
        relocate(&mut oidc.client_id);
    }
    let mut config = config.clone();
    for backend in &mut config.backends {
        let Some(auth) = &mut backend.auth else {
            continue;
        };
        match &mut auth.credential {
            Credential::ApiKey { key_file }
            | Credential::AzureApiKey { key_file }
            | Credential::AnthropicApiKey { key_file } => relocate(key_file),
            Credential::Aws {
                credentials_file: file,
                ..
            }
            | Credential::Azure {
                client_secret_file: file,
                ..
            }
            | Credential::Gcp {
                credentials_file: file,
                ..
            } => file.iter_mut().for_each(relocate),
        }
        if let Some(oidc) = auth.credential.oidc_exchange_mut() {
            relocate_oidc(oidc);
        }
    }
    config
}

impl<'a> Emitter<'a> {
    /// The first BackendSecurityPolicy field that references Secret `namespace/name`.
    fn secret_reference(&self, namespace: &str, name: &str) -> Option<(&'a Object, FieldPath)> {
        fn search(
            value: &Value,
            path: &mut Vec<String>,
            name: &str,
            namespace: &str,
            own: &str,
        ) -> bool {
            let Some(map) = value.as_object() else {
                return false;
            };
            for (key, child) in map {
                path.push(key.clone());
                let reference = matches!(
                    key.as_str(),
                    "secretRef" | "clientSecretRef" | "clientSecret" | "clientIDRef"
                ) && text(child, "/name") == Some(name)
                    && text(child, "/namespace").unwrap_or(own) == namespace;
                if reference || search(child, path, name, namespace, own) {
                    return true;
                }
                path.pop();
            }
            false
        }
        let input: &'a Validated = self.input;
        input.objects.iter().find_map(|object| {
            let Body::SecurityPolicy(policy) = &object.body else {
                return None;
            };
            // The typed spec, as written (serde keeps the CRD's field names): the parsed
            // document keeps only its metadata.
            let spec = serde_json::to_value(&policy.spec).ok()?;
            let mut path = vec!["spec".to_string()];
            search(&spec, &mut path, name, namespace, &object.id.namespace)
                .then(|| (object, FieldPath::parse(&path.join("."))))
        })
    }

    /// The extproc's files: its filter config and the Secrets it reads; then the Gateway's
    /// summary.
    pub(super) fn extproc_files(&mut self, gateway: GatewayContext) {
        let instance = gateway.instance;
        let config = relocated(&instance.config);
        match serde_json::to_value(&config) {
            Ok(value) => self.files.push(FileEntry::public(
                format!("{}/{}", gateway.dir, plan::CONFIG_FILE),
                crate::render::yaml(&value),
            )),
            Err(err) => self
                .errors
                .push(gateway.fail(format!("internal error: filter config: {err}"))),
        }
        for mounted in &instance.secrets {
            self.secret_files(instance, &gateway.name, &gateway.dir, &mounted.secret);
        }
        self.gateways.push(GatewaySummary {
            config: format!("{}/{}", gateway.dir, plan::CONFIG_FILE),
            gateway: gateway.name,
            socket: gateway.socket,
            dir: gateway.dir,
        });
    }

    fn secret_files(&mut self, instance: &Instance, gateway: &str, dir: &str, name: &str) {
        let Some(object) = self.find("", "Secret", &instance.namespace, name) else {
            let message = format!(
                "Secret {}/{name} is read by the extproc of Gateway {gateway} but is not in the input; the standalone target takes credentials from the input, so add the Secret to it (and keep that input out of Git)",
                instance.namespace
            );
            let error = match self.secret_reference(&instance.namespace, name) {
                Some((policy, field)) => self.input.error_at(policy, field, message),
                None => Diagnostic::error(message),
            };
            self.errors.push(error);
            return;
        };
        match object_data(self.document(object), true) {
            Ok(data) => {
                for (key, bytes) in data {
                    if !is_file_name(&key) {
                        self.errors.push(self.input.error_at(
                            object,
                            FieldPath::parse("data"),
                            format!("key {key:?} cannot be a file name"),
                        ));
                        continue;
                    }
                    let path = format!("{dir}/{SECRETS_DIR}/{name}/{key}");
                    self.files.push(FileEntry::private(path, bytes));
                }
            }
            Err(err) => {
                self.errors
                    .push(self.input.error_at(object, FieldPath::parse("data"), err));
            }
        }
    }
}
