//! Compiler scaling benchmark: generates N AIGatewayRoutes (3 rules each, one AIServiceBackend,
//! Backend and BackendSecurityPolicy per rule) spread over G Gateways, and measures `aigw build`
//! in process (load through render, the whole pipeline but file writes): median wall time over
//! several runs, peak resident memory, and the largest object written.
//!
//! Run: `cargo bench -p aigw --bench scale` (release build). Optional args: `ROUTESxGATEWAYS`
//! (default `200x10 2000x10 2000x1`), e.g. `20000x1 10000x10`; `--envoy` builds the standalone
//! target instead (the input then carries the Secrets the backends name; "objects" are files).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark binary"
)]

use std::time::{Duration, Instant};

use aigw::load::Source;

#[path = "../tests/support/synthetic.rs"]
mod synthetic;

// Same allocator as the `aigw` binary, so the figures are the CLI's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn envoy_target() -> bool {
    std::env::args().any(|a| a == "--envoy")
}

fn generate(routes: usize, gateway_count: usize) -> Vec<Source> {
    let mut gateways = String::new();
    if envoy_target() {
        // The standalone target reads the credentials from the input.
        for k in 0..3 {
            gateways.push_str(&format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: provider-{k}-key, namespace: ai}}\nstringData: {{apiKey: bench-{k}}}\n"
            ));
        }
    }
    for g in 0..gateway_count {
        gateways.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw-{g}, namespace: ai}}\nspec:\n  gatewayClassName: eg\n  listeners:\n  - {{name: http, protocol: HTTP, port: 80}}\n"
        ));
    }
    let mut sources = vec![Source {
        name: "gateways.yaml".into(),
        text: gateways,
    }];
    for r in 0..routes {
        let mut text = format!(
            "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: route-{r}, namespace: ai}}\nspec:\n  parentRefs: [{{name: gw-{}}}]\n  llmRequestCosts:\n  - {{metadataKey: tokens, type: CEL, cel: 'input_tokens + output_tokens * 3u'}}\n  rules:\n",
            r % gateway_count
        );
        text.push_str(&synthetic::route_rules(r));
        text.push_str(&synthetic::route_backends(r, true));
        sources.push(Source {
            name: format!("route-{r}.yaml"),
            text,
        });
    }
    sources
}

/// A memory figure of `/proc/self/status` (`VmHWM`, `VmRSS`), in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let prefix = format!("{field}:");
    let line = status.lines().find(|l| l.starts_with(&prefix))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size of this process since the last reset, in bytes.
fn peak_rss() -> Option<u64> {
    status_kib("VmHWM").map(|kib| kib * 1024)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss_mib() -> u64 {
    status_kib("VmRSS").unwrap_or(0) / 1024
}

/// Times each stage once for `routes` routes, to show where the time and memory go.
fn stages(routes: usize) {
    let sources = generate(routes, 1);
    let t = Instant::now();
    let (documents, _) = aigw::load::parse_sources(&sources);
    let load = t.elapsed();
    eprintln!("rss after load: {} MiB", rss_mib());
    let t = Instant::now();
    let options = aigw::validate::ValidateOptions {
        default_namespace: "default".into(),
    };
    let (validated, _) = aigw::validate::validate(documents, &options);
    let validate = t.elapsed();
    eprintln!("rss after validate: {} MiB", rss_mib());
    let t = Instant::now();
    let (resolved, _) = aigw::resolve::resolve(&validated);
    let resolve = t.elapsed();
    let t = Instant::now();
    let plan_options = aigw::plan::PlanOptions {
        extproc_image: aigw::plan::DEFAULT_EXTPROC_IMAGE.into(),
        max_request_body_bytes: 1 << 20,
        replicas: 2,
        request_receive_timeout_secs: aigw::plan::DEFAULT_REQUEST_RECEIVE_TIMEOUT_SECS,
        envoy_patch_policies: true,
    };
    let (plan, _) = aigw::plan::plan(&validated, &resolved, &plan_options, false);
    let plan_time = t.elapsed();
    eprintln!("rss after plan: {} MiB", rss_mib());
    let t = Instant::now();
    let mut objects = aigw::emit::emit(&validated, &plan).unwrap();
    let emit = t.elapsed();
    eprintln!("rss after emit: {} MiB", rss_mib());
    let t = Instant::now();
    aigw::render::sort_rendered(&mut objects);
    let stream = aigw::render::join(&objects);
    let render = t.elapsed();
    eprintln!(
        "rss after render: {} MiB (peak {} MiB)",
        rss_mib(),
        peak_rss().unwrap_or(0) / 1048576
    );
    println!(
        "stages for {routes} routes: load {} | validate {} | resolve {} | plan {} | emit {} | render {} ({} bytes)",
        fmt(load),
        fmt(validate),
        fmt(resolve),
        fmt(plan_time),
        fmt(emit),
        fmt(render),
        stream.len()
    );
}

fn main() {
    // As the `aigw` binary does.
    aigw::tune_process();
    if std::env::args().any(|a| a == "--stages") {
        let routes = std::env::args()
            .filter_map(|a| a.parse().ok())
            .next()
            .unwrap_or(2000);
        stages(routes);
        return;
    }
    let cases: Vec<(usize, usize)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (routes, gateways) = a.split_once('x')?;
            Some((routes.parse().ok()?, gateways.parse().ok()?))
        })
        .collect();
    // `cargo test` runs benchmark binaries without `--bench`, to check they still work: a
    // small case then.
    let cases = if !cases.is_empty() {
        cases
    } else if std::env::args().any(|a| a == "--bench") {
        vec![(200, 10), (2000, 10), (2000, 1)]
    } else {
        vec![(20, 2)]
    };
    // Each case in a process of its own, so its peak memory is its own (the allocator keeps
    // what an earlier case freed).
    let child = std::env::var_os("AIGW_SCALE_CASE").is_some();
    if !child && cases.len() > 1 {
        println!(
            "| routes | Gateways | input | objects out | output | largest object | median time | peak RSS |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        let me = std::env::current_exe().unwrap();
        let bench = std::env::args().any(|a| a == "--bench");
        for (routes, gateways) in cases {
            let mut command = std::process::Command::new(&me);
            command
                .arg(format!("{routes}x{gateways}"))
                .env("AIGW_SCALE_CASE", "1");
            if bench {
                command.arg("--bench");
            }
            if envoy_target() {
                command.arg("--envoy");
            }
            let output = command.output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            print!("{}", String::from_utf8_lossy(&output.stdout));
        }
        return;
    }
    let options = aigw::BuildOptions {
        target: if envoy_target() {
            aigw::Target::Envoy
        } else {
            aigw::Target::Kubernetes
        },
        ..aigw::BuildOptions::default()
    };
    let mut rows = Vec::new();
    for (routes, gateways) in cases {
        let sources = generate(routes, gateways);
        let input_bytes: usize = sources.iter().map(|s| s.text.len()).sum();
        let runs = if !std::env::args().any(|a| a == "--bench") {
            1
        } else if routes >= 10_000 {
            3
        } else if routes >= 2000 {
            5
        } else {
            9
        };
        let mut times = Vec::new();
        let mut peak = 0;
        let mut output_bytes = 0;
        let mut objects = 0;
        let mut largest = 0;
        for _ in 0..runs {
            reset_peak_rss();
            let start = Instant::now();
            let built = aigw::build(&sources, &options).unwrap_or_else(|d| panic!("{}", d[0]));
            let sizes: Vec<usize> = match &built.standalone {
                Some(standalone) => standalone.files.iter().map(|f| f.bytes.len()).collect(),
                None => {
                    let stream = built.stream();
                    output_bytes = stream.len();
                    built.objects.iter().map(|o| o.text.len()).collect()
                }
            };
            times.push(start.elapsed());
            peak = peak.max(peak_rss().unwrap_or(0));
            if built.standalone.is_some() {
                output_bytes = sizes.iter().sum();
            }
            objects = sizes.len();
            largest = sizes.iter().copied().max().unwrap_or(0);
        }
        times.sort();
        let median = times[times.len() / 2];
        rows.push((
            routes,
            gateways,
            input_bytes,
            objects,
            output_bytes,
            largest,
            median,
            peak,
        ));
    }
    if !child {
        println!(
            "| routes | Gateways | input | objects out | output | largest object | median time | peak RSS |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    for (routes, gateways, input, objects, output, largest, median, peak) in &rows {
        println!(
            "| {routes} | {gateways} | {:.1} MiB | {objects} | {:.1} MiB | {:.0} KiB | {} | {:.0} MiB |",
            *input as f64 / 1048576.0,
            *output as f64 / 1048576.0,
            *largest as f64 / 1024.0,
            fmt(*median),
            *peak as f64 / 1048576.0
        );
    }
}

fn fmt(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    }
}
