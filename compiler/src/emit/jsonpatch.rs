//! Envoy Gateway's EnvoyPatchPolicy operations, applied to xDS resources as JSON, so that the
//! standalone target runs the very patches a cluster gets.
//!
//! Mirrors `internal/xds/translator/jsonpatch.go` of Envoy Gateway v1.8.3 for the `add`
//! operations aigw emits (RFC 6902, through evanphx/json-patch with `EnsurePathExistsOnAdd`,
//! so `add` creates the missing objects on its path): each applies to the resource named by its `type` and `name`; with a
//! `jsonPath`, the operation applies at each match, its `path` appended to the match's JSON
//! pointer, and no match is an error. The JSONPath subset is what aigw emits: `$`, `.name`,
//! `[*]`, recursive descent `..name`, and filters `[?(@.a.b=='value')]`.

use serde_json::{Map, Value};

/// Applies one EnvoyPatchPolicy `operation` to `resource`.
pub fn apply(resource: &mut Value, operation: &Value) -> Result<(), String> {
    let op = operation.get("op").and_then(Value::as_str).unwrap_or("");
    // aigw emits `add` only.
    if op != "add" {
        return Err(format!("operation {op:?} is not supported"));
    }
    let path = operation.get("path").and_then(Value::as_str).unwrap_or("");
    let pointers = match operation.get("jsonPath").and_then(Value::as_str) {
        None => vec![path.to_string()],
        Some(json_path) => {
            let matches = select(resource, json_path)?;
            if matches.is_empty() {
                return Err(format!("jsonPath {json_path:?} matches nothing"));
            }
            matches
                .into_iter()
                .map(|m| {
                    if path.is_empty() {
                        m
                    } else {
                        format!(
                            "{}/{}",
                            m.trim_end_matches('/'),
                            path.trim_start_matches('/')
                        )
                    }
                })
                .collect()
        }
    };
    let value = operation.get("value").cloned().unwrap_or(Value::Null);
    for pointer in pointers {
        add(resource, &pointer, value.clone())?;
    }
    Ok(())
}

fn segments(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("path {pointer:?} does not start with /"))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// RFC 6902 `add`, creating missing objects along the path.
fn add(resource: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    let segments = segments(pointer)?;
    let Some((last, parents)) = segments.split_last() else {
        *resource = value;
        return Ok(());
    };
    let mut node = resource;
    for segment in parents {
        node = match node {
            Value::Object(map) => map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(list) => {
                let index: usize = segment
                    .parse()
                    .map_err(|_| format!("path {pointer:?}: {segment:?} is not an index"))?;
                list.get_mut(index)
                    .ok_or_else(|| format!("path {pointer:?}: index {index} is out of range"))?
            }
            _ => return Err(format!("path {pointer:?} crosses a value")),
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(list) => {
            let index = if last == "-" {
                list.len()
            } else {
                last.parse()
                    .map_err(|_| format!("path {pointer:?}: {last:?} is not an index"))?
            };
            if index > list.len() {
                return Err(format!("path {pointer:?}: index {index} is out of range"));
            }
            list.insert(index, value);
        }
        _ => return Err(format!("path {pointer:?} crosses a value")),
    }
    Ok(())
}

/// One step of a JSONPath.
enum Step {
    Child(String),
    /// `..name`: the field `name` of the node or of any node below it.
    Descendant(String),
    All,
    /// `[?(@.a.b=='value')]`: the array elements whose field path holds the value.
    Filter(Vec<String>, String),
}

fn parse(json_path: &str) -> Result<Vec<Step>, String> {
    let unsupported = || format!("jsonPath {json_path:?} is not in the supported subset");
    let mut rest = json_path.strip_prefix('$').ok_or_else(unsupported)?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[*]") {
            steps.push(Step::All);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("[?(@.") {
            let end = after.find(")]").ok_or_else(unsupported)?;
            let (condition, tail) = (&after[..end], &after[end + 2..]);
            let (field, value) = condition.split_once("==").ok_or_else(unsupported)?;
            let value = value
                .trim()
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .ok_or_else(unsupported)?;
            steps.push(Step::Filter(
                field.trim().split('.').map(str::to_string).collect(),
                value.to_string(),
            ));
            rest = tail;
        } else if let Some(after) = rest.strip_prefix("..") {
            let (name, tail) = field_name(after).ok_or_else(unsupported)?;
            steps.push(Step::Descendant(name.to_string()));
            rest = tail;
        } else if let Some(after) = rest.strip_prefix('.') {
            let (name, tail) = field_name(after).ok_or_else(unsupported)?;
            steps.push(Step::Child(name.to_string()));
            rest = tail;
        } else {
            return Err(unsupported());
        }
    }
    Ok(steps)
}

/// A field name up to the next step, and the rest; None when empty.
fn field_name(path: &str) -> Option<(&str, &str)> {
    let end = path.find(['.', '[']).unwrap_or(path.len());
    (end > 0).then(|| path.split_at(end))
}

/// The JSON pointers of the nodes `json_path` selects, in document order.
pub fn select(resource: &Value, json_path: &str) -> Result<Vec<String>, String> {
    let mut current: Vec<(String, &Value)> = vec![(String::new(), resource)];
    for step in parse(json_path)? {
        let mut next = Vec::new();
        for (pointer, node) in current {
            match (&step, node) {
                (Step::Child(name), Value::Object(map)) => {
                    if let Some(child) = map.get(name) {
                        let escaped = name.replace('~', "~0").replace('/', "~1");
                        next.push((format!("{pointer}/{escaped}"), child));
                    }
                }
                (Step::Descendant(name), node) => descendants(&pointer, node, name, &mut next),
                (Step::All, Value::Array(list)) => {
                    next.extend(
                        list.iter()
                            .enumerate()
                            .map(|(i, v)| (format!("{pointer}/{i}"), v)),
                    );
                }
                (Step::All, Value::Object(map)) => {
                    next.extend(map.iter().map(|(k, v)| (format!("{pointer}/{k}"), v)));
                }
                (Step::Filter(field, value), Value::Array(list)) => {
                    for (i, element) in list.iter().enumerate() {
                        let held = field
                            .iter()
                            .try_fold(element, |v, f| v.get(f))
                            .and_then(Value::as_str)
                            == Some(value.as_str());
                        if held {
                            next.push((format!("{pointer}/{i}"), element));
                        }
                    }
                }
                _ => {}
            }
        }
        current = next;
    }
    Ok(current.into_iter().map(|(p, _)| p).collect())
}

/// The fields `name` of `node` and of every node below it, in document order.
fn descendants<'a>(pointer: &str, node: &'a Value, name: &str, out: &mut Vec<(String, &'a Value)>) {
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match node {
        Value::Object(map) => {
            if let Some(child) = map.get(name) {
                out.push((format!("{pointer}/{}", escape(name)), child));
            }
            for (key, child) in map {
                descendants(&format!("{pointer}/{}", escape(key)), child, name, out);
            }
        }
        Value::Array(list) => {
            for (i, child) in list.iter().enumerate() {
                descendants(&format!("{pointer}/{i}"), child, name, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recursive_descent_finds_a_field_at_any_depth() {
        let listener = json!({
            "filter_chains": [
                {"filters": [{"name": "tcp"}, {"name": "hcm", "typed_config": {"http_filters": [
                    {"name": "a/x", "typed_config": {}}, {"name": "b", "typed_config": {}}]}}]},
            ],
            "default_filter_chain": {"filters": [{"name": "hcm", "typed_config": {"http_filters": [
                {"name": "a/x", "typed_config": {}}]}}]},
        });
        let path =
            "$..filters[?(@.name=='hcm')].typed_config.http_filters[?(@.name=='a/x')].typed_config";
        assert_eq!(
            select(&listener, path).unwrap(),
            [
                "/default_filter_chain/filters/0/typed_config/http_filters/0/typed_config",
                "/filter_chains/0/filters/1/typed_config/http_filters/0/typed_config",
            ]
        );
        assert!(select(&listener, "$...x").is_err());
    }

    #[test]
    fn add_creates_the_objects_on_its_path() {
        let mut route = json!({"route": {"cluster": "c"}});
        apply(
            &mut route,
            &json!({"op": "add", "path": "/route/retry_policy/per_try_idle_timeout", "value": "2s"}),
        )
        .unwrap();
        assert_eq!(route["route"]["retry_policy"]["per_try_idle_timeout"], "2s");
        // An existing object keeps its other fields.
        apply(
            &mut route,
            &json!({"op": "add", "path": "/route/retry_policy/num_retries", "value": 3}),
        )
        .unwrap();
        assert_eq!(route["route"]["retry_policy"]["per_try_idle_timeout"], "2s");
        assert_eq!(route["route"]["retry_policy"]["num_retries"], 3);
    }

    #[test]
    fn array_members_are_reached_by_index_and_keys_may_hold_dots() {
        let mut cluster =
            json!({"load_assignment": {"endpoints": [{"lb_endpoints": []}, {"lb_endpoints": []}]}});
        apply(
            &mut cluster,
            &json!({"op": "add", "path": "/load_assignment/endpoints/1/priority", "value": 1}),
        )
        .unwrap();
        assert_eq!(cluster["load_assignment"]["endpoints"][1]["priority"], 1);
        assert!(
            cluster["load_assignment"]["endpoints"][0]
                .get("priority")
                .is_none()
        );
        let err = apply(
            &mut cluster,
            &json!({"op": "add", "path": "/load_assignment/endpoints/5/priority", "value": 1}),
        )
        .unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        apply(
            &mut cluster,
            &json!({"op": "add", "path": "/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/http_filters", "value": []}),
        )
        .unwrap();
        assert!(
            cluster["typed_extension_protocol_options"]
                ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
                .is_array()
        );
    }

    #[test]
    fn json_paths_select_by_a_nested_field_and_no_match_is_an_error() {
        let mut config = json!({"virtual_hosts": [
            {"routes": [{"name": "a", "route": {"cluster": "x"}}, {"name": "b", "route": {"cluster": "y"}}]},
            {"routes": [{"name": "c", "direct_response": {}}, {"name": "d", "route": {"cluster": "x"}}]},
        ]});
        let path = "$.virtual_hosts[*].routes[?(@.route.cluster=='x')]";
        assert_eq!(
            select(&config, path).unwrap(),
            ["/virtual_hosts/0/routes/0", "/virtual_hosts/1/routes/1"]
        );
        apply(
            &mut config,
            &json!({"op": "add", "jsonPath": path, "path": "/route/retry_policy/per_try_idle_timeout", "value": "1s"}),
        )
        .unwrap();
        assert_eq!(
            config["virtual_hosts"][1]["routes"][1]["route"]["retry_policy"]["per_try_idle_timeout"],
            "1s"
        );
        assert!(
            config["virtual_hosts"][0]["routes"][1]["route"]
                .get("retry_policy")
                .is_none()
        );
        let err = apply(
            &mut config,
            &json!({"op": "add", "jsonPath": "$.virtual_hosts[*].routes[?(@.route.cluster=='z')]", "path": "/x", "value": 1}),
        )
        .unwrap_err();
        assert!(err.contains("matches nothing"), "{err}");
        assert!(select(&config, "$.routes[0]").is_err());
    }
}
