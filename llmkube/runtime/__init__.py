"""llmkube.runtime."""
