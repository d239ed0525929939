"""Gateway service: one OpenAI-compatible door to every chat and embedding model."""
