//! Entra ID access tokens for Azure OpenAI. Being written: see the module plan in `mod.rs`.

use std::path::Path;
use std::sync::Arc;

use aigw_filterconfig::OidcExchange;

use super::refresh::Refreshing;
use crate::config::Secret;

/// The token source of a backend's `AzureCredentials`.
pub fn token_source(
    _client_id: &str,
    tenant_id: &str,
    _client_secret_file: Option<&Path>,
    _oidc: Option<&OidcExchange>,
    _base: &Path,
) -> Result<Arc<Refreshing<Secret>>, String> {
    Err(format!(
        "Azure credentials of tenant {tenant_id} cannot be applied by this build"
    ))
}
