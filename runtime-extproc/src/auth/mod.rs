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
#[cfg(test)]
pub(crate) mod test_support;

/// A non-empty environment variable of this process: the one environment reader of the
/// credential sources (AWS, Azure and GCP read their standard variables through it, and take
/// another reader in tests).
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aigw_filterconfig::{BackendAuth, Credential};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::value::Kind;

use crate::redact::Secret;
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

/// The upstream request being authenticated, after translation and mutations. Its `Debug`
/// shows the body's length and the header names, never their values (client credentials).
#[derive(Clone, Copy)]
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
    /// Dynamic metadata Envoy sent along (the namespaces the generated policy makes
    /// accessible), for per-request credentials.
    pub metadata: Option<&'a Metadata>,
}

impl std::fmt::Debug for UpstreamCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCall")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("body_bytes", &self.body.len())
            .field("headers", &header_names(self.headers))
            .field("metadata", &self.metadata.is_some())
            .finish()
    }
}

/// The names of `headers`, for `Debug` output that must not show their values.
fn header_names(headers: &[(String, String)]) -> Vec<&str> {
    headers.iter().map(|(name, _)| name.as_str()).collect()
}

impl UpstreamCall<'_> {
    /// A metadata field: `namespace` then `key`.
    fn metadata_field(&self, namespace: &str, key: &str) -> Option<&Kind> {
        self.metadata?
            .filter_metadata
            .get(namespace)?
            .fields
            .get(key)?
            .kind
            .as_ref()
    }

    fn metadata_text(&self, namespace: &str, key: &str) -> Option<&str> {
        match self.metadata_field(namespace, key)? {
            Kind::StringValue(text) => Some(text.trim()).filter(|t| !t.is_empty()),
            _ => None,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// What to change on the upstream request. Its `Debug` shows header names, not values.
#[derive(Default, PartialEq)]
pub struct Applied {
    /// Headers to set (lower-case names); values may be secrets and are never logged.
    pub headers: Vec<(String, String)>,
    /// A new `:path` (GCP prefixes the project and location).
    pub path: Option<String>,
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("headers", &header_names(&self.headers))
            .field("path", &self.path)
            .finish()
    }
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
    /// Dynamic metadata (namespace, key): a string, or for AWS a struct with `accessKeyId`,
    /// `secretAccessKey` and `sessionToken`.
    pub metadata: Option<(String, String)>,
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
        if let Auth::Aws(signer) = &self.auth {
            let (id, secret, token, source) = if let Some(header) = over.header.as_deref() {
                (
                    call.header(&format!("{header}access-key-id")),
                    call.header(&format!("{header}secret-access-key")),
                    call.header(&format!("{header}session-token")),
                    format!("the headers {header}access-key-id and {header}secret-access-key"),
                )
            } else if let Some((namespace, key)) = &over.metadata {
                let field = |name: &str| match call.metadata_field(namespace, key) {
                    Some(Kind::StructValue(fields)) => {
                        match fields.fields.get(name)?.kind.as_ref()? {
                            Kind::StringValue(text) => Some(text.trim()).filter(|t| !t.is_empty()),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                (
                    field("accessKeyId"),
                    field("secretAccessKey"),
                    field("sessionToken"),
                    format!("accessKeyId and secretAccessKey in metadata {namespace}/{key}"),
                )
            } else {
                return Ok(None);
            };
            return match (id, secret) {
                (None, None) => Ok(None),
                (Some(id), Some(secret)) => {
                    let credentials = aws::AwsCredentials {
                        access_key_id: id.to_string(),
                        secret_access_key: Secret::new(secret),
                        session_token: token.map(Secret::new),
                        expires_at: None,
                    };
                    Ok(Some(signer.sign_with(&credentials, call)?))
                }
                _ => Err(AuthError::Invalid(format!(
                    "the per-request AWS credential needs both {source}"
                ))),
            };
        }
        let value = match (&over.header, &over.metadata) {
            (Some(header), _) => call.header(header),
            (None, Some((namespace, key))) => call.metadata_text(namespace, key),
            (None, None) => None,
        };
        let Some(value) = value else {
            return Ok(None);
        };
        Ok(Some(match &self.auth {
            Auth::Header { name, prefix, .. } => Applied::header(name, format!("{prefix}{value}")),
            Auth::Bearer(_) => Applied::header("authorization", format!("Bearer {value}")),
            Auth::Gcp {
                project, region, ..
            } => Applied {
                headers: vec![("authorization".into(), format!("Bearer {value}"))],
                path: Some(gcp::path(project, region, call.path)),
            },
            Auth::Aws(_) => return Ok(None),
        }))
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

/// Why a backend's credential could not be built from the configuration, or a token or
/// temporary credentials could not be obtained: the causes all providers share, or one
/// provider's own. Messages name files, profiles, variables and endpoints, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// A key, client ID, client secret or token file could not be read.
    #[error(transparent)]
    SecretFile(#[from] oidc::SecretFileError),
    /// An AWS shared credentials file is unreadable, not INI, or lacks the profile or a key.
    #[error(transparent)]
    CredentialsFile(#[from] aws::CredentialsFileError),
    /// A GCP key file is unreadable, not JSON, of an unsupported type or lacks a field.
    #[error(transparent)]
    KeyFile(#[from] gcp::KeyFileError),
    /// The identity provider of an OIDC exchange gave no token.
    #[error(transparent)]
    Oidc(#[from] oidc::OidcError),
    /// A token endpoint, STS, or a metadata or container credentials endpoint failed.
    #[error(transparent)]
    Fetch(#[from] http::FetchError),
    /// A credential that refreshes in the background needs the async runtime.
    #[error(transparent)]
    NoRuntime(#[from] refresh::NoRuntime),
    /// What is wrong with AWS credentials.
    #[error(transparent)]
    Aws(#[from] aws::AwsError),
    /// What is wrong with an Entra ID client.
    #[error(transparent)]
    Azure(#[from] azure::AzureError),
    /// What is wrong with GCP credentials.
    #[error(transparent)]
    Gcp(#[from] gcp::GcpError),
}

/// Credentials that refresh in the background, shared by successive configurations so that a
/// reload does not fetch again what is still valid.
fn shared<T: Send + Sync + 'static, E>(
    key: String,
    make: impl FnOnce() -> Result<Arc<T>, E>,
) -> Result<Arc<T>, E> {
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

/// `file` of the config resolved against `base`, and listed in `files` (a change of it reloads
/// the configuration). Listed before it is read: a reload waits for a file that is not there
/// yet.
fn watched(base: &Path, file: &str, files: &mut Vec<PathBuf>) -> PathBuf {
    let path = base.join(file);
    files.push(path.clone());
    path
}

/// Builds a backend's credential from the config. `base` resolves relative paths; files whose
/// change should reload the configuration are added to `files`. The error names what is wrong
/// (never a secret).
pub fn build(
    auth: &BackendAuth,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<BackendCredential, CredentialError> {
    let key = |kind: &str| {
        format!(
            "{kind}|{}|{}",
            base.display(),
            serde_json::to_string(&auth.credential).unwrap_or_default()
        )
    };
    let static_header =
        |name: &'static str, prefix: &'static str, file: &str, files: &mut Vec<PathBuf>| {
            let value = oidc::read_trimmed(&watched(base, file, files))?;
            Ok::<Auth, oidc::SecretFileError>(Auth::Header {
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
            let file = credentials_file.as_ref().map(|f| watched(base, f, files));
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
            let secret = client_secret_file.as_ref().map(|f| watched(base, f, files));
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
            let file = credentials_file.as_ref().map(|f| watched(base, f, files));
            Auth::Gcp {
                token: shared(key("gcp"), || {
                    gcp::token_source(
                        Some(project_name),
                        file.as_deref(),
                        workload_identity_federation.as_ref(),
                        base,
                    )
                })?,
                project: project_name.clone(),
                region: region.clone(),
            }
        }
    };
    let override_from = auth.credential_override.as_ref().map(|o| Override {
        header: o.header_name.as_ref().map(|h| h.to_ascii_lowercase()),
        metadata: o.metadata_namespace.clone().zip(o.metadata_key.clone()),
        fallback: o.fallback_to_configured,
    });
    Ok(BackendCredential {
        auth: configured,
        override_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value as PbValue};

    fn key_credential(over: Option<Override>) -> BackendCredential {
        BackendCredential {
            auth: Auth::Header {
                name: "authorization",
                prefix: "Bearer ",
                value: Secret::new("configured-key"),
            },
            override_from: over,
        }
    }

    fn call<'a>(
        headers: &'a [(String, String)],
        metadata: Option<&'a Metadata>,
    ) -> UpstreamCall<'a> {
        UpstreamCall {
            method: "POST",
            host: "api.example.com",
            path: "/v1/chat/completions",
            body: b"{}",
            headers,
            metadata,
        }
    }

    fn from_header(fallback: bool) -> Option<Override> {
        Some(Override {
            header: Some("x-aigw-api-key".into()),
            metadata: None,
            fallback,
        })
    }

    #[test]
    fn configured_key() {
        let applied = key_credential(None).apply(&call(&[], None)).unwrap();
        assert_eq!(
            applied.headers,
            [(
                "authorization".to_string(),
                "Bearer configured-key".to_string()
            )]
        );
        assert_eq!(applied.path, None);
    }

    #[test]
    fn header_override_wins_and_falls_back() {
        let headers = [("x-aigw-api-key".to_string(), " tenant-key ".to_string())];
        let credential = key_credential(from_header(true));
        assert_eq!(
            credential.apply(&call(&headers, None)).unwrap().headers[0].1,
            "Bearer tenant-key"
        );
        assert_eq!(
            credential.apply(&call(&[], None)).unwrap().headers[0].1,
            "Bearer configured-key"
        );
        assert_eq!(credential.override_headers(), ["x-aigw-api-key"]);
    }

    #[test]
    fn missing_override_without_fallback_is_401() {
        let credential = key_credential(from_header(false));
        let err = credential.apply(&call(&[], None)).unwrap_err();
        assert_eq!(err, AuthError::Missing);
        assert_eq!(err.status(), 401);
        assert_eq!(err.to_string(), "missing upstream credential");
        let blank = [("x-aigw-api-key".to_string(), "  ".to_string())];
        assert_eq!(
            credential.apply(&call(&blank, None)).unwrap_err().status(),
            401
        );
    }

    #[test]
    fn metadata_override() {
        let credential = key_credential(Some(Override {
            header: None,
            metadata: Some(("acme.auth".into(), "upstream-key".into())),
            fallback: false,
        }));
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "upstream-key".to_string(),
            PbValue {
                kind: Some(Kind::StringValue("from-metadata".into())),
            },
        );
        let mut metadata = Metadata::default();
        metadata.filter_metadata.insert(
            "acme.auth".into(),
            Struct {
                fields: fields.into_iter().collect(),
            },
        );
        let applied = credential.apply(&call(&[], Some(&metadata))).unwrap();
        assert_eq!(applied.headers[0].1, "Bearer from-metadata");
        assert_eq!(
            credential.apply(&call(&[], None)).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn tokens_and_gcp_paths() {
        let token = Refreshing::fixed("entra", Secret::new("entra-token"));
        let azure = BackendCredential {
            auth: Auth::Bearer(token.clone()),
            override_from: None,
        };
        assert_eq!(
            azure.apply(&call(&[], None)).unwrap().headers[0].1,
            "Bearer entra-token"
        );
        let gcp = BackendCredential {
            auth: Auth::Gcp {
                token,
                project: "p1".into(),
                region: "us-east5".into(),
            },
            override_from: Some(Override {
                header: Some("x-aigw-gcp-access-token".into()),
                metadata: None,
                fallback: true,
            }),
        };
        let mut request = call(&[], None);
        request.path = "publishers/google/models/gemini-2.5-flash:generateContent";
        let applied = gcp.apply(&request).unwrap();
        assert_eq!(
            applied.path.as_deref(),
            Some(
                "/v1/projects/p1/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
            )
        );
        let headers = [(
            "x-aigw-gcp-access-token".to_string(),
            "per-request".to_string(),
        )];
        request.headers = &headers;
        let applied = gcp.apply(&request).unwrap();
        assert_eq!(applied.headers[0].1, "Bearer per-request");
        assert!(applied.path.is_some());
    }

    #[test]
    fn secrets_never_print() {
        let credential = key_credential(None);
        assert!(!format!("{credential:?}").contains("configured-key"));
        // The client's headers, the body and the applied credential print without values.
        let headers = [
            ("authorization".to_string(), "Bearer client-key".to_string()),
            (
                "x-aigw-aws-secret-access-key".to_string(),
                "tenant-secret".to_string(),
            ),
        ];
        let mut upstream = call(&headers, None);
        upstream.body = b"{\"prompt\":\"private\"}";
        let applied = credential.apply(&upstream).unwrap();
        let shown = format!("{upstream:?} {applied:?}");
        assert!(shown.contains("x-aigw-aws-secret-access-key"), "{shown}");
        for secret in ["client-key", "tenant-secret", "private", "configured-key"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_missing_key_file_names_the_file() {
        let auth = BackendAuth {
            credential: Credential::ApiKey {
                key_file: "/nonexistent/aigw/apiKey".into(),
            },
            credential_override: None,
        };
        let err = build(&auth, Path::new("/"), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&err, CredentialError::SecretFile(oidc::SecretFileError::Unreadable { path, .. }) if path == "/nonexistent/aigw/apiKey"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("/nonexistent/aigw/apiKey"),
            "{err}"
        );
    }

    #[test]
    fn provider_errors_keep_their_kind_and_message() {
        let fail = |credential: Credential| {
            let auth = BackendAuth {
                credential,
                credential_override: None,
            };
            let mut files = Vec::new();
            let err = build(&auth, Path::new("/nonexistent/aigw"), &mut files).unwrap_err();
            (err, files)
        };
        let (err, files) = fail(Credential::Aws {
            region: "us-east-1".into(),
            credentials_file: Some("credentials".into()),
            profile: None,
            oidc_exchange: None,
        });
        assert!(
            matches!(
                &err,
                CredentialError::CredentialsFile(aws::CredentialsFileError::Unreadable { .. })
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("cannot read AWS credentials file /nonexistent/aigw/credentials: "),
            "{err}"
        );
        // The file is watched although it could not be read.
        assert_eq!(files, [PathBuf::from("/nonexistent/aigw/credentials")]);

        let (err, _) = fail(Credential::Azure {
            client_id: " ".into(),
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_secret_file: None,
            oidc_exchange: None,
        });
        assert!(
            matches!(
                &err,
                CredentialError::Azure(azure::AzureError::Config {
                    problem: azure::AzureConfigError::EmptyClientId,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "Azure credentials (tenant contoso.onmicrosoft.com, client  ): the client ID is empty"
        );

        let (err, _) = fail(Credential::Gcp {
            project_name: "p1".into(),
            region: "us-east5".into(),
            credentials_file: Some("key.json".into()),
            workload_identity_federation: None,
        });
        assert!(
            matches!(
                &err,
                CredentialError::KeyFile(gcp::KeyFileError::Unreadable { .. })
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/aigw/key.json: "),
            "{err}"
        );
    }
}
