//! Backend auth: the BackendSecurityPolicy of an AIServiceBackend as filter-config auth, its
//! Secrets checked for mountability by the Gateway's extproc and recorded as mounts.

use std::collections::{BTreeMap, BTreeSet};

use aigw_filterconfig::{self as fc, BackendAuth, Credential, CredentialOverride};

use super::{MountedSecret, Planner, SECRETS_ROOT, bounded_name, dns_label};
use crate::diag::FieldPath;
use crate::model::{self, BackendSecurityPolicy, SecurityPolicyType};
use crate::resolve::Key;
use crate::validate::{Body, ObjectId};

/// Builds the filter-config auth of a policy; `files` maps each secretRef field to its file.
fn build_auth(policy: &BackendSecurityPolicy, files: &BTreeMap<FieldPath, String>) -> BackendAuth {
    BackendAuth {
        credential: credential(&policy.spec, files),
        credential_override: credential_override(&policy.spec),
    }
}

/// The OIDC settings at `path` of a policy, its Secrets as the files they are mounted at.
fn oidc_exchange(
    o: &model::Oidc,
    path: &str,
    grant_type: &Option<String>,
    aud: &Option<String>,
    files: &BTreeMap<FieldPath, String>,
) -> fc::OidcExchange {
    fc::OidcExchange {
        issuer: o.provider.issuer.clone(),
        token_endpoint: o.provider.token_endpoint.clone(),
        client_id: o.client_id.clone().unwrap_or_else(|| {
            files
                .get(&FieldPath::parse(&format!("{path}.clientIDRef")))
                .map(|f| format!("file:{f}"))
                .unwrap_or_default()
        }),
        client_secret_file: files
            .get(&FieldPath::parse(&format!("{path}.clientSecret")))
            .cloned()
            .unwrap_or_default(),
        scopes: o.scopes.clone(),
        grant_type: grant_type.clone(),
        aud: aud.clone(),
    }
}

/// The credential of a policy, each Secret it names as the file it is mounted at.
fn credential(
    spec: &model::BackendSecurityPolicySpec,
    files: &BTreeMap<FieldPath, String>,
) -> Credential {
    let file = |path: &str| {
        files
            .get(&FieldPath::parse(path))
            .cloned()
            .unwrap_or_default()
    };
    let oidc = |o: &model::Oidc, path: &str, grant_type: &Option<String>, aud: &Option<String>| {
        oidc_exchange(o, path, grant_type, aud, files)
    };
    match spec.policy_type {
        SecurityPolicyType::ApiKey => Credential::ApiKey {
            key_file: file("spec.apiKey.secretRef"),
        },
        SecurityPolicyType::AzureApiKey => Credential::AzureApiKey {
            key_file: file("spec.azureAPIKey.secretRef"),
        },
        SecurityPolicyType::AnthropicApiKey => Credential::AnthropicApiKey {
            key_file: file("spec.anthropicAPIKey.secretRef"),
        },
        SecurityPolicyType::AwsCredentials => {
            let aws = spec.aws_credentials.as_ref();
            Credential::Aws {
                region: aws.map(|a| a.region.clone()).unwrap_or_default(),
                credentials_file: aws
                    .and_then(|a| a.credentials_file.as_ref())
                    .map(|_| file("spec.awsCredentials.credentialsFile.secretRef")),
                profile: aws
                    .and_then(|a| a.credentials_file.as_ref())
                    .map(|f| f.profile.clone()),
                oidc_exchange: aws.and_then(|a| a.oidc_exchange_token.as_ref()).map(|e| {
                    fc::AwsOidcExchange {
                        oidc: oidc(
                            &e.oidc,
                            "spec.awsCredentials.oidcExchangeToken.oidc",
                            &e.grant_type,
                            &e.aud,
                        ),
                        aws_role_arn: e.aws_role_arn.clone(),
                    }
                }),
            }
        }
        SecurityPolicyType::AzureCredentials => {
            let azure = spec.azure_credentials.as_ref();
            Credential::Azure {
                client_id: azure.map(|a| a.client_id.clone()).unwrap_or_default(),
                tenant_id: azure.map(|a| a.tenant_id.clone()).unwrap_or_default(),
                client_secret_file: azure
                    .and_then(|a| a.client_secret_ref.as_ref())
                    .map(|_| file("spec.azureCredentials.clientSecretRef")),
                oidc_exchange: azure.and_then(|a| a.oidc_exchange_token.as_ref()).map(|e| {
                    oidc(
                        &e.oidc,
                        "spec.azureCredentials.oidcExchangeToken.oidc",
                        &e.grant_type,
                        &e.aud,
                    )
                }),
            }
        }
        SecurityPolicyType::GcpCredentials => {
            let gcp = spec.gcp_credentials.as_ref();
            Credential::Gcp {
                project_name: gcp.map(|g| g.project_name.clone()).unwrap_or_default(),
                region: gcp.map(|g| g.region.clone()).unwrap_or_default(),
                credentials_file: gcp.and_then(|g| g.credentials_file.as_ref()).map(|_| file("spec.gcpCredentials.credentialsFile.secretRef")),
                workload_identity_federation: gcp.and_then(|g| g.workload_identity_federation_config.as_ref()).map(|w| {
                    fc::GcpWorkloadIdentityFederation {
                        project_id: w.project_id.clone(),
                        workload_identity_pool_name: w.workload_identity_pool_name.clone(),
                        workload_identity_provider_name: w.workload_identity_provider_name.clone(),
                        service_account_name: w.service_account_impersonation.as_ref().map(|s| s.service_account_name.clone()),
                        oidc: oidc(
                            &w.oidc_exchange_token.oidc,
                            "spec.gcpCredentials.workloadIdentityFederationConfig.oidcExchangeToken.oidc",
                            &w.oidc_exchange_token.grant_type,
                            &w.oidc_exchange_token.aud,
                        ),
                    }
                }),
            }
        }
    }
}

/// Where a client's own credential comes from (`credentialOverride`), with upstream's default
/// header or metadata key for the policy type.
fn credential_override(spec: &model::BackendSecurityPolicySpec) -> Option<CredentialOverride> {
    let default_header = match spec.policy_type {
        SecurityPolicyType::ApiKey => "x-aigw-api-key",
        SecurityPolicyType::AnthropicApiKey => "x-aigw-anthropic-api-key",
        SecurityPolicyType::AzureApiKey => "x-aigw-azure-api-key",
        SecurityPolicyType::AzureCredentials => "x-aigw-azure-access-token",
        SecurityPolicyType::GcpCredentials => "x-aigw-gcp-access-token",
        SecurityPolicyType::AwsCredentials => "x-aigw-aws-",
    };
    spec.credential_override.as_ref().map(|o| {
        match (&o.from_request_headers, &o.from_dynamic_metadata) {
            (Some(headers), _) => CredentialOverride {
                header_name: Some(
                    headers
                        .header
                        .clone()
                        .unwrap_or_else(|| default_header.into())
                        .to_ascii_lowercase(),
                ),
                metadata_namespace: None,
                metadata_key: None,
                fallback_to_configured: headers.fallback_to_configured,
            },
            (None, Some(metadata)) => CredentialOverride {
                header_name: None,
                metadata_namespace: Some(metadata.namespace.clone()),
                metadata_key: Some(metadata.key.clone().unwrap_or_else(|| {
                    if spec.policy_type == SecurityPolicyType::AwsCredentials {
                        "x-aigw-aws-credentials".into()
                    } else {
                        default_header.into()
                    }
                })),
                fallback_to_configured: metadata.fallback_to_configured,
            },
            (None, None) => CredentialOverride {
                header_name: None,
                metadata_namespace: None,
                metadata_key: None,
                fallback_to_configured: true,
            },
        }
    })
}

/// The mount of one Secret.
pub fn mounted_secret(secret: &str) -> MountedSecret {
    MountedSecret {
        secret: secret.to_string(),
        volume: bounded_name(&format!("secret-{}", dns_label(secret)), 63),
        mount_path: format!("{SECRETS_ROOT}/{secret}"),
    }
}

impl Planner<'_> {
    /// The auth of the AIServiceBackend `key`, with its Secrets checked for mountability and
    /// recorded as mounts.
    pub(super) fn auth(
        &mut self,
        key: &Key,
        gateway: &ObjectId,
        secrets: &mut BTreeSet<MountedSecret>,
    ) -> Option<BackendAuth> {
        let policy_index = *self.resolved.security_policy_of.get(key)?;
        let object = self.object(policy_index).clone();
        let Body::SecurityPolicy(policy) = &object.body else {
            return None;
        };
        let namespaces = self
            .gateway_namespaces
            .get(key)
            .cloned()
            .unwrap_or_default();
        let needs_secret = self
            .resolved
            .secrets_of_policy
            .get(&policy_index)
            .is_some_and(|u| !u.is_empty());
        if needs_secret && namespaces.len() > 1 {
            if self.reported_policies.insert(policy_index) {
                let list: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                self.diags.push(self.input.error_at(
                    &object,
                    FieldPath::parse("spec"),
                    format!(
                        "AIServiceBackend {}/{} is used through Gateways in namespaces {}, but an extproc can only mount Secrets of its own namespace, so one Secret cannot serve them all; use one AIServiceBackend (with its own BackendSecurityPolicy and Secret) per Gateway namespace",
                        key.0,
                        key.1,
                        list.join(", ")
                    ),
                ));
            }
            return None;
        }
        let uses = self
            .resolved
            .secrets_of_policy
            .get(&policy_index)
            .cloned()
            .unwrap_or_default();
        let mut file_of = BTreeMap::new();
        for secret in &uses {
            if secret.namespace != gateway.namespace {
                self.diags.push(self.input.error_at(
                    &object,
                    secret.field.clone(),
                    format!(
                        "Secret {}/{} cannot be mounted by the extproc of Gateway {}/{}, which runs in namespace {:?}; create the Secret in {:?} and set secretRef.namespace: {}{}",
                        secret.namespace,
                        secret.name,
                        gateway.namespace,
                        gateway.name,
                        gateway.namespace,
                        gateway.namespace,
                        gateway.namespace,
                        if object.id.namespace != gateway.namespace {
                            format!(
                                ", with a ReferenceGrant in {:?} from aigateway.envoyproxy.io/BackendSecurityPolicy in {:?} to Secret",
                                gateway.namespace, object.id.namespace
                            )
                        } else {
                            String::new()
                        }
                    ),
                ));
                continue;
            }
            let mount = mounted_secret(&secret.name);
            file_of.insert(
                secret.field.clone(),
                format!("{}/{}", mount.mount_path, secret.key),
            );
            secrets.insert(mount);
        }
        Some(build_auth(policy, &file_of))
    }
}
