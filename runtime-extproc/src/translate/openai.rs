//! The Anthropic Messages API served by OpenAI-compatible chat completions backends.
