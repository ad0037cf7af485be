//! Robustness of every translator the extproc can select: whatever a client sends and whatever
//! a provider answers, translation returns a value or an error and never panics.
//!
//! Inputs are the translators' own fixtures (requests, responses, streams in SSE and AWS
//! event-stream framing), mutated at random with a fixed seed: JSON nodes replaced by values of
//! other types, bytes flipped, streams cut at random points and fed in random pieces, plus
//! pure noise. A panic names the pair, the input kind and the seed of the case.
//! `AIGW_FUZZ_MUTATIONS=2000 cargo test -p aigw-extproc --release --test robustness` searches
//! longer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use aigw_extproc::endpoint::Endpoint;
use aigw_extproc::testing::event_frame;
use aigw_extproc::translate::{self, RequestContext, ResponseContext, Translator};
use aigw_filterconfig::{ApiSchema, BackendSchema};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Mutated variants per seed input: 80, or `AIGW_FUZZ_MUTATIONS` for a longer search.
fn mutations() -> usize {
    std::env::var("AIGW_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80)
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn files(extension: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, extension, out);
            } else if path.extension().is_some_and(|e| e == extension) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&fixtures_dir(), extension, &mut out);
    out.sort();
    out
}

/// Every JSON fixture: requests and responses of every provider.
fn json_seeds() -> Vec<Value> {
    let mut seeds: Vec<Value> = files("json")
        .iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "sigv4"))
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).ok())
        .collect();
    // Cohere rerank, which has no fixture files.
    seeds.push(json!({"model": "rerank-v3.5", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1}));
    seeds.push(json!({"id": "r", "results": [{"index": 1, "relevance_score": 0.9}], "meta": {"tokens": {"input_tokens": 12}}}));
    seeds
}

/// Streams in every framing the translators read.
fn stream_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = files("sse")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for events in files("jsonl") {
        let text = std::fs::read_to_string(events).unwrap();
        // Anthropic events inside Bedrock `chunk` frames.
        seeds.push(
            text.lines()
                .flat_map(|line| {
                    let bytes = base64::engine::general_purpose::STANDARD.encode(line);
                    event_frame("chunk", json!({"bytes": bytes}).to_string().as_bytes())
                })
                .collect(),
        );
    }
    let converse = [
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "hi"}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 2, "delta": {"reasoningContent": {"text": "hmm", "signature": "s"}}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 1})),
        ("messageStop", json!({"stopReason": "tool_use"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}}),
        ),
    ];
    seeds.push(
        converse
            .iter()
            .flat_map(|(event, payload)| event_frame(event, payload.to_string().as_bytes()))
            .collect(),
    );
    seeds
}

fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(..if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e300 * if rng.bool() { -1.0 } else { 1.0 }),
        4 => Value::String(
            [
                "",
                "user",
                "assistant",
                "tool",
                "system",
                "text",
                "image_url",
                "tool_use",
                "data:image/png;base64,@@",
                "ünï",
                "{",
                "auto",
                "required",
            ][rng.usize(..13)]
            .to_string(),
        ),
        5 => Value::Array(
            (0..rng.usize(..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "role",
                "content",
                "type",
                "text",
                "messages",
                "tools",
                "function",
                "name",
                "arguments",
                "input",
                "tool_calls",
                "parameters",
                "model",
                "usage",
                "delta",
            ];
            let mut map = Map::new();
            for _ in 0..rng.usize(..4) {
                map.insert(
                    keys[rng.usize(..keys.len())].to_string(),
                    random_value(rng, depth + 1),
                );
            }
            Value::Object(map)
        }
    }
}

/// Replaces one node of `value`, chosen at random, with a random value.
fn mutate(value: &mut Value, rng: &mut fastrand::Rng) {
    let mut node = value;
    loop {
        let children = match node {
            Value::Array(items) if !items.is_empty() => items.len(),
            Value::Object(map) if !map.is_empty() => map.len(),
            _ => 0,
        };
        if children == 0 || rng.u8(..4) == 0 {
            *node = random_value(rng, 0);
            return;
        }
        let pick = rng.usize(..children);
        node = match node {
            Value::Array(items) => &mut items[pick],
            Value::Object(map) => map.values_mut().nth(pick).unwrap(),
            _ => unreachable!("has children"),
        };
    }
}

fn damage(bytes: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match rng.u8(..4) {
        0 if !out.is_empty() => {
            let cut = rng.usize(..out.len());
            out.truncate(cut);
        }
        1 => {
            for _ in 0..rng.usize(1..8) {
                if !out.is_empty() {
                    let at = rng.usize(..out.len());
                    out[at] = rng.u8(..);
                }
            }
        }
        2 => out.extend((0..rng.usize(..64)).map(|_| rng.u8(..))),
        _ => out = (0..rng.usize(..256)).map(|_| rng.u8(..)).collect(),
    }
    out
}

fn translators() -> Vec<(String, Box<dyn Translator>, BackendSchema, Endpoint)> {
    let mut out = Vec::new();
    // Every endpoint and every schema: each pair that has a translator is fuzzed, so a new
    // provider or endpoint is covered without touching this file.
    for endpoint in Endpoint::ALL {
        for name in ApiSchema::ALL {
            for version in [None, Some("v2")] {
                let schema = BackendSchema {
                    name,
                    version: version.map(str::to_string),
                    prefix: None,
                };
                if let Ok(Some(translator)) = translate::select(&schema, endpoint) {
                    out.push((
                        format!("{endpoint:?} -> {name:?} (version {version:?})"),
                        translator,
                        schema,
                        endpoint,
                    ));
                }
            }
        }
    }
    out
}

fn guarded<T>(what: &str, seed: u64, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(_) => panic!("{what} panicked (case seed {seed})"),
    }
}

#[test]
fn every_pair_is_covered() {
    let pairs = translators();
    // chat x 5 translated schemas (OpenAI and Azure pass through), embeddings x 2, messages
    // x 5, rerank x 1, count_tokens x 4 (Anthropic, GCP and AWS Anthropic, Bedrock); each with
    // and without a version.
    assert_eq!(
        pairs.len(),
        (5 + 2 + 5 + 1 + 4) * 2,
        "{:?}",
        pairs.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
}

#[test]
fn requests_never_panic() {
    let seeds = json_seeds();
    assert!(seeds.len() > 50, "fixtures not found");
    let mut rng = fastrand::Rng::with_seed(0x5eed_0001);
    for (name, mut translator, schema, endpoint) in translators() {
        let model = match (endpoint, schema.name) {
            (Endpoint::Embeddings, ApiSchema::AWSBedrock) => "amazon.titan-embed-text-v2:0",
            (Endpoint::Embeddings, _) => "text-embedding-005",
            _ => "model:1/x",
        };
        let mut accepted = 0;
        for seed_value in &seeds {
            for stream in [false, true] {
                let ctx = RequestContext {
                    model,
                    stream,
                    headers: &[("anthropic-beta".into(), "a, b".into())],
                };
                if guarded(&format!("{name} request"), 0, || {
                    translator.request(seed_value, &ctx)
                })
                .is_ok()
                {
                    accepted += 1;
                }
                for _ in 0..mutations() / 4 {
                    let case = rng.u64(..);
                    let mut value = seed_value.clone();
                    let mut case_rng = fastrand::Rng::with_seed(case);
                    for _ in 0..case_rng.usize(1..4) {
                        mutate(&mut value, &mut case_rng);
                    }
                    let _ = guarded(&format!("{name} request"), case, || {
                        translator.request(&value, &ctx)
                    });
                }
            }
        }
        // The fixtures hold valid requests for every client API: the run reached the
        // translators' full paths, not only their first check.
        if matches!(endpoint, Endpoint::Messages | Endpoint::MessagesCountTokens)
            && schema.name == ApiSchema::GCPAnthropic
            && schema.version.is_none()
        {
            // Claude on Vertex needs the configured anthropic_version: always 422 without it.
            assert_eq!(accepted, 0, "{name}");
        } else {
            assert!(accepted > 0, "{name}: no fixture request was accepted");
        }
    }
}

#[test]
fn responses_and_errors_never_panic() {
    let seeds: Vec<Vec<u8>> = json_seeds()
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect();
    let mut rng = fastrand::Rng::with_seed(0x5eed_0002);
    let headers = vec![
        ("x-amzn-requestid".to_string(), "r".to_string()),
        (
            "x-amzn-errortype".to_string(),
            "ValidationException:x".to_string(),
        ),
    ];
    for (name, translator, _, _) in translators() {
        let ctx = ResponseContext {
            model: "m",
            headers: &headers,
        };
        for seed in &seeds {
            for _ in 0..mutations() / 8 {
                let case = rng.u64(..);
                let mut case_rng = fastrand::Rng::with_seed(case);
                let bytes = if case_rng.bool() {
                    let mut value: Value = serde_json::from_slice(seed).unwrap();
                    mutate(&mut value, &mut case_rng);
                    value.to_string().into_bytes()
                } else {
                    damage(seed, &mut case_rng)
                };
                let _ = guarded(&format!("{name} response"), case, || {
                    translator.response(&bytes, &ctx)
                });
                let status =
                    [400, 401, 403, 404, 413, 422, 429, 500, 503, 529, 599][case_rng.usize(..11)];
                let out = guarded(&format!("{name} error"), case, || {
                    translator.error(status, &bytes, &ctx)
                });
                assert!(
                    serde_json::from_slice::<Value>(&out).is_ok_and(|v| v.is_object()),
                    "{name}: error answer is not a JSON object (case seed {case})"
                );
            }
        }
    }
}

#[test]
fn streams_never_panic_whatever_the_bytes_and_the_cuts() {
    let seeds = stream_seeds();
    let mut rng = fastrand::Rng::with_seed(0x5eed_0003);
    let headers = vec![("x-amzn-requestid".to_string(), "r".to_string())];
    for (name, translator, _, _) in translators() {
        let ctx = ResponseContext {
            model: "m",
            headers: &headers,
        };
        let mut produced = 0;
        for seed in &seeds {
            for round in 0..mutations() / 4 {
                let case = rng.u64(..);
                let mut case_rng = fastrand::Rng::with_seed(case);
                // First round: the stream intact, in random pieces.
                let bytes = if round == 0 {
                    seed.clone()
                } else {
                    damage(seed, &mut case_rng)
                };
                produced += guarded(&format!("{name} stream"), case, || {
                    let mut stream = translator.stream(&ctx);
                    let mut rest = bytes.as_slice();
                    let mut out = 0;
                    while !rest.is_empty() {
                        let take = case_rng.usize(1..=rest.len().min(97));
                        let (piece, tail) = rest.split_at(take);
                        out += stream.feed(piece).map_or(0, |b| b.len());
                        rest = tail;
                    }
                    out += stream.finish().map_or(0, |b| b.len());
                    let _ = stream.usage();
                    let _ = stream.model();
                    out
                });
            }
        }
        assert!(produced > 0, "{name}: no stream produced any output");
    }
}
