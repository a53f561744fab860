"""The check every export passes before it is written: ONNX Runtime against the PyTorch model,
on prompts of mixed lengths padded into one batch, for the prefill and for decode steps fed the
same tokens. Logits are compared, not tokens: on an untrained model the top two logits may be
closer than any bound, so comparing greedy picks would fail at random."""

import numpy as np
import torch

from llmkube.api.export import ParityRecord
from llmkube.runtime.export.errors import ExportError
from llmkube.runtime.export.onnx_runner import OnnxDecoder
from llmkube.runtime.models import CausalLM

DECODE_STEPS = 4
PROMPT_LENGTHS = (1, 17, 5)
"""A one-token prompt, a long one and one between, so padding and dynamic lengths are covered."""


def prompt_lengths(context_length: int) -> list[int]:
    longest = context_length - DECODE_STEPS
    return [min(length, longest) for length in PROMPT_LENGTHS]


def _diff(onnx_logits: np.ndarray, reference: torch.Tensor) -> float:
    return float(np.abs(onnx_logits.astype(np.float32) - reference.float().numpy()).max())


@torch.inference_mode()
def check_parity(
    model: CausalLM,
    decoder: OnnxDecoder,
    *,
    vocab_size: int,
    context_length: int,
    bound: float,
    seed: int = 0,
) -> ParityRecord:
    """The largest logit differences; an ExportError naming them when one exceeds `bound`."""
    lengths = prompt_lengths(context_length)
    generator = torch.Generator().manual_seed(seed)
    rows = [
        torch.randint(0, vocab_size, (length + DECODE_STEPS,), generator=generator)
        for length in lengths
    ]
    # Each row alone, teacher-forced: its logits at every prompt and fed position.
    references = [model(row[None])[0] for row in rows]
    width = max(lengths)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, (row, length) in enumerate(zip(rows, lengths, strict=True)):
        ids[i, width - length :] = row[:length].numpy()
        mask[i, width - length :] = 1
    step = decoder.prefill(ids, mask)
    prefill_diff = max(
        _diff(step.logits[i, width - length :], references[i][:length])
        for i, length in enumerate(lengths)
    )
    decode_diff = 0.0
    for offset in range(DECODE_STEPS):
        fed = np.array(
            [[int(row[length + offset])] for row, length in zip(rows, lengths, strict=True)]
        )
        mask = np.concatenate([mask, np.ones((len(rows), 1), dtype=np.int64)], axis=1)
        step = decoder.decode(fed, mask, step.present)
        decode_diff = max(
            decode_diff,
            *(
                _diff(step.logits[i, 0], references[i][length + offset])
                for i, length in enumerate(lengths)
            ),
        )
    record = ParityRecord(
        bound=bound,
        prefill_max_abs_diff=prefill_diff,
        decode_max_abs_diff=decode_diff,
        decode_steps=DECODE_STEPS,
        prompt_lengths=lengths,
    )
    if max(prefill_diff, decode_diff) > bound:
        raise ExportError(
            f"the ONNX graphs differ from the PyTorch model by more than {bound:g}: max |Δlogits| "
            f"{prefill_diff:.3g} in the prefill, {decode_diff:.3g} over {DECODE_STEPS} decode "
            "steps; nothing was written"
        )
    return record
