//! Cohere rerank.
