//! Token usage: read from OpenAI-shaped responses, buffered or streamed as server-sent events.

use serde_json::{Map, Value, json};

/// Token counts of one response. `None`: the provider did not report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Input (prompt) tokens.
    pub input: Option<u64>,
    /// Cached input tokens.
    pub cached_input: Option<u64>,
    /// Input tokens written to the cache.
    pub cache_creation_input: Option<u64>,
    /// Output (completion) tokens.
    pub output: Option<u64>,
    /// Total tokens.
    pub total: Option<u64>,
    /// Reasoning tokens.
    pub reasoning: Option<u64>,
}

/// The sum of the counts a provider reported: `None` when it reported none of them, else the
/// sum of those it did (saturating).
pub fn reported_sum(counts: &[Option<u64>]) -> Option<u64> {
    counts
        .iter()
        .flatten()
        .fold(None, |sum, n| Some(sum.unwrap_or(0).saturating_add(*n)))
}

fn number(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

impl TokenUsage {
    /// Reads an OpenAI `usage` object (chat, completions, embeddings, responses).
    pub fn from_openai(usage: &Value) -> TokenUsage {
        let input = number(usage, "/prompt_tokens").or_else(|| number(usage, "/input_tokens"));
        let output =
            number(usage, "/completion_tokens").or_else(|| number(usage, "/output_tokens"));
        TokenUsage {
            input,
            cached_input: number(usage, "/prompt_tokens_details/cached_tokens")
                .or_else(|| number(usage, "/input_tokens_details/cached_tokens")),
            cache_creation_input: number(usage, "/prompt_tokens_details/cache_creation_tokens"),
            output,
            total: number(usage, "/total_tokens").or(match (input, output) {
                (Some(i), Some(o)) => Some(i.saturating_add(o)),
                _ => None,
            }),
            reasoning: number(usage, "/completion_tokens_details/reasoning_tokens")
                .or_else(|| number(usage, "/output_tokens_details/reasoning_tokens")),
        }
    }
}

impl TokenUsage {
    /// The OpenAI `usage` object, the one mapping every translator answering in OpenAI's shape
    /// uses: `total_tokens` is the reported total, else input + output;
    /// `prompt_tokens_details` carries the cache counts the provider reported and
    /// `completion_tokens_details` the reasoning count; counts not reported are 0 at the top
    /// and left out of the details.
    pub fn to_openai(&self) -> Value {
        let prompt = self.input.unwrap_or(0);
        let completion = self.output.unwrap_or(0);
        let mut out = json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": self.total.unwrap_or(prompt.saturating_add(completion)),
        });
        let mut details = Map::new();
        if let Some(cached) = self.cached_input {
            details.insert("cached_tokens".into(), json!(cached));
        }
        if let Some(created) = self.cache_creation_input {
            details.insert("cache_creation_tokens".into(), json!(created));
        }
        if !details.is_empty() {
            out["prompt_tokens_details"] = Value::Object(details);
        }
        if let Some(reasoning) = self.reasoning {
            out["completion_tokens_details"] = json!({ "reasoning_tokens": reasoning });
        }
        out
    }

    /// The Anthropic `usage` object, the one mapping every translator answering in Anthropic's
    /// shape uses: `input_tokens` counts only what was neither read from nor written to the
    /// cache, so that input + cache reads + cache writes is OpenAI's `prompt_tokens`; the cache
    /// counts are there when the provider reported them.
    pub fn to_anthropic(&self) -> Value {
        let cached = self.cached_input.unwrap_or(0);
        let created = self.cache_creation_input.unwrap_or(0);
        let mut out = json!({
            "input_tokens": self.input.unwrap_or(0).saturating_sub(cached).saturating_sub(created),
            "output_tokens": self.output.unwrap_or(0),
        });
        if let Some(created) = self.cache_creation_input {
            out["cache_creation_input_tokens"] = json!(created);
        }
        if let Some(cached) = self.cached_input {
            out["cache_read_input_tokens"] = json!(cached);
        }
        out
    }
}

/// Reads usage and model from a buffered OpenAI response body.
pub fn from_body(body: &[u8]) -> (TokenUsage, Option<String>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (TokenUsage::default(), None);
    };
    from_value(&value)
}

/// Usage and model of an OpenAI-shaped response already parsed.
pub fn from_value(value: &Value) -> (TokenUsage, Option<String>) {
    let usage = value
        .get("usage")
        .filter(|u| u.is_object())
        .map(TokenUsage::from_openai)
        .unwrap_or_default();
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    (usage, model)
}

/// Incremental reader of an OpenAI event stream: feed chunks as they pass; the last event
/// carrying `usage` wins. Only the unfinished last line is kept between chunks.
#[derive(Debug, Default)]
pub struct StreamUsage {
    pending: Vec<u8>,
    /// Usage seen so far.
    pub usage: TokenUsage,
    /// Model reported by the stream.
    pub model: Option<String>,
    /// Events with content seen (for time per output token).
    pub events: u64,
}

/// Lines longer than this are not parsed (they still pass through untouched).
const MAX_LINE: usize = 4 * 1024 * 1024;

impl StreamUsage {
    /// Consumes one chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        // Only the new bytes are searched for line ends: a long line arriving in small chunks
        // costs its length, not its length times the number of chunks.
        let mut rest = chunk;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&rest[..at]);
            let line = std::mem::take(&mut self.pending);
            self.line(&line);
            rest = &rest[at + 1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_LINE {
            self.pending.clear();
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" || data.is_empty() {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if let Some(model) = event.get("model").and_then(Value::as_str) {
            self.model = Some(model.to_string());
        }
        if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
            self.usage = TokenUsage::from_openai(usage);
        }
        if event.pointer("/choices/0").is_some() {
            self.events += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_sums() {
        assert_eq!(reported_sum(&[None, None]), None);
        assert_eq!(reported_sum(&[None, Some(0)]), Some(0));
        assert_eq!(reported_sum(&[Some(2), None, Some(3)]), Some(5));
        assert_eq!(reported_sum(&[Some(u64::MAX), Some(1)]), Some(u64::MAX));
    }

    #[test]
    fn buffered_usage() {
        let body = br#"{"model":"gpt-4o-2024","usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":3}}}"#;
        let (usage, model) = from_body(body);
        assert_eq!(
            usage,
            TokenUsage {
                input: Some(10),
                cached_input: Some(2),
                cache_creation_input: None,
                output: Some(5),
                total: Some(15),
                reasoning: Some(3)
            }
        );
        assert_eq!(model.as_deref(), Some("gpt-4o-2024"));
    }

    #[test]
    fn stream_usage_across_split_chunks() {
        let stream = "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\ndata: [DONE]\n\n";
        for split in [1, 7, 50, stream.len()] {
            let mut reader = StreamUsage::default();
            for chunk in stream.as_bytes().chunks(split) {
                reader.feed(chunk);
            }
            assert_eq!(reader.usage.total, Some(10), "split {split}");
            assert_eq!(reader.usage.input, Some(7));
            assert_eq!(reader.model.as_deref(), Some("m"));
            assert_eq!(reader.events, 1);
        }
    }

    #[test]
    fn absurd_counts_saturate() {
        let body = format!(
            r#"{{"usage":{{"prompt_tokens":{max},"completion_tokens":{max}}}}}"#,
            max = u64::MAX
        );
        let (usage, _) = from_body(body.as_bytes());
        assert_eq!(usage.total, Some(u64::MAX));
    }

    #[test]
    fn a_long_line_in_small_chunks_is_read_in_linear_time() {
        // Each chunk used to rescan everything pending: 1 MiB in 1-byte chunks took minutes.
        let padding = "x".repeat(1024 * 1024);
        let stream = format!(
            "data: {{\"pad\":\"{padding}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2}}}}\n\n"
        );
        let started = std::time::Instant::now();
        let mut reader = StreamUsage::default();
        for byte in stream.as_bytes().chunks(1) {
            reader.feed(byte);
        }
        assert_eq!(reader.usage.total, Some(3));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
