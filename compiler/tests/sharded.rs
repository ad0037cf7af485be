//! A Gateway with more routes than one object can hold: the filter config is split into part
//! ConfigMaps, every object stays under the client-side apply limit, and the extproc loads the
//! set exactly as the Deployment mounts it (and refuses a set whose parts do not match).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a failed build or command is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use aigw::load::Source;
use serde_json::Value;

#[path = "support/synthetic.rs"]
mod synthetic;

const ROUTES: usize = 600;

fn input() -> Vec<Source> {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: ai}\nspec:\n  gatewayClassName: eg\n  listeners:\n  - {name: http, protocol: HTTP, port: 80}\n",
    );
    for r in 0..ROUTES {
        text.push_str(&format!(
            "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: route-{r:04}, namespace: ai}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n"
        ));
        text.push_str(&synthetic::route_rules(r));
        text.push_str(&synthetic::route_backends(r, false));
    }
    vec![Source {
        name: "routes.yaml".into(),
        text,
    }]
}

/// Writes the Deployment's config volume as the kubelet would: each projected ConfigMap key
/// at its path.
fn materialize(objects: &[Value], dir: &Path) -> PathBuf {
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .expect("a config volume");
    let sources = volume["projected"]["sources"]
        .as_array()
        .expect("a projected config volume");
    for source in sources {
        let name = source["configMap"]["name"].as_str().unwrap();
        let config_map = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ConfigMap {name} is mounted but not emitted"));
        for item in source["configMap"]["items"].as_array().unwrap() {
            let path = dir.join(item["path"].as_str().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let key = item["key"].as_str().unwrap();
            std::fs::write(&path, config_map["data"][key].as_str().unwrap()).unwrap();
        }
    }
    dir.join("filter-config.yaml")
}

fn extproc() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_BIN_EXE_aigw"))
        .parent()?
        .join("aigw-extproc");
    bin.exists().then_some(bin)
}

#[test]
fn a_gateway_with_hundreds_of_routes_is_split_and_loads_as_one() {
    let built = aigw::build(&input(), &aigw::BuildOptions::default())
        .unwrap_or_else(|d| panic!("{}", d[0]));
    let objects: Vec<Value> = built
        .objects
        .iter()
        .map(|o| serde_saphyr::from_str(&o.text).unwrap())
        .collect();
    for object in &built.objects {
        assert!(
            object.text.len() <= aigw::emit::MAX_OBJECT_BYTES,
            "{} {} is {} bytes",
            object.kind,
            object.name,
            object.text.len()
        );
    }
    let parts = built
        .objects
        .iter()
        .filter(|o| o.kind == "ConfigMap" && o.name.contains("-part-"))
        .count();
    assert!(parts >= 3, "{parts} part ConfigMaps");

    let dir = std::env::temp_dir().join(format!("aigw-sharded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = materialize(&objects, &dir);
    let Some(extproc) = extproc() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "aigw-extproc is not built next to aigw"
        );
        eprintln!("aigw-extproc not built: the load check is skipped");
        return;
    };
    let check = || {
        Command::new(&extproc)
            .arg("--check")
            .arg("--config")
            .arg(&root)
            .output()
            .unwrap()
    };
    let output = check();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("{ROUTES} routes, {} rules", ROUTES * 3)),
        "{stdout}"
    );

    // A part from another build (the kubelet caught mid-update) is refused.
    let part = std::fs::read_dir(dir.join("parts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&part).unwrap();
    std::fs::write(&part, text.replace("upstream-1", "upstream-9")).unwrap();
    let output = check();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not match the checksum"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
