"""The `llmkube` command."""
