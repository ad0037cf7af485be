//! The runtime configuration: the filter config file turned into what the request path needs,
//! built once per (re)load so that requests only read it.
//!
//! Loading reads the file (YAML or JSON), checks the contract version and cross-references
//! (`aigw_filterconfig`), compiles header regexes and CEL cost expressions, and reads every
//! credential file. Relative file paths are resolved against the config file's folder. A config
//! that fails any of this is rejected as a whole, so a reload never serves half a config.
//! Credentials are held in [`Secret`], whose `Debug` never shows the value.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aigw_filterconfig::{self as fc, FilterConfig};

use crate::auth::{self, BackendCredential};
pub use crate::redact::Secret;

/// Errors loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A part of a sharded configuration is not the one its root names: the volume holding them
    /// is being updated, or the set is incomplete. The configuration in force stays.
    #[error(
        "{path} does not match the checksum its configuration lists (the files are being updated)"
    )]
    PartMismatch {
        /// The part file.
        path: PathBuf,
    },
    /// A part path leaves the configuration's folder.
    #[error("{path}: a part path must stay inside the configuration's folder")]
    PartPath {
        /// The part file.
        path: PathBuf,
    },
    /// The file is not valid YAML/JSON.
    #[error("{path} is not valid YAML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The file does not satisfy the contract.
    #[error("{path}: {source}")]
    Contract {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: fc::ConfigError,
    },
    /// A header regular expression does not compile.
    #[error("route {route:?}: invalid regular expression {pattern:?}: {message}")]
    Regex {
        /// Route name.
        route: String,
        /// The pattern.
        pattern: String,
        /// What the regex engine said.
        message: String,
    },
    /// A CEL cost expression does not compile.
    #[error("cost {key:?}: CEL expression does not compile: {message}")]
    Cel {
        /// Metadata key of the cost.
        key: String,
        /// What the compiler said.
        message: String,
    },
    /// A credential could not be set up (a file missing or empty, an invalid key).
    #[error("backend {backend:?}: credential: {message}")]
    Credential {
        /// Backend name.
        backend: String,
        /// What is wrong.
        message: String,
    },
}

/// A header condition of a rule.
#[derive(Debug)]
pub enum Matcher {
    /// Byte-for-byte equality.
    Exact(String),
    /// Whole-value regular expression.
    Regex(regex::Regex),
}

impl Matcher {
    /// True when `value` satisfies the condition.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(expected) => expected == value,
            Matcher::Regex(re) => re.is_match(value),
        }
    }
}

/// A rule ready to evaluate.
#[derive(Debug)]
pub struct Rule {
    /// Alternatives; each is a list of (lower-cased header name, condition) that must all hold.
    /// Empty: the rule always applies.
    pub matches: Vec<Vec<(String, Matcher)>>,
    /// Candidates with their weights and priorities.
    pub backends: Vec<(Arc<Backend>, u32, u32)>,
    /// The Envoy cluster that carries the rule's requests, when Envoy picks the backend
    /// ([`fc::RouteRule::cluster`]).
    pub cluster: Option<String>,
    /// The `:authority` naming the rule's virtual host ([`fc::RouteRule::authority`]).
    pub authority: Option<String>,
}

/// A backend ready to serve.
#[derive(Debug)]
pub struct Backend {
    /// The contract entry.
    pub spec: fc::Backend,
    /// Loaded credential.
    pub auth: Option<BackendCredential>,
}

/// A cost ready to compute.
pub struct Cost {
    /// Metadata key.
    pub key: String,
    /// What it counts.
    pub kind: fc::CostType,
    /// Compiled CEL program (CEL costs only).
    pub program: Option<cel::Program>,
    /// Only for this AIServiceBackend.
    pub service_backend: Option<String>,
    /// Only for this upstream model.
    pub model: Option<String>,
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cost")
            .field("key", &self.key)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A route ready to match.
#[derive(Debug)]
pub struct Route {
    /// `<namespace>/<name>`.
    pub name: String,
    /// Hostnames (lower-case); empty: any.
    pub hostnames: Vec<String>,
    /// Rules in order.
    pub rules: Vec<Rule>,
    /// Costs.
    pub costs: Vec<Cost>,
    /// Models for `/v1/models`.
    pub models: Vec<fc::Model>,
}

/// The whole runtime configuration.
#[derive(Debug)]
pub struct RuntimeConfig {
    /// Request body limit.
    pub max_request_body_bytes: u64,
    /// Routes ordered by namespace/name.
    pub routes: Vec<Route>,
    /// Gateway-wide costs.
    pub global_costs: Vec<Cost>,
    /// Files the config depends on (the config file and every credential file).
    pub files: Vec<PathBuf>,
    /// Any cost configured at all (forces usage in streams).
    pub has_costs: bool,
    /// Model names the configuration mentions (exact model matches, model overrides, declared
    /// models): always kept as metric label values.
    pub known_models: HashSet<String>,
    /// Routes and rules indexed by host and model ([`crate::router::RouteIndex`]); built when
    /// the configuration is loaded.
    pub index: std::sync::OnceLock<crate::router::RouteIndex>,
    /// The backend behind each Envoy locality of the rule clusters (`<cluster>/backend/<j>`),
    /// with its route's index: how an attempt finds the backend it reached.
    pub localities: HashMap<String, (usize, Arc<Backend>)>,
}

/// Reads and builds the configuration at `path`.
pub fn load(path: &Path) -> Result<RuntimeConfig, LoadError> {
    load_tracking(path, &mut Vec::new())
}

/// Like [`load`], and adds to `files` every file the attempt read or looked for (the config
/// file, then each credential file it names, a missing one included), whether it succeeds or
/// not: a watcher waits on these for a failed configuration to become complete.
pub fn load_tracking(path: &Path, files: &mut Vec<PathBuf>) -> Result<RuntimeConfig, LoadError> {
    files.push(path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value = parse_yaml(path, &text)?;
    let mut config =
        FilterConfig::from_json_value(value).map_err(|source| LoadError::Contract {
            path: path.to_path_buf(),
            source,
        })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    if !config.parts.is_empty() {
        for part in config.parts.clone() {
            config.absorb(read_part(base, &part, files)?);
        }
        config.check().map_err(|source| LoadError::Contract {
            path: path.to_path_buf(),
            source,
        })?;
    }
    build(config, base, files)
}

/// Reads one part of a sharded configuration, checking it is the version the root names.
fn read_part(
    base: &Path,
    part: &fc::ConfigPart,
    files: &mut Vec<PathBuf>,
) -> Result<fc::FilterConfigPart, LoadError> {
    let relative = Path::new(&part.path);
    let plain = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    let path = base.join(relative);
    if !plain {
        return Err(LoadError::PartPath { path });
    }
    files.push(path.clone());
    let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let found: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    if found != part.sha256 {
        return Err(LoadError::PartMismatch { path });
    }
    let text = String::from_utf8(bytes).map_err(|_| LoadError::Syntax {
        path: path.clone(),
        message: "not UTF-8".into(),
    })?;
    let value = parse_yaml(&path, &text)?;
    fc::FilterConfigPart::from_json_value(value)
        .map_err(|source| LoadError::Contract { path, source })
}

/// Parses a config or part file's text.
fn parse_yaml(path: &Path, text: &str) -> Result<serde_json::Value, LoadError> {
    serde_saphyr::from_str_with_options(text, yaml_options(text.len())).map_err(|err| {
        LoadError::Syntax {
            path: path.to_path_buf(),
            message: err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    })
}

/// The YAML reader's limits for a config of `bytes`: the library's defaults hold a quarter of a
/// million nodes, about 2,000 routes; a config the compiler wrote for 20,000 routes has millions.
/// Nodes and events grow with the text, never faster (every node takes at least one byte), and
/// the limits on aliases, which could multiply it, stay as they are.
fn yaml_options(bytes: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(bytes);
    budget.max_events = budget.max_events.max(bytes.saturating_mul(2));
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(bytes);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

fn compile_costs(costs: &[fc::LlmRequestCost]) -> Result<Vec<Cost>, LoadError> {
    costs
        .iter()
        .map(|cost| {
            let program = match (&cost.cost_type, &cost.cel) {
                (fc::CostType::CEL, Some(expression)) => {
                    Some(cel::Program::compile(expression).map_err(|err| {
                        LoadError::Cel {
                            key: cost.metadata_key.clone(),
                            message: err
                                .to_string()
                                .split_whitespace()
                                .collect::<Vec<_>>()
                                .join(" "),
                        }
                    })?)
                }
                _ => None,
            };
            Ok(Cost {
                key: cost.metadata_key.clone(),
                kind: cost.cost_type,
                program,
                service_backend: cost.service_backend.clone(),
                model: cost.model.clone(),
            })
        })
        .collect()
}

impl RuntimeConfig {
    /// The route index (built on first use when a configuration was assembled by hand).
    pub fn index(&self) -> &crate::router::RouteIndex {
        self.index
            .get_or_init(|| crate::router::RouteIndex::new(&self.routes))
    }

    /// Waits (up to `timeout` in all) until every fetched credential is available; returns the
    /// backends whose credential is not, for the log.
    pub async fn credentials_ready(&self, timeout: std::time::Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for route in &self.routes {
            for rule in &route.rules {
                for (backend, _, _) in &rule.backends {
                    let Some(credential) = &backend.auth else {
                        continue;
                    };
                    if !seen.insert(backend.spec.name.clone()) {
                        continue;
                    }
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if !credential.ready(left).await {
                        missing.push(backend.spec.name.clone());
                    }
                }
            }
        }
        missing
    }
}

/// Builds the runtime form of an already checked contract. `base` resolves relative paths;
/// `files` (holding the config file) gets every credential file named.
pub fn build(
    config: FilterConfig,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<RuntimeConfig, LoadError> {
    let mut known_models = HashSet::new();
    let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
    for spec in config.backends {
        known_models.extend(spec.model_name_override.clone());
        let auth =
            match &spec.auth {
                None => None,
                Some(auth) => Some(auth::build(auth, base, files).map_err(|message| {
                    LoadError::Credential {
                        backend: spec.name.clone(),
                        message: message.to_string(),
                    }
                })?),
            };
        backends.insert(spec.name.clone(), Arc::new(Backend { spec, auth }));
    }
    let mut routes = Vec::new();
    let mut localities = HashMap::new();
    let mut has_costs = !config.global_costs.is_empty();
    for route in config.routes {
        let mut rules = Vec::new();
        for rule in route.rules {
            let mut matches = Vec::new();
            for alternative in rule.matches {
                let mut conditions = Vec::new();
                for header in alternative.headers {
                    if header.match_type == fc::HeaderMatchType::Exact
                        && header.name.eq_ignore_ascii_case(fc::MODEL_HEADER)
                    {
                        known_models.insert(header.value.clone());
                    }
                    let matcher = match header.match_type {
                        fc::HeaderMatchType::Exact => Matcher::Exact(header.value),
                        fc::HeaderMatchType::RegularExpression => Matcher::Regex(
                            regex::Regex::new(&format!("^(?:{})$", header.value)).map_err(
                                |err| LoadError::Regex {
                                    route: route.name.clone(),
                                    pattern: header.value.clone(),
                                    message: err
                                        .to_string()
                                        .lines()
                                        .last()
                                        .unwrap_or_default()
                                        .to_string(),
                                },
                            )?,
                        ),
                    };
                    conditions.push((header.name.to_ascii_lowercase(), matcher));
                }
                matches.push(conditions);
            }
            let candidates = rule
                .backends
                .iter()
                .filter_map(|b| {
                    backends
                        .get(&b.backend)
                        .map(|backend| (backend.clone(), b.weight, b.priority))
                })
                .collect();
            let candidates: Vec<(Arc<Backend>, u32, u32)> = candidates;
            if let Some(cluster) = &rule.cluster {
                // Envoy Gateway makes one locality per backendRef of the HTTPRoute rule, which
                // lists the backends with weight, in order.
                for (j, (backend, _, _)) in candidates.iter().filter(|(_, w, _)| *w > 0).enumerate()
                {
                    localities.insert(
                        format!("{cluster}/backend/{j}"),
                        (routes.len(), backend.clone()),
                    );
                }
            }
            rules.push(Rule {
                matches,
                backends: candidates,
                cluster: rule.cluster,
                authority: rule.authority,
            });
        }
        has_costs |= !route.costs.is_empty();
        known_models.extend(route.models.iter().map(|m| m.id.clone()));
        routes.push(Route {
            name: route.name,
            hostnames: route
                .hostnames
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            rules,
            costs: compile_costs(&route.costs)?,
            models: route.models,
        });
    }
    let config = RuntimeConfig {
        max_request_body_bytes: config.max_request_body_bytes,
        routes,
        global_costs: compile_costs(&config.global_costs)?,
        files: files.clone(),
        has_costs,
        known_models,
        index: std::sync::OnceLock::new(),
        localities,
    };
    // Built now, while loading, so no request waits for it.
    config.index();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("sk-123");
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        let auth = crate::auth::Auth::Header {
            name: "authorization",
            prefix: "Bearer ",
            value: secret,
        };
        assert!(!format!("{auth:?}").contains("sk-123"));
    }

    #[test]
    fn loads_configs_larger_than_the_yaml_readers_default_budget() {
        // 420,000 nodes: past serde-saphyr's default of 250,000, as a 20,000-route config is.
        let mut text = format!(
            "apiVersion: {}\nmaxRequestBodyBytes: 1024\nbackends: []\nroutes:\n- name: ns/r\n  rules: []\n  models:\n",
            fc::API_VERSION
        );
        for i in 0..60_000 {
            text.push_str(&format!("  - id: m{i}\n    ownedBy: o\n    created: 0\n"));
        }
        let dir = std::env::temp_dir().join(format!("aigw-extproc-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("filter-config.yaml");
        std::fs::write(&path, text).unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.routes[0].models.len(), 60_000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn loads_a_config_with_relative_secret_paths() {
        let dir = std::env::temp_dir().join(format!("aigw-extproc-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("secrets/key")).unwrap();
        std::fs::write(dir.join("secrets/key/apiKey"), "sk-test\n").unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "apiVersion: {}\nmaxRequestBodyBytes: 100\nroutes:\n- name: ns/r\n  rules:\n  - matches: [{{headers: [{{name: X-AI-EG-Model, type: RegularExpression, value: 'gpt-.*'}}]}}]\n    backends: [{{backend: b, weight: 1}}]\n  costs: [{{metadataKey: c, type: CEL, cel: 'input_tokens + 1u'}}]\nbackends:\n- name: b\n  serviceBackend: ns/b\n  schema: {{name: OpenAI, prefix: v1}}\n  auth: {{credential: {{type: APIKey, keyFile: secrets/key/apiKey}}}}\n",
                fc::API_VERSION
            ),
        )
        .unwrap();
        let config = load(&dir.join("config.yaml")).unwrap();
        assert!(config.has_costs);
        assert_eq!(config.files.len(), 2);
        let rule = &config.routes[0].rules[0];
        assert!(rule.matches[0][0].1.matches("gpt-4o"));
        assert!(!rule.matches[0][0].1.matches("xgpt-4o"));
        assert_eq!(rule.matches[0][0].0, "x-ai-eg-model");
        match &rule.backends[0].0.auth {
            Some(BackendCredential {
                auth: crate::auth::Auth::Header { value, .. },
                ..
            }) => assert_eq!(value.expose(), "sk-test"),
            other => panic!("unexpected auth {other:?}"),
        }
        std::fs::remove_file(dir.join("secrets/key/apiKey")).unwrap();
        let err = load(&dir.join("config.yaml")).unwrap_err();
        assert!(err.to_string().contains("credential: cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wrong_version_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("aigw-extproc-version-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("c.yaml"),
            "apiVersion: something/v9\nmaxRequestBodyBytes: 1\nroutes: []\nbackends: []\n",
        )
        .unwrap();
        let err = load(&dir.join("c.yaml")).unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
