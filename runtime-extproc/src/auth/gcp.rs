//! GCP OAuth access tokens for Vertex AI, and the project/location path prefix. Being written:
//! see the module plan in `mod.rs`.

use std::path::Path;
use std::sync::Arc;

use aigw_filterconfig::GcpWorkloadIdentityFederation;

use super::refresh::Refreshing;
use crate::config::Secret;

/// `/v1/projects/<project>/locations/<region>/<path>`: Vertex AI paths are relative to the
/// project and location of the credentials.
pub fn path(project: &str, region: &str, relative: &str) -> String {
    format!(
        "/v1/projects/{project}/locations/{region}/{}",
        relative.trim_start_matches('/')
    )
}

/// The token source of a backend's `GCPCredentials`.
pub fn token_source(
    _credentials_file: Option<&Path>,
    _wif: Option<&GcpWorkloadIdentityFederation>,
    _base: &Path,
) -> Result<Arc<Refreshing<Secret>>, String> {
    Err("GCP credentials cannot be applied by this build".to_string())
}
