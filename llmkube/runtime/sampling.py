"""Choosing the next token, and plain generation with a KV cache (evaluation samples, the CLI).
The serving engine batches many sequences itself but picks tokens with `choose_next`."""

from dataclasses import dataclass

import torch
from torch import Tensor

from llmkube.runtime.models import CausalLM


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    """0 means greedy."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 keeps all."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches p."""


def choose_next(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> Tensor:
    """One token id per row of `logits` [batch, vocab]."""
    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p; the first always stays.
        drop = cumulative - sorted_logits.softmax(dim=-1) >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probabilities = logits.softmax(dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model: CausalLM,
    prompt: list[int],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(temperature=0.0),
    *,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    stop_ids: frozenset[int] = frozenset(),
    adapter: str | None = None,
) -> list[int]:
    """The new token ids after `prompt` (left-truncated to fit the context), up to and without
    the first of `stop_ids`; with the LoRA `adapter` of that name when one is given."""
    extra = {"adapters": [adapter]} if adapter is not None else {}
    context = model.context_length
    max_new_tokens = min(max_new_tokens, context - 1)
    prompt = prompt[-(context - max_new_tokens) :] or [0]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    cache = model.new_cache(1, len(prompt) + max_new_tokens, device=torch.device(device))
    logits = model(torch.tensor([prompt], device=device), cache, **extra)[:, -1]
    produced: list[int] = []
    for _ in range(max_new_tokens):
        token = choose_next(logits, params, generator)
        if int(token.item()) in stop_ids:
            break
        produced.append(int(token.item()))
        if len(produced) == max_new_tokens:
            break
        logits = model(token.view(1, 1), cache, **extra)[:, -1]
    return produced
