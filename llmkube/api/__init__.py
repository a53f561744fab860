"""Typed models of llmkube's custom resources and of the run config the runtime executes.

Imports nothing but pydantic, so the operator, the runtime and the CLI share one definition.
"""

from llmkube.api.base import API_GROUP, API_VERSION, GROUP_VERSION
from llmkube.api.deployment import LLMDeployment, LLMDeploymentSpec, LLMDeploymentStatus
from llmkube.api.training import LLMTrainingJob, LLMTrainingJobSpec, LLMTrainingJobStatus
from llmkube.api.tuning import LLMTuningJob, LLMTuningJobSpec, LLMTuningJobStatus

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "LLMDeployment",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
    "LLMTrainingJob",
    "LLMTrainingJobSpec",
    "LLMTrainingJobStatus",
    "LLMTuningJob",
    "LLMTuningJobSpec",
    "LLMTuningJobStatus",
]
