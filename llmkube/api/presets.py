"""Named GPT sizes. A preset plus overrides resolves to concrete dimensions in the run config."""

from typing import Literal, NamedTuple

PresetName = Literal["tiny", "small", "gpt2-124m"]
DEFAULT_PRESET: PresetName = "small"


class GptDimensions(NamedTuple):
    n_layer: int
    n_head: int
    d_model: int
    context_length: int
    dropout: float


PRESETS: dict[str, GptDimensions] = {
    # Trains in a minute on a 2-core CPU; what tests and the quickstart use.
    "tiny": GptDimensions(n_layer=2, n_head=2, d_model=64, context_length=128, dropout=0.0),
    # About 10M parameters: a few minutes on a CPU, seconds per hundred steps on a GPU.
    "small": GptDimensions(n_layer=6, n_head=6, d_model=384, context_length=256, dropout=0.1),
    # The GPT-2 small shape (124M parameters at a 50k vocabulary).
    "gpt2-124m": GptDimensions(
        n_layer=12, n_head=12, d_model=768, context_length=1024, dropout=0.0
    ),
}
