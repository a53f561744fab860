"""llmkube.runtime: training and serving, in the Ray pods and under `llmkube run`."""
