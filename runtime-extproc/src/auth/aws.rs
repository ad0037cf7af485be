//! AWS SigV4 for Bedrock (service `bedrock`). Being written: see the module plan in `mod.rs`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aigw_filterconfig::AwsOidcExchange;

use super::{Applied, AuthError, UpstreamCall};
use crate::config::Secret;

/// Suffixes of the per-request credential headers, after the configured prefix.
pub const OVERRIDE_SUFFIXES: [&str; 3] = ["access-key-id", "secret-access-key", "session-token"];

/// One set of AWS credentials.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// When temporary credentials expire.
    pub expires_at: Option<SystemTime>,
}

/// Signs requests for one backend.
#[derive(Debug)]
pub struct Signer {
    region: String,
}

impl Signer {
    /// Builds the signer of a backend's `AWSCredentials`.
    pub fn from_config(
        region: &str,
        _credentials_file: Option<&Path>,
        _profile: Option<&str>,
        _oidc: Option<&AwsOidcExchange>,
        _base: &Path,
    ) -> Result<Signer, String> {
        Err(format!(
            "AWS credentials for region {region} cannot be applied by this build"
        ))
    }

    /// Signs `call` with the configured credentials.
    pub fn sign(&self, call: &UpstreamCall<'_>) -> Result<Applied, AuthError> {
        Err(AuthError::Invalid(format!(
            "cannot sign {} for {}",
            call.path, self.region
        )))
    }

    /// Signs `call` with `credentials` (a per-request override).
    pub fn sign_with(
        &self,
        _credentials: &AwsCredentials,
        call: &UpstreamCall<'_>,
    ) -> Result<Applied, AuthError> {
        self.sign(call)
    }

    /// Waits until credentials are available.
    pub async fn ready(&self, _timeout: Duration) -> bool {
        false
    }
}
