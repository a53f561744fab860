"""A run's settings as flat `path → value` pairs, for the compare page. Both sources flatten the
run config (the cluster source builds it from the job, as the operator does), so runs compare
alike wherever they ran."""

from typing import Any

from llmkube.api.runconfig import TrainingRunConfig

COMPARED_SECTIONS = ("model", "pretrained", "training", "evaluation", "scaling")


def hyperparameters(config: TrainingRunConfig) -> dict[str, str]:
    dumped = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    flat: dict[str, str] = {}
    for section in COMPARED_SECTIONS:
        if section in dumped:
            _flatten(section, dumped[section], flat)
    return flat


def _flatten(path: str, value: Any, into: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{path}.{key}", inner, into)
    elif isinstance(value, list):
        into[path] = ", ".join(str(item) for item in value)
    elif isinstance(value, float):
        into[path] = f"{value:.6g}"  # 3e-05, not 2.9999999999999997e-05
    else:
        into[path] = str(value)
