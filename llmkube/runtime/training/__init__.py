"""The Ray Train loop and what it needs: optimizer and schedule, checkpoints, evaluation and
progress reporting. `llmkube.runtime.train` is the entrypoint that drives it."""
