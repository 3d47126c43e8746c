"""Models: providers (`openai_api`, `llamacpp`) found through `registry`, behind one wrapper (`model.Model`)
that owns the response cache (`cache`), retries, concurrency, `n` batching, usage and cost."""
