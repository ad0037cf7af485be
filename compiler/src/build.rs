//! The whole pipeline: sources in, rendered objects (or every diagnostic) out.

use crate::diag::{self, Diagnostic, DiagnosticKind};
use crate::load::{self, Source};
use crate::plan::{self, PlanOptions};
use crate::render::{self, Rendered};
use crate::validate::{self, ValidateOptions};
use crate::{emit, resolve};

/// Output targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Kubernetes with Envoy Gateway (the `service` topology).
    Kubernetes,
    /// One local Envoy plus one extproc per Gateway (see [`emit::envoy`]).
    Envoy,
}

/// Everything the CLI can set.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output target.
    pub target: Target,
    /// Namespace of namespaced objects that name none.
    pub default_namespace: String,
    /// Extproc image when GatewayConfig sets none.
    pub extproc_image: String,
    /// Replicas of each extproc Deployment.
    pub replicas: i32,
    /// Request body limit of the extproc.
    pub max_request_body_bytes: u64,
    /// Write input Secrets (with their data) to the output.
    pub include_secrets: bool,
    /// Admin port of the standalone Envoy.
    pub envoy_admin_port: u16,
    /// Seconds a client has to send a whole request (headers and body) on a Gateway with AI
    /// routes; slower requests get 408.
    pub request_receive_timeout_secs: u32,
    /// Emit EnvoyPatchPolicies where Envoy Gateway has no API (Envoy's own error replies in the
    /// client's API shape); off for an Envoy Gateway without
    /// `extensionApis.enableEnvoyPatchPolicy`.
    pub envoy_patch_policies: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            target: Target::Kubernetes,
            default_namespace: "default".into(),
            extproc_image: plan::DEFAULT_EXTPROC_IMAGE.into(),
            replicas: 2,
            max_request_body_bytes: aigw_filterconfig::DEFAULT_MAX_REQUEST_BODY_BYTES,
            include_secrets: false,
            envoy_admin_port: emit::envoy::DEFAULT_ADMIN_PORT,
            request_receive_timeout_secs: plan::DEFAULT_REQUEST_RECEIVE_TIMEOUT_SECS,
            envoy_patch_policies: true,
        }
    }
}

/// A successful build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// Objects in canonical order, rendered (Kubernetes target).
    pub objects: Vec<Rendered>,
    /// The standalone folder (Envoy target).
    pub standalone: Option<emit::envoy::Standalone>,
    /// Warnings (stderr).
    pub warnings: Vec<Diagnostic>,
}

impl BuildOutput {
    /// The objects as one YAML stream.
    pub fn stream(&self) -> String {
        render::join(&self.objects)
    }
}

/// Runs every stage. On failure returns every diagnostic (errors first, then warnings).
pub fn build(sources: &[Source], options: &BuildOptions) -> Result<BuildOutput, Vec<Diagnostic>> {
    let (mut validated, mut diags) = validate::validate_sources(
        sources,
        &ValidateOptions {
            default_namespace: options.default_namespace.clone(),
        },
    );
    // References are checked even when some objects failed: a user sees every problem at once.
    let (resolved, found) = resolve::resolve(&validated);
    diags.extend(found);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(finish(diags));
    }
    let plan_options = PlanOptions {
        extproc_image: options.extproc_image.clone(),
        max_request_body_bytes: options.max_request_body_bytes,
        replicas: options.replicas,
        request_receive_timeout_secs: options.request_receive_timeout_secs,
        envoy_patch_policies: options.envoy_patch_policies,
    };
    let (plan, found) = plan::plan(
        &validated,
        &resolved,
        &plan_options,
        options.include_secrets,
    );
    if options.target == Target::Envoy {
        // The standalone target writes the Secrets it needs as files; the advice about
        // Kubernetes manifests does not apply.
        diags.extend(
            found
                .into_iter()
                .filter(|d| d.is_error() || d.kind != DiagnosticKind::SecretNotWritten),
        );
    } else {
        diags.extend(found);
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Err(finish(diags));
    }
    if options.target == Target::Envoy {
        let envoy_options = emit::envoy::EnvoyOptions {
            admin_port: options.envoy_admin_port,
            request_receive_timeout_secs: options.request_receive_timeout_secs,
        };
        return match emit::envoy::emit(&validated, &plan, &envoy_options) {
            Ok((standalone, warnings)) => {
                diags.extend(warnings);
                Ok(BuildOutput {
                    objects: Vec::new(),
                    standalone: Some(standalone),
                    warnings: finish(diags),
                })
            }
            Err(errors) => {
                diags.extend(errors);
                Err(finish(diags))
            }
        };
    }
    // The AI Gateway objects live on in the plan; what emit reads of the input are the objects
    // passed through. Freeing the rest first keeps the peak memory of large builds down.
    drop(resolved);
    validated.release_planned();
    let mut objects = match emit::emit(&validated, &plan) {
        Ok(objects) => objects,
        Err(found) => {
            diags.extend(found);
            return Err(finish(diags));
        }
    };
    if objects.is_empty() {
        diags.push(Diagnostic::error(
            "the input holds no objects; check the paths given (an empty render would make Argo CD or Flux, pruning, delete everything they applied before)",
        ));
        return Err(finish(diags));
    }
    render::sort_rendered(&mut objects);
    Ok(BuildOutput {
        objects,
        standalone: None,
        warnings: finish(diags),
    })
}

/// Checks each object alone, as `kubectl apply` would: syntax, schema and CEL rules.
pub fn check(sources: &[Source], default_namespace: &str) -> Vec<Diagnostic> {
    let (documents, mut diags) = load::parse_sources(sources);
    let (_, found) = validate::validate(
        documents,
        &ValidateOptions {
            default_namespace: default_namespace.to_string(),
        },
    );
    diags.extend(
        found
            .into_iter()
            .filter(|d| d.kind != DiagnosticKind::DuplicateObject),
    );
    finish(diags)
}

fn finish(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diag::normalize(&mut diags);
    diags
}
