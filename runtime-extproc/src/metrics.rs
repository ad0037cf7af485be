//! Metrics, with the OpenTelemetry GenAI names and attributes upstream uses, exposed in the
//! Prometheus text format on the admin port (`/metrics`).
//!
//! Model names are label values, and a client chooses the model it sends (a rule may match it by
//! regular expression; a provider may echo it back), so they are bounded: names the configuration
//! mentions (exact model matches, model overrides, declared models) are always kept; any other
//! name becomes a label value only if it is at most [`MAX_MODEL_LABEL_BYTES`] long and one of
//! the first [`MAX_OTHER_MODELS`] such names seen by the process; the rest are counted under
//! [`OTHER_MODEL`]. Whatever clients send, the series and the size of `/metrics` stay bounded.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Attributes of a GenAI measurement (Prometheus labels use `_` for `.`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenAiLabels {
    /// `gen_ai.operation.name`.
    pub gen_ai_operation_name: String,
    /// `gen_ai.provider.name`.
    pub gen_ai_provider_name: String,
    /// `gen_ai.original.model`: as the client asked.
    pub gen_ai_original_model: String,
    /// `gen_ai.request.model`: as sent upstream.
    pub gen_ai_request_model: String,
    /// `gen_ai.response.model`: as the provider answered.
    pub gen_ai_response_model: String,
}

/// Token usage attributes: GenAI attributes plus the token type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// GenAI attributes.
    #[prometheus(flatten)]
    pub gen_ai: GenAiLabels,
    /// `gen_ai.token.type`: input, cached_input, cache_creation_input, output, reasoning.
    pub gen_ai_token_type: &'static str,
}

/// Request duration attributes: GenAI attributes plus the error type (empty on success).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// GenAI attributes.
    #[prometheus(flatten)]
    pub gen_ai: GenAiLabels,
    /// `error.type`: `_OTHER` on failure.
    pub error_type: &'static str,
}

/// Outcome of a configuration reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// A rate-limit descriptor's outcome, per configured limit (the limit's full key comes from
/// the rate-limit configuration, never from a request, so the label set is bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// The limit's full key (`domain.key_value.key`).
    pub limit: String,
    /// `ok`, `over_limit`, `shadow_over_limit` or `uncounted` (the counters were full).
    pub result: &'static str,
}

/// A rate-limit request's answer, per domain (a configured domain, or `unknown`: the label set
/// stays bounded whatever Envoy is configured to send).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitRequestLabels {
    /// The domain.
    pub domain: String,
    /// `ok` or `over_limit`.
    pub code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn token_histogram() -> Histogram {
    // 1, 4, 16, ..., 67108864 (as upstream).
    Histogram::new((0..14).map(|i| 4f64.powi(i)))
}

fn seconds_histogram() -> Histogram {
    // 0.01 s doubling to 81.92 s (as upstream).
    Histogram::new((0..14).map(|i| 0.01 * 2f64.powi(i)))
}

/// Most model names outside the configuration that become label values, per process.
pub const MAX_OTHER_MODELS: usize = 200;
/// Longest model name (in bytes) outside the configuration that becomes a label value.
pub const MAX_MODEL_LABEL_BYTES: usize = 128;
/// The label value of every model name that is not kept.
pub const OTHER_MODEL: &str = "_other";

/// The model names admitted as label values beyond those of the configuration.
#[derive(Default)]
pub struct ModelLabels {
    admitted: Mutex<HashSet<String>>,
}

impl ModelLabels {
    /// The label value for `model`: itself when `known` (the configuration's names) has it or
    /// when it is admitted (short, and among the first [`MAX_OTHER_MODELS`] others), else
    /// [`OTHER_MODEL`].
    pub fn label(&self, known: &HashSet<String>, model: &str) -> String {
        if known.contains(model) {
            return model.to_string();
        }
        if model.len() > MAX_MODEL_LABEL_BYTES {
            return OTHER_MODEL.to_string();
        }
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        if admitted.contains(model) {
            return model.to_string();
        }
        if admitted.len() < MAX_OTHER_MODELS {
            admitted.insert(model.to_string());
            return model.to_string();
        }
        OTHER_MODEL.to_string()
    }
}

/// Every metric of the extproc.
pub struct Metrics {
    registry: Registry,
    /// Bounds the model names used as label values.
    pub models: ModelLabels,
    /// `gen_ai_client_token_usage`.
    pub token_usage: HistogramFamily<TokenLabels>,
    /// `gen_ai_server_request_duration_seconds`.
    pub request_duration: HistogramFamily<DurationLabels>,
    /// `gen_ai_server_time_to_first_token_seconds`.
    pub time_to_first_token: HistogramFamily<GenAiLabels>,
    /// `gen_ai_server_time_per_output_token_seconds`.
    pub time_per_output_token: HistogramFamily<GenAiLabels>,
    /// `aigw_extproc_config_reloads_total`.
    pub reloads: Family<ReloadLabels, Counter>,
    /// `aigw_ratelimit_descriptors_total`.
    pub rate_limits: Family<RateLimitLabels, Counter>,
    /// `aigw_ratelimit_requests_total`.
    pub rate_limit_requests: Family<RateLimitRequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let token_usage = HistogramFamily::<TokenLabels>::new_with_constructor(
            token_histogram as fn() -> Histogram,
        );
        let request_duration = HistogramFamily::<DurationLabels>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let time_to_first_token = HistogramFamily::<GenAiLabels>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let time_per_output_token = HistogramFamily::<GenAiLabels>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        let rate_limits = Family::<RateLimitLabels, Counter>::default();
        let rate_limit_requests = Family::<RateLimitRequestLabels, Counter>::default();
        registry.register(
            "gen_ai_client_token_usage",
            "Number of tokens processed",
            token_usage.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_request_duration",
            "Time spent serving a GenAI request",
            Unit::Seconds,
            request_duration.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time from request to the first streamed output token",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first, for streamed responses",
            Unit::Seconds,
            time_per_output_token.clone(),
        );
        registry.register(
            "aigw_extproc_config_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        registry.register(
            "aigw_ratelimit_descriptors",
            "Rate-limit descriptors answered, by configured limit and result",
            rate_limits.clone(),
        );
        registry.register(
            "aigw_ratelimit_requests",
            "Rate-limit requests answered, by domain and overall code",
            rate_limit_requests.clone(),
        );
        Metrics {
            registry,
            models: ModelLabels::default(),
            token_usage,
            request_duration,
            time_to_first_token,
            time_per_output_token,
            reloads,
            rate_limits,
            rate_limit_requests,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_genai_conventions() {
        let metrics = Metrics::new();
        let labels = GenAiLabels {
            gen_ai_operation_name: "chat".into(),
            gen_ai_provider_name: "openai".into(),
            gen_ai_original_model: "a".into(),
            gen_ai_request_model: "b".into(),
            gen_ai_response_model: "c".into(),
        };
        metrics
            .token_usage
            .get_or_create(&TokenLabels {
                gen_ai: labels.clone(),
                gen_ai_token_type: "input",
            })
            .observe(12.0);
        metrics
            .request_duration
            .get_or_create(&DurationLabels {
                gen_ai: labels,
                error_type: "",
            })
            .observe(0.2);
        let text = metrics.encode();
        assert!(text.contains("gen_ai_client_token_usage_bucket{"), "{text}");
        assert!(text.contains("gen_ai_token_type=\"input\""), "{text}");
        assert!(
            text.contains("gen_ai_server_request_duration_seconds_count{"),
            "{text}"
        );
        assert!(text.contains("gen_ai_original_model=\"a\""), "{text}");
    }

    #[test]
    fn model_labels_are_bounded_in_number_and_length() {
        let labels = ModelLabels::default();
        let known: HashSet<String> = ["configured".to_string(), "x".repeat(300)].into();
        // Configured names are kept whatever their length and however many others came first.
        for i in 0..MAX_OTHER_MODELS {
            assert_eq!(labels.label(&known, &format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(labels.label(&known, "one-too-many"), OTHER_MODEL);
        assert_eq!(labels.label(&known, "m7"), "m7", "admitted names stay");
        assert_eq!(labels.label(&known, "configured"), "configured");
        assert_eq!(labels.label(&known, &"x".repeat(300)), "x".repeat(300));
        let fresh = ModelLabels::default();
        assert_eq!(fresh.label(&known, &"y".repeat(129)), OTHER_MODEL);
        assert_eq!(fresh.label(&known, &"y".repeat(128)), "y".repeat(128));
    }
}
