//! OpenAI chat completions and embeddings to and from GCP Vertex AI Gemini.
