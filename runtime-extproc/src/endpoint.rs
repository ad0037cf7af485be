//! The AI endpoints the extproc serves, recognised by request path.

/// An endpoint and what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/responses`.
    Responses,
    /// `/v1/responses/input_tokens`: the input token count of a Responses request.
    ResponsesInputTokens,
    /// `/tokenize`: vLLM's tokenizer endpoint.
    Tokenize,
    /// `/v1/images/generations`.
    ImageGenerations,
    /// `/v1/audio/speech`.
    AudioSpeech,
    /// `/v1/models`: answered by the extproc.
    Models,
    /// `/anthropic/v1/models`: answered by the extproc, Anthropic shape.
    AnthropicModels,
    /// `/anthropic/v1/messages`: the Anthropic Messages API.
    Messages,
    /// `/anthropic/v1/messages/count_tokens`: Anthropic's token counting.
    MessagesCountTokens,
    /// `/v1/audio/transcriptions` (multipart).
    AudioTranscriptions,
    /// `/v1/audio/translations` (multipart).
    AudioTranslations,
    /// `/cohere/v2/rerank`: Cohere's rerank API.
    Rerank,
}

impl Endpoint {
    /// Every endpoint, in declaration order.
    pub const ALL: [Endpoint; 15] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::ResponsesInputTokens,
        Endpoint::Tokenize,
        Endpoint::ImageGenerations,
        Endpoint::AudioSpeech,
        Endpoint::Models,
        Endpoint::AnthropicModels,
        Endpoint::Messages,
        Endpoint::MessagesCountTokens,
        Endpoint::AudioTranscriptions,
        Endpoint::AudioTranslations,
        Endpoint::Rerank,
    ];

    /// Recognises a path (the query string is ignored).
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let path = path.split('?').next().unwrap_or(path);
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    /// The path after the API prefix (`chat/completions`), for endpoints that are forwarded.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::ResponsesInputTokens => "responses/input_tokens",
            Endpoint::Tokenize => "tokenize",
            Endpoint::ImageGenerations => "images/generations",
            Endpoint::AudioSpeech => "audio/speech",
            Endpoint::Models | Endpoint::AnthropicModels => "models",
            Endpoint::Messages => "messages",
            Endpoint::MessagesCountTokens => "messages/count_tokens",
            Endpoint::AudioTranscriptions => "audio/transcriptions",
            Endpoint::AudioTranslations => "audio/translations",
            Endpoint::Rerank => "rerank",
        }
    }

    /// The client-facing path of the endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::ResponsesInputTokens => "/v1/responses/input_tokens",
            Endpoint::Tokenize => "/tokenize",
            Endpoint::ImageGenerations => "/v1/images/generations",
            Endpoint::AudioSpeech => "/v1/audio/speech",
            Endpoint::Models => "/v1/models",
            Endpoint::AnthropicModels => "/anthropic/v1/models",
            Endpoint::Messages => "/anthropic/v1/messages",
            Endpoint::MessagesCountTokens => "/anthropic/v1/messages/count_tokens",
            Endpoint::AudioTranscriptions => "/v1/audio/transcriptions",
            Endpoint::AudioTranslations => "/v1/audio/translations",
            Endpoint::Rerank => "/cohere/v2/rerank",
        }
    }

    /// True for the OpenAI API endpoints (which OpenAI-compatible backends serve as they are).
    pub fn openai_compatible(self) -> bool {
        !matches!(
            self,
            Endpoint::Messages
                | Endpoint::MessagesCountTokens
                | Endpoint::Rerank
                | Endpoint::AnthropicModels
        )
    }

    /// True when errors go back in Anthropic's shape rather than OpenAI's.
    pub fn anthropic_errors(self) -> bool {
        matches!(
            self,
            Endpoint::Messages | Endpoint::MessagesCountTokens | Endpoint::AnthropicModels
        )
    }

    /// True for the endpoints whose body is `multipart/form-data` (audio uploads).
    pub fn multipart(self) -> bool {
        matches!(
            self,
            Endpoint::AudioTranscriptions | Endpoint::AudioTranslations
        )
    }

    /// `gen_ai.operation.name` of the endpoint (as upstream).
    pub fn operation(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completion",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::ResponsesInputTokens => "responses_input_tokens",
            Endpoint::Tokenize => "tokenize",
            Endpoint::ImageGenerations => "image_generation",
            Endpoint::AudioSpeech => "speech",
            Endpoint::Models | Endpoint::AnthropicModels => "models",
            Endpoint::Messages => "messages",
            Endpoint::MessagesCountTokens => "count_tokens",
            Endpoint::AudioTranscriptions => "transcription",
            Endpoint::AudioTranslations => "translation",
            Endpoint::Rerank => "rerank",
        }
    }

    /// True for endpoints whose successful answer is always a JSON object (audio answers are
    /// audio, or text in the format the client asked for).
    pub fn answers_json(self) -> bool {
        !matches!(
            self,
            Endpoint::AudioSpeech | Endpoint::AudioTranscriptions | Endpoint::AudioTranslations
        )
    }

    /// True for endpoints the extproc answers itself.
    pub fn is_local(self) -> bool {
        matches!(self, Endpoint::Models | Endpoint::AnthropicModels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each endpoint is recognised by its own path, and sits under one of the AI path prefixes
    /// the compiler routes to the extproc (else its requests would never arrive).
    #[test]
    fn every_endpoint_is_found_by_its_path_under_an_ai_prefix() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(endpoint.path()), Some(endpoint));
            let path = endpoint.path();
            assert!(
                aigw_filterconfig::AI_PATH_PREFIXES
                    .iter()
                    .any(|p| path == *p
                        || path
                            .strip_prefix(p)
                            .is_some_and(|rest| rest.starts_with('/'))),
                "{path} is under no AI path prefix"
            );
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            Endpoint::from_path("/v1/chat/completions?x=1"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(Endpoint::from_path("/v1/chat/completions/"), None);
        assert_eq!(Endpoint::from_path("/v2/chat/completions"), None);
        assert_eq!(Endpoint::ChatCompletions.operation(), "chat");
    }
}
