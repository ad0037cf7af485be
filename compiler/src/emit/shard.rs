//! A filter config too large for one Kubernetes object, split into parts.
//!
//! `kubectl apply` and Argo CD keep a copy of each object they apply in an annotation of at most
//! 256 KiB, so every emitted object stays under 240 KiB. A config whose text is larger keeps its
//! settings in a root file and moves its routes, each with the backends it names, into parts of
//! at most [`PART_MAX`] bytes; the root lists each part's path and SHA-256, and the extproc uses
//! the set only when every part matches (see `aigw_filterconfig::FilterConfig::parts`).
//!
//! Where a part ends depends on the routes near it, not on their position in the whole list: a
//! part ends before a route whose name hashes below a threshold proportional to its size (on
//! average every [`PART_TARGET`] bytes, never before [`PART_MIN`]), or where the next route would
//! pass [`PART_MAX`]. Adding, changing or removing one route therefore changes its own part
//! (and, rarely, a neighbour), and each part is named after its first route, so the other
//! parts keep their names and bytes and a pull request shows a small diff.

use aigw_filterconfig::{API_VERSION, Backend, ConfigPart, FilterConfig, FilterConfigPart, Route};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::plan::hex;
use crate::render;

/// A config text up to this size stays in one file.
pub const SINGLE_MAX: usize = 200 * 1024;
/// Largest part text (the ConfigMap holding it indents each line and adds its metadata).
pub const PART_MAX: usize = 180 * 1024;
/// No part ends before this size, unless the routes run out.
pub const PART_MIN: usize = 32 * 1024;
/// Average distance between the content-defined ends of parts.
pub const PART_TARGET: usize = 96 * 1024;

/// Folder of the part files, relative to the root file.
pub const PARTS_DIR: &str = "parts";

/// One part file.
#[derive(Debug, Clone, PartialEq)]
pub struct PartFile {
    /// Short id: a hash of its first route's name.
    pub id: String,
    /// Path relative to the root file (`parts/<id>.yaml`).
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// The files of one filter config: the root's text, and the parts (none when it fits in one).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFiles {
    /// Text of the root file.
    pub root: String,
    /// Part files, in route order.
    pub parts: Vec<PartFile>,
}

/// Splits `config` when its text is over [`SINGLE_MAX`].
pub fn split(config: &FilterConfig) -> Result<ConfigFiles, String> {
    let whole = yaml(config)?;
    if whole.len() <= SINGLE_MAX {
        return Ok(ConfigFiles {
            root: whole,
            parts: Vec::new(),
        });
    }
    let backends: std::collections::HashMap<&str, &Backend> = config
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b))
        .collect();
    // Each route with the backends it names, and the bytes it adds to a part.
    let mut items: Vec<(&Route, Vec<Backend>, usize)> = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let mut named: Vec<Backend> = Vec::new();
        for target in route.rules.iter().flat_map(|r| &r.backends) {
            if let Some(backend) = backends.get(target.backend.as_str())
                && !named.iter().any(|b| b.name == target.backend)
            {
                named.push((*backend).clone());
            }
        }
        let size = yaml(&[route])?.len() + yaml(&named)?.len();
        items.push((route, named, size));
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut size = 0;
    for (index, (route, _, item_size)) in items.iter().enumerate() {
        let full = size + item_size > PART_MAX;
        let natural = size >= PART_MIN && ends_before(&route.name, *item_size);
        if !current.is_empty() && (full || natural) {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(index);
        size += item_size;
    }
    if !current.is_empty() {
        groups.push(current);
    }

    let mut root = FilterConfig::new(config.max_request_body_bytes);
    root.global_costs = config.global_costs.clone();
    let mut parts = Vec::new();
    for group in groups {
        let first = items[group[0]].0;
        let mut id = hex(&Sha256::digest(first.name.as_bytes()))[..8].to_string();
        if parts.iter().any(|p: &PartFile| p.id == id) {
            id = format!("{id}-{}", parts.len());
        }
        let mut part = FilterConfigPart {
            api_version: API_VERSION.to_string(),
            routes: Vec::new(),
            backends: Vec::new(),
        };
        for &index in &group {
            part.routes.push(items[index].0.clone());
            part.backends.extend(items[index].1.iter().cloned());
        }
        let text = yaml(&part)?;
        let path = format!("{PARTS_DIR}/{id}.yaml");
        root.parts.push(ConfigPart {
            path: path.clone(),
            sha256: hex(&Sha256::digest(text.as_bytes())),
        });
        parts.push(PartFile { id, path, text });
    }
    Ok(ConfigFiles {
        root: yaml(&root)?,
        parts,
    })
}

/// Whether a part ends before the route `name` adding `size` bytes: true with a probability of
/// `size / PART_TARGET`, decided by the name alone.
fn ends_before(name: &str, size: usize) -> bool {
    let digest = Sha256::digest(name.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let roll = u64::from_be_bytes(head) as f64 / u64::MAX as f64;
    roll < size as f64 / PART_TARGET as f64
}

fn yaml<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, String> {
    let value: Value = serde_json::to_value(value).map_err(|err| err.to_string())?;
    Ok(render::yaml(&value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_filterconfig::{
        ApiSchema, BackendSchema, HeaderMatch, HeaderMatchType, RouteRule, RuleMatch,
        WeightedBackend,
    };

    fn config(routes: impl IntoIterator<Item = usize>) -> FilterConfig {
        let mut config = FilterConfig::new(1024);
        for r in routes {
            let name = format!("ns/route-{r:05}");
            let mut rules = Vec::new();
            for i in 0..3 {
                let backend = format!("ns/b{r}-{i}/route/{name}/rule/{i}/ref/0");
                config.backends.push(Backend {
                    name: backend.clone(),
                    service_backend: format!("ns/b{r}-{i}"),
                    schema: BackendSchema {
                        name: ApiSchema::OpenAI,
                        version: None,
                        prefix: Some("v1".into()),
                    },
                    model_name_override: None,
                    upstream_host: Some("api.openai.com".into()),
                    auth: None,
                    header_mutation: None,
                    body_mutation: None,
                });
                rules.push(RouteRule {
                    name: None,
                    matches: vec![RuleMatch {
                        headers: vec![HeaderMatch {
                            name: "x-ai-eg-model".into(),
                            match_type: HeaderMatchType::Exact,
                            value: format!("model-{r}-{i}"),
                        }],
                    }],
                    backends: vec![WeightedBackend {
                        backend,
                        weight: 1,
                        priority: 0,
                    }],
                    cluster: Some(format!("httproute/ns/route-{r}/rule/{i}")),
                    authority: None,
                });
            }
            config.routes.push(Route {
                name,
                hostnames: Vec::new(),
                rules,
                costs: Vec::new(),
                models: Vec::new(),
            });
        }
        config.backends.sort_by(|a, b| a.name.cmp(&b.name));
        config
    }

    /// The configuration the extproc assembles from the files.
    fn assemble(files: &ConfigFiles) -> FilterConfig {
        let mut root: FilterConfig = serde_saphyr::from_str(&files.root).unwrap();
        for (listed, part) in root.parts.clone().iter().zip(&files.parts) {
            assert_eq!(listed.path, part.path);
            assert_eq!(listed.sha256, hex(&Sha256::digest(part.text.as_bytes())));
            root.absorb(serde_saphyr::from_str(&part.text).unwrap());
        }
        root.check().unwrap();
        root
    }

    #[test]
    fn small_configs_stay_in_one_file() {
        let config = config(0..10);
        let files = split(&config).unwrap();
        assert!(files.parts.is_empty());
        assert_eq!(files.root, yaml(&config).unwrap());
    }

    #[test]
    fn large_configs_are_split_into_bounded_parts_that_add_up_to_the_whole() {
        let config = config(0..2_000);
        let files = split(&config).unwrap();
        assert!(files.parts.len() > 5, "{} parts", files.parts.len());
        assert!(files.root.len() < 16 * 1024, "{}", files.root.len());
        for part in &files.parts {
            assert!(part.text.len() <= PART_MAX, "{} bytes", part.text.len());
        }
        let mut whole = assemble(&files);
        assert_eq!(whole.routes, config.routes);
        whole.backends.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(whole.backends, config.backends);
    }

    #[test]
    fn one_route_more_changes_few_parts() {
        let before = split(&config((0..2_000).filter(|&r| r != 700))).unwrap();
        let after = split(&config(0..2_000)).unwrap();
        let unchanged = after
            .parts
            .iter()
            .filter(|p| before.parts.contains(p))
            .count();
        assert!(
            unchanged + 2 >= after.parts.len(),
            "{unchanged} of {} parts unchanged",
            after.parts.len()
        );
    }
}
