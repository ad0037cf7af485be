//! What a response costs and measures: token usage into costs (dynamic metadata for Envoy's
//! rate limits) and into the GenAI metrics, once, when the response ends.

use std::collections::BTreeMap;

use envoy_types::pb::google::protobuf::Struct;

use crate::costs::{self, CostInput};
use crate::endpoint::Endpoint;
use crate::metrics::{DurationLabels, GenAiLabels, TokenLabels};
use crate::usage::TokenUsage;

use super::Processor;
use super::metadata::{metadata_struct, number_value, string_value};

impl Processor {
    /// The costs of the usage a stream has reported so far, when it changed with this chunk.
    /// Envoy charges response costs when the stream ends, from the metadata it has by then: a
    /// client that hangs up after the usage event (the openai SDK closes the connection at
    /// `[DONE]`, before the provider's stream ends) is charged all the same.
    pub(super) fn interim_costs(&mut self) -> Option<Struct> {
        if !(200..300).contains(&self.response.status) {
            return None;
        }
        let usage = match &self.response.translator {
            Some(translator) => translator.usage(),
            None => self.response.stream.usage,
        };
        if usage == self.response.charged {
            return None;
        }
        self.response.charged = usage;
        // Errors are logged once, when the stream ends.
        let (values, _) = self.costs(usage)?;
        if values.is_empty() {
            return None;
        }
        let fields = values
            .into_iter()
            .map(|(key, value)| (key, number_value(value as f64)))
            .collect();
        Some(metadata_struct(fields))
    }

    /// The costs of `usage` for the selected route and backend, with the errors of the
    /// expressions that could not be evaluated.
    pub(super) fn costs(&self, usage: TokenUsage) -> Option<(BTreeMap<String, u64>, Vec<String>)> {
        let selection = self.selection.as_ref()?;
        let route = self.config.routes.get(selection.route)?;
        let input = CostInput {
            model: &selection.request_model,
            backend: &selection.backend.spec.name,
            service_backend: &selection.backend.spec.service_backend,
            route: &route.name,
            usage,
        };
        Some(costs::compute(&self.config, route, &input))
    }

    /// End of the response: costs into metadata, measurements into metrics. Runs once.
    pub(super) fn finish(&mut self) -> Option<Struct> {
        if self.response.finished {
            return None;
        }
        self.response.finished = true;
        let selection = self.selection.as_ref()?;
        let config = self.config.clone();
        let route = config.routes.get(selection.route)?;
        let ok = (200..300).contains(&self.response.status);
        let (usage, response_model) = if let Some(translator) = &self.response.translator {
            (translator.usage(), translator.model())
        } else if self.response.streaming {
            (
                self.response.stream.usage,
                self.response.stream.model.clone(),
            )
        } else if let Some((usage, model)) = &self.response.translated {
            (*usage, model.clone())
        } else {
            (TokenUsage::default(), None)
        };
        let response_model = response_model.unwrap_or_else(|| selection.request_model.clone());
        // Model names are bounded as label values (see `metrics`): a client picks them.
        let models = &self.metrics.models;
        let known = &config.known_models;
        let labels = GenAiLabels {
            gen_ai_operation_name: self
                .endpoint
                .map(Endpoint::operation)
                .unwrap_or("chat")
                .to_string(),
            gen_ai_provider_name: selection
                .backend
                .spec
                .schema
                .name
                .gen_ai_provider_name()
                .to_string(),
            gen_ai_original_model: models.label(known, &selection.original_model),
            gen_ai_request_model: models.label(known, &selection.request_model),
            gen_ai_response_model: models.label(known, &response_model),
        };
        self.record(&labels, &usage, ok);
        let mut fields = BTreeMap::new();
        fields.insert("response_model".to_string(), string_value(&response_model));
        if let Some((values, errors)) = ok.then(|| self.costs(usage)).flatten() {
            for error in errors {
                tracing::warn!(route = %route.name, "{error}");
            }
            for (key, value) in values {
                fields.insert(key, number_value(value as f64));
            }
        }
        if let (true, Some(first)) = (self.response.streaming, self.response.first_chunk) {
            let ttft = first.duration_since(self.started);
            fields.insert(
                "token_latency_ttft".to_string(),
                number_value(ttft.as_secs_f64() * 1000.0),
            );
            let events = self.response.stream.events;
            if events > 1 {
                let itl = first.elapsed().as_secs_f64() / (events - 1) as f64;
                fields.insert("token_latency_itl".to_string(), number_value(itl * 1000.0));
            }
        }
        Some(metadata_struct(fields))
    }

    pub(super) fn record(&self, labels: &GenAiLabels, usage: &TokenUsage, ok: bool) {
        let m = &self.metrics;
        for (kind, value) in [
            ("input", usage.input),
            ("cached_input", usage.cached_input),
            ("cache_creation_input", usage.cache_creation_input),
            ("output", usage.output),
            ("reasoning", usage.reasoning),
        ] {
            if let Some(value) = value {
                m.token_usage
                    .get_or_create(&TokenLabels {
                        gen_ai: labels.clone(),
                        gen_ai_token_type: kind,
                    })
                    .observe(value as f64);
            }
        }
        m.request_duration
            .get_or_create(&DurationLabels {
                gen_ai: labels.clone(),
                error_type: if ok { "" } else { "_OTHER" },
            })
            .observe(self.started.elapsed().as_secs_f64());
        if let (true, Some(first)) = (self.response.streaming, self.response.first_chunk) {
            m.time_to_first_token
                .get_or_create(labels)
                .observe(first.duration_since(self.started).as_secs_f64());
            let outputs = usage.output.unwrap_or(self.response.stream.events);
            if outputs > 1 {
                let per_token = first.elapsed().as_secs_f64() / (outputs - 1) as f64;
                m.time_per_output_token
                    .get_or_create(labels)
                    .observe(per_token);
            }
        }
    }
}
