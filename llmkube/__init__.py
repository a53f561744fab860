"""llmkube: train and serve language models on Kubernetes from two custom resources."""

__version__ = "0.1.0"
