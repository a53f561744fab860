"""Every shape of RayJob the builders produce is accepted by the real KubeRay v1.5.0 CRD."""

import json
from typing import Any

import pytest

from llmkube.api import LLMTrainingJob
from llmkube.api.runconfig import training_run_config
from llmkube.operator.training.builders import build_rayjob, build_run_configmap
from llmkube.testing.controlplane import ControlPlane

SPECS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cpu-only": {"resources": {"gpusPerWorker": 0, "workers": 2}},
    "big-gpu-pool": {
        "resources": {
            "workers": 16,
            "gpusPerWorker": 8,
            "cpusPerWorker": 96,
            "memoryPerWorker": "1800Gi",
            "head": {"cpus": 8, "memory": "64Gi"},
            "nodePool": {
                "accelerator": "NVIDIA-H100-80GB-HBM3",
                "nodeSelector": {"pool": "h100"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {
                        "key": "spot",
                        "operator": "Equal",
                        "value": "true",
                        "effect": "NoExecute",
                        "tolerationSeconds": 600,
                    },
                ],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "zone", "operator": "In", "values": ["a", "b"]}
                                    ]
                                }
                            ]
                        }
                    }
                },
            },
        }
    },
    "pretrained-lora": {
        "model": {
            "pretrained": {"uri": "s3://models/smollm2-135m-instruct/"},
            "overrides": {"contextLength": 512},
        },
        "finetune": {
            "method": "lora",
            "lora": {"rank": 16, "targetModules": ["q_proj", "v_proj"]},
            "mergeOnPublish": True,
        },
        "dataset": {"source": "s3://datasets/chat/", "format": "chat"},
        "training": {"maxSteps": 100, "gradientCheckpointing": True},
    },
    "controls": {"suspend": True, "activeDeadlineSeconds": 86400, "backoffLimit": 0},
    "credentials-and-image": {
        "image": "registry.example.internal/llmkube/runtime:1.2.3",
        "storage": {"credentialsSecret": {"name": "s3", "accessKeyIdKey": "user"}},
    },
}


def job(name: str, namespace: str, spec: dict[str, Any]) -> LLMTrainingJob:
    return LLMTrainingJob.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": "0000-1111"},
            "spec": {
                "dataset": {"source": "s3://datasets/text/"},
                "training": {"maxSteps": 1000},
                "output": "s3://models/out/",
                **spec,
            },
        }
    )


@pytest.mark.parametrize("case", sorted(SPECS))
def test_built_objects_pass_server_side_validation(
    control_plane: ControlPlane, namespace: str, case: str
) -> None:
    training = job(case, namespace, SPECS[case])
    for built in (
        build_rayjob(training, default_image="llmkube/runtime:test"),
        build_run_configmap(training, training_run_config(training)),
    ):
        # The owner does not exist, so validate without persisting (dry-run=server).
        result = control_plane.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(built)
        )
        assert result.returncode == 0, f"{case}: {result.stderr}"


def test_a_long_job_name_still_makes_a_valid_rayjob(
    control_plane: ControlPlane, namespace: str
) -> None:
    training = job("a" * 200, namespace, {})
    built = build_rayjob(training, default_image="llmkube/runtime:test")
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(built))
    assert result.returncode == 0, result.stderr
    assert len(built["metadata"]["name"]) <= 47
