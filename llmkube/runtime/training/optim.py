"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedule."""

import math

import torch
from torch import nn

from llmkube.api.training import TrainingSpec


def make_optimizer(model: nn.Module, spec: TrainingSpec, *, fused: bool) -> torch.optim.AdamW:
    # Norm gains, biases and embeddings are not decayed: only the weight matrices of the
    # linear layers (2-D parameters that are not embeddings).
    decay, no_decay = [], []
    embeddings = {
        id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)
    }
    seen: set[int] = set()
    for parameter in model.parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        if parameter.dim() >= 2 and id(parameter) not in embeddings:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=spec.learning_rate,
        betas=(0.9, 0.95),
        fused=fused,
    )


def learning_rate(spec: TrainingSpec, step: int, total_steps: int) -> float:
    """The rate for optimizer step `step` (0-based) of `total_steps`, from a run config's
    settings (their defaults are resolved there, once)."""
    peak, low, warmup = spec.learning_rate, spec.min_learning_rate, spec.warmup_steps
    assert low is not None, "the run config resolves minLearningRate"
    assert warmup is not None, "the run config resolves warmupSteps"
    if step < warmup:
        return peak * (step + 1) / warmup
    if spec.schedule == "constant" or total_steps <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup - 1))
    if spec.schedule == "linear":
        return peak + (low - peak) * progress
    return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * progress))
