"""`llmkube run`: the manifests the operator reconciles, executed on this machine without
Kubernetes: the same validation, the same run configs, the same runtime entrypoints."""
