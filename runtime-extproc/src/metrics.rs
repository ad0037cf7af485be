//! Metrics, with the OpenTelemetry GenAI names and attributes upstream uses, exposed in the
//! Prometheus text format on the admin port (`/metrics`).

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

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn token_histogram() -> Histogram {
    // 1, 4, 16, ..., 67108864 (as upstream).
    Histogram::new((0..14).map(|i| 4f64.powi(i)))
}

fn seconds_histogram() -> Histogram {
    // 0.01 s doubling to 81.92 s (as upstream).
    Histogram::new((0..14).map(|i| 0.01 * 2f64.powi(i)))
}

/// Every metric of the extproc.
pub struct Metrics {
    registry: Registry,
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
        Metrics {
            registry,
            token_usage,
            request_duration,
            time_to_first_token,
            time_per_output_token,
            reloads,
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
}
