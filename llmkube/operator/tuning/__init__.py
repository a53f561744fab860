"""LLMTuningJob: a hyperparameter search run by one RayJob."""
