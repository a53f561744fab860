"""llmkube.operator."""
