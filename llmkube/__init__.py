"""llmkube: train and serve language models on Kubernetes from two custom resources."""

import os

__version__ = "0.1.0"

OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
"""Set on import, before any Hugging Face library can be imported through llmkube: models come
from object storage only, and a file missing from a local model folder fails loudly instead of
reaching for a model hub."""
for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
