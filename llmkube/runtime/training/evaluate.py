"""Validation loss, perplexity and next-token accuracy over the first `batches` validation
batches (the same ones every time, so evaluations compare), split across workers. Targets that
carry no loss (prompts of chat and instruction examples, padding) are not counted: for those,
the figures are of the answers alone."""

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llmkube.runtime.data.examples import IGNORED
from llmkube.runtime.data.shards import Sequences
from llmkube.runtime.prompts import PromptCodec
from llmkube.runtime.sampling import generate


@torch.no_grad()
def evaluate(
    model: nn.Module,
    validation: Sequences,
    *,
    batches: int,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    total_batches = max(1, min(batches, len(validation) // batch_size))
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, tokens
    for index in range(rank, total_batches, world):
        first = index * batch_size
        count = min(batch_size, len(validation) - first)
        inputs, targets = validation.batch(list(range(first, first + count)))
        inputs, targets = inputs.to(device), targets.to(device)
        logits = model(inputs).float()
        totals[0] += F.cross_entropy(
            logits.view(-1, logits.size(-1)),
            targets.reshape(-1),
            reduction="sum",
            ignore_index=IGNORED,
        )
        counted = targets != IGNORED
        totals[1] += ((logits.argmax(dim=-1) == targets) & counted).sum()
        totals[2] += counted.sum()
    if world > 1:
        dist.all_reduce(totals)
    model.train(was_training)
    loss = float(totals[0] / totals[2].clamp(min=1))
    return {
        "eval_loss": loss,
        "perplexity": math.exp(min(loss, 80.0)),
        "accuracy": float(totals[1] / totals[2].clamp(min=1)),
        "eval_tokens": int(totals[2]),
    }


def samples(
    model: nn.Module,
    codec: PromptCodec,
    prompts: list[str],
    max_new_tokens: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    was_training = model.training
    model.eval()
    produced = []
    for prompt in prompts:
        ids = generate(
            model,  # type: ignore[arg-type]
            codec.encode(prompt),
            max_new_tokens,
            device=device,
            stop_ids=codec.stop_ids,
        )
        produced.append({"prompt": prompt, "completion": codec.decode(ids)})
    model.train(was_training)
    return produced
