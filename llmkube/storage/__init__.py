"""llmkube.storage."""
