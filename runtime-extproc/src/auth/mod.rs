//! Backend credentials, applied by the extproc itself with no controller minting tokens:
//! static keys (`Authorization: Bearer`, `api-key`, `x-api-key`), AWS SigV4 ([`aws`]), Entra ID
//! tokens for Azure OpenAI ([`azure`]), GCP OAuth tokens ([`gcp`]), and per-request
//! credentials a client or an earlier filter supplies (`credentialOverride`).
//!
//! Tokens and temporary credentials are fetched in the background and refreshed before they
//! expire ([`refresh`]); the request path only reads them. A backend whose credential is not
//! available yet answers 503 with the reason (never the secret). Every token endpoint can be
//! redirected for tests and private clouds with the variables the providers' own SDKs read:
//! `AWS_ENDPOINT_URL_STS`, `AZURE_AUTHORITY_HOST`, `GCE_METADATA_HOST`, plus
//! `AIGW_GCP_STS_ENDPOINT` and `AIGW_GCP_IAM_CREDENTIALS_ENDPOINT` (GCP has no such variable).

pub mod aws;
pub mod azure;
pub mod gcp;
pub mod http;
pub mod oidc;
pub mod refresh;

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aigw_filterconfig::{BackendAuth, Credential};

use crate::config::Secret;
use refresh::Refreshing;

/// Why a credential could not be applied to a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential is not available (not fetched yet, or its provider is failing): 503.
    #[error("the backend credential is not available: {0}")]
    Unavailable(String),
    /// A per-request credential is required and the request carries none: 401.
    #[error("missing upstream credential")]
    Missing,
    /// The per-request credential is malformed, or signing failed: 500.
    #[error("{0}")]
    Invalid(String),
}

impl AuthError {
    /// The HTTP status the client receives.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Unavailable(_) => 503,
            AuthError::Missing => 401,
            AuthError::Invalid(_) => 500,
        }
    }
}

/// The upstream request being authenticated, after translation and mutations.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamCall<'a> {
    /// `:method`.
    pub method: &'a str,
    /// The `Host` the upstream will receive.
    pub host: &'a str,
    /// `:path`, with the query string.
    pub path: &'a str,
    /// The body as sent.
    pub body: &'a [u8],
    /// The client's request headers (lower-case names), for per-request credentials.
    pub headers: &'a [(String, String)],
}

impl UpstreamCall<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// What to change on the upstream request.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Headers to set (lower-case names); values may be secrets and are never logged.
    pub headers: Vec<(String, String)>,
    /// A new `:path` (GCP prefixes the project and location).
    pub path: Option<String>,
}

impl Applied {
    fn header(name: &str, value: String) -> Applied {
        Applied {
            headers: vec![(name.to_string(), value)],
            path: None,
        }
    }
}

/// How the extproc authenticates to one backend.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A static header (`Authorization: Bearer ...`, `api-key`, `x-api-key`).
    Header {
        /// Header name.
        name: &'static str,
        /// Prefix before the secret (`Bearer `).
        prefix: &'static str,
        /// The secret.
        value: Secret,
    },
    /// An Entra ID access token (`Authorization: Bearer`).
    Bearer(Arc<Refreshing<Secret>>),
    /// A GCP access token; the path is prefixed with the project and location.
    Gcp {
        /// The token.
        token: Arc<Refreshing<Secret>>,
        /// GCP project.
        project: String,
        /// GCP region.
        region: String,
    },
    /// AWS SigV4.
    Aws(Arc<aws::Signer>),
}

/// The per-request credential source of a backend.
#[derive(Debug, Clone)]
pub struct Override {
    /// Request header (AWS: prefix of `access-key-id`, `secret-access-key`, `session-token`).
    pub header: Option<String>,
    /// Use the configured credential when the request carries none.
    pub fallback: bool,
}

/// A backend's credential: configured, per request, or both.
#[derive(Debug, Clone)]
pub struct BackendCredential {
    /// The configured credential.
    pub auth: Auth,
    /// The per-request override.
    pub override_from: Option<Override>,
}

impl BackendCredential {
    /// Client headers that carry a per-request credential and must not reach the provider.
    pub fn override_headers(&self) -> Vec<String> {
        let Some(header) = self.override_from.as_ref().and_then(|o| o.header.as_ref()) else {
            return Vec::new();
        };
        match self.auth {
            Auth::Aws(_) => aws::OVERRIDE_SUFFIXES
                .iter()
                .map(|suffix| format!("{header}{suffix}"))
                .collect(),
            _ => vec![header.clone()],
        }
    }

    /// Authenticates `call`.
    pub fn apply(&self, call: &UpstreamCall<'_>) -> Result<Applied, AuthError> {
        if let Some(over) = &self.override_from {
            if let Some(applied) = self.apply_override(over, call)? {
                return Ok(applied);
            }
            if !over.fallback {
                return Err(AuthError::Missing);
            }
        }
        self.apply_configured(call)
    }

    fn apply_override(
        &self,
        over: &Override,
        call: &UpstreamCall<'_>,
    ) -> Result<Option<Applied>, AuthError> {
        let Some(header) = over.header.as_deref() else {
            return Ok(None);
        };
        Ok(match &self.auth {
            Auth::Aws(signer) => {
                let id = call.header(&format!("{header}access-key-id"));
                let secret = call.header(&format!("{header}secret-access-key"));
                let token = call.header(&format!("{header}session-token"));
                match (id, secret) {
                    (None, None) => None,
                    (Some(id), Some(secret)) => {
                        let credentials = aws::AwsCredentials {
                            access_key_id: id.to_string(),
                            secret_access_key: Secret::new(secret),
                            session_token: token.map(Secret::new),
                            expires_at: None,
                        };
                        Some(signer.sign_with(&credentials, call)?)
                    }
                    _ => {
                        return Err(AuthError::Invalid(format!(
                            "the per-request AWS credential needs both {header}access-key-id and {header}secret-access-key"
                        )));
                    }
                }
            }
            Auth::Header { name, prefix, .. } => call
                .header(header)
                .map(|value| Applied::header(name, format!("{prefix}{value}"))),
            Auth::Bearer(_) => call
                .header(header)
                .map(|value| Applied::header("authorization", format!("Bearer {value}"))),
            Auth::Gcp {
                project, region, ..
            } => call.header(header).map(|value| Applied {
                headers: vec![("authorization".into(), format!("Bearer {value}"))],
                path: Some(gcp::path(project, region, call.path)),
            }),
        })
    }

    fn apply_configured(&self, call: &UpstreamCall<'_>) -> Result<Applied, AuthError> {
        match &self.auth {
            Auth::Header {
                name,
                prefix,
                value,
            } => Ok(Applied::header(name, format!("{prefix}{}", value.expose()))),
            Auth::Bearer(token) => Ok(Applied::header(
                "authorization",
                format!("Bearer {}", token.get()?.expose()),
            )),
            Auth::Gcp {
                token,
                project,
                region,
            } => Ok(Applied {
                headers: vec![(
                    "authorization".into(),
                    format!("Bearer {}", token.get()?.expose()),
                )],
                path: Some(gcp::path(project, region, call.path)),
            }),
            Auth::Aws(signer) => signer.sign(call),
        }
    }

    /// Waits (up to `timeout`) until a fetched credential is available; true when it is.
    pub async fn ready(&self, timeout: Duration) -> bool {
        match &self.auth {
            Auth::Header { .. } => true,
            Auth::Bearer(token) | Auth::Gcp { token, .. } => token.ready(timeout).await,
            Auth::Aws(signer) => signer.ready(timeout).await,
        }
    }
}

/// Credentials that refresh in the background, shared by successive configurations so that a
/// reload does not fetch again what is still valid.
fn shared<T: Send + Sync + 'static>(
    key: String,
    make: impl FnOnce() -> Result<Arc<T>, String>,
) -> Result<Arc<T>, String> {
    type Registry = Mutex<HashMap<String, Weak<dyn Any + Send + Sync>>>;
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    let registry = REGISTRY.get_or_init(Registry::default);
    let mut map = registry.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = map.get(&key).and_then(Weak::upgrade)
        && let Ok(value) = existing.downcast::<T>()
    {
        return Ok(value);
    }
    let value = make()?;
    let erased: Arc<dyn Any + Send + Sync> = value.clone();
    map.insert(key, Arc::downgrade(&erased));
    Ok(value)
}

/// Builds a backend's credential from the config. `base` resolves relative paths; files whose
/// change should reload the configuration are added to `files`. The error is a message naming
/// what is wrong (never a secret).
pub fn build(
    auth: &BackendAuth,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<BackendCredential, String> {
    let key = |kind: &str| {
        format!(
            "{kind}|{}|{}",
            base.display(),
            serde_json::to_string(&auth.credential).unwrap_or_default()
        )
    };
    let static_header =
        |name: &'static str, prefix: &'static str, file: &str, files: &mut Vec<PathBuf>| {
            let path = base.join(file);
            let value = oidc::read_trimmed(&path)?;
            files.push(path);
            Ok::<Auth, String>(Auth::Header {
                name,
                prefix,
                value: Secret::new(value),
            })
        };
    let configured = match &auth.credential {
        Credential::ApiKey { key_file } => {
            static_header("authorization", "Bearer ", key_file, files)?
        }
        Credential::AzureApiKey { key_file } => static_header("api-key", "", key_file, files)?,
        Credential::AnthropicApiKey { key_file } => {
            static_header("x-api-key", "", key_file, files)?
        }
        Credential::Aws {
            region,
            credentials_file,
            profile,
            oidc_exchange,
        } => {
            let file = credentials_file.as_ref().map(|f| base.join(f));
            if let Some(file) = &file {
                files.push(file.clone());
            }
            let signer = shared(key("aws"), || {
                aws::Signer::from_config(
                    region,
                    file.as_deref(),
                    profile.as_deref(),
                    oidc_exchange.as_ref(),
                    base,
                )
                .map(Arc::new)
            })?;
            Auth::Aws(signer)
        }
        Credential::Azure {
            client_id,
            tenant_id,
            client_secret_file,
            oidc_exchange,
        } => {
            let secret = client_secret_file.as_ref().map(|f| base.join(f));
            Auth::Bearer(shared(key("azure"), || {
                azure::token_source(
                    client_id,
                    tenant_id,
                    secret.as_deref(),
                    oidc_exchange.as_ref(),
                    base,
                )
            })?)
        }
        Credential::Gcp {
            project_name,
            region,
            credentials_file,
            workload_identity_federation,
        } => {
            let file = credentials_file.as_ref().map(|f| base.join(f));
            Auth::Gcp {
                token: shared(key("gcp"), || {
                    gcp::token_source(file.as_deref(), workload_identity_federation.as_ref(), base)
                })?,
                project: project_name.clone(),
                region: region.clone(),
            }
        }
    };
    let override_from = auth.credential_override.as_ref().map(|o| Override {
        header: o.header_name.as_ref().map(|h| h.to_ascii_lowercase()),
        fallback: o.fallback_to_configured,
    });
    Ok(BackendCredential {
        auth: configured,
        override_from,
    })
}
