//! Routing benchmark: what the number of routes on one Gateway costs the extproc.
//!
//! For 1, 2,000 and 20,000 AIGatewayRoutes of three rules each (every rule matching one exact
//! model and naming its own OpenAI backend, as upstream's control-plane benchmark lays them
//! out), on one Gateway and without hostnames, it measures:
//! - load: reading, checking and indexing the filter config file (YAML, as the compiler writes
//!   it), and the file's size;
//! - request: a whole chat request through the processor (request headers and body: parse,
//!   route, rule, backend, rewrite), for a model of the first route, of the middle one and of
//!   the last one, and for an unknown model (404): the median of 2,000 requests each.
//!
//! Run: `cargo bench -p aigw-extproc --bench routing` (release build).

#![allow(clippy::unwrap_used, reason = "benchmark binary")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_extproc::metrics::Metrics;
use aigw_extproc::processor::Processor;
use aigw_extproc::testing::{request_body, request_headers};
use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingRequest;
use serde_json::{Value, json};

/// Requests timed per figure (a quick pass of 20 under `cargo test`, which runs benchmark
/// binaries without `--bench` to check they still work).
fn requests() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        2_000
    } else {
        20
    }
}

fn filter_config(routes: usize) -> Value {
    let mut backends = Vec::new();
    let mut route_list = Vec::new();
    for r in 0..routes {
        let mut rules = Vec::new();
        for i in 0..3 {
            let name = format!("bench/b-{r}-{i}/route/bench/route-{r:05}/rule/{i}/ref/0");
            backends.push(json!({
                "name": name,
                "serviceBackend": format!("bench/b-{r}-{i}"),
                "schema": {"name": "OpenAI", "prefix": "v1"},
            }));
            rules.push(json!({
                "matches": [{"headers": [{"name": "x-ai-eg-model", "type": "Exact", "value": format!("model-{r}-{i}")}]}],
                "backends": [{"backend": name, "weight": 1}],
            }));
        }
        route_list.push(json!({"name": format!("bench/route-{r:05}"), "rules": rules}));
    }
    json!({
        "apiVersion": aigw_filterconfig::API_VERSION,
        "maxRequestBodyBytes": 1 << 20,
        "backends": backends,
        "routes": route_list,
    })
}

fn headers() -> ProcessingRequest {
    let pairs = [
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        (":authority", "gateway.example.com"),
        ("content-type", "application/json"),
    ];
    request_headers(&pairs, false)
}

fn body(model: &str) -> ProcessingRequest {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Say hello in one word."}]});
    request_body(body.to_string().as_bytes())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median time of one request (headers and body) for `model`.
fn request_time(config: &Arc<aigw_extproc::config::RuntimeConfig>, model: &str) -> Duration {
    let metrics = Arc::new(Metrics::new());
    let (headers, body) = (headers(), body(model));
    let count = requests();
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let (h, b) = (headers.clone(), body.clone());
        let start = Instant::now();
        let mut processor = Processor::new(config.clone(), metrics.clone());
        black_box(processor.handle(h));
        black_box(processor.handle(b));
        samples.push(start.elapsed());
    }
    median(samples)
}

/// Resident memory of this process, in MiB (0 where `/proc` does not tell).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

fn main() {
    let dir = std::env::temp_dir().join(format!("aigw-bench-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "| routes | config file | load | memory held | request, first route | middle route | last route | unknown model (404) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let sizes: &[usize] = if std::env::args().any(|a| a == "--bench") {
        &[1, 2_000, 20_000]
    } else {
        &[1, 200]
    };
    for &routes in sizes {
        let path = dir.join(format!("filter-config-{routes}.yaml"));
        let text = serde_saphyr::to_string(&filter_config(routes)).unwrap();
        std::fs::write(&path, &text).unwrap();
        drop(text);
        let before = rss_mib();
        let start = Instant::now();
        let config = Arc::new(aigw_extproc::config::load(&path).unwrap());
        let load = start.elapsed();
        let held = rss_mib() - before;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let first = request_time(&config, "model-0-2");
        let middle = request_time(&config, &format!("model-{}-2", routes / 2));
        let last = request_time(&config, &format!("model-{}-2", routes - 1));
        let unknown = request_time(&config, "no-such-model");
        println!(
            "| {routes} | {:.1} MB | {:.0} ms | {held:.0} MiB | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
            size as f64 / 1e6,
            load.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e6,
            middle.as_secs_f64() * 1e6,
            last.as_secs_f64() * 1e6,
            unknown.as_secs_f64() * 1e6,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
