"""Serving: the continuous-batching engine, the OpenAI-compatible HTTP API and its metrics.
`llmkube.runtime.serve` puts them into a Ray Serve application."""
