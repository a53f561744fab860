"""A small model trained for a few seconds on real text, for serving tests and benchmarks."""

import pydoc_data.topics

import torch
import torch.nn.functional as F

from llmkube.api.runconfig import GptConfig
from llmkube.api.training import TrainingSpec
from llmkube.runtime.artifact import save_artifact
from llmkube.runtime.models import CausalLM, build_model
from llmkube.runtime.tokenizer import byte_tokenizer
from llmkube.runtime.training.optim import make_optimizer
from llmkube.storage import ObjectStore


def trained_byte_model(
    *,
    n_layer: int = 2,
    d_model: int = 64,
    context_length: int = 512,
    steps: int = 200,
    seed: int = 0,
) -> tuple[CausalLM, GptConfig]:
    """A byte-level GPT trained `steps` steps on the Python reference (greedy output is text)."""
    config = GptConfig(
        n_layer=n_layer,
        n_head=max(1, d_model // 32),
        d_model=d_model,
        context_length=context_length,
        dropout=0.0,
        vocab_size=256,
    )
    torch.manual_seed(seed)
    model = build_model(config)
    data = torch.tensor(list("\n\n".join(pydoc_data.topics.topics.values()).encode()))
    spec = TrainingSpec(max_steps=steps, learning_rate=3e-3)
    optimizer = make_optimizer(model, spec, fused=False)
    window = min(context_length, 128)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (16,), generator=generator)
        batch = torch.stack([data[s : s + window + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return model, config


def publish_untrained_gpt(store: ObjectStore, uri: str, config: GptConfig, seed: int = 0) -> str:
    """A randomly initialised GPT of `config` with the byte tokenizer, published at `uri` (for
    tests and benchmarks of what does not depend on the weights: shapes, speed, exports)."""
    torch.manual_seed(seed)
    save_artifact(
        store,
        uri,
        model=build_model(config).eval(),
        config=config,
        tokenizer=byte_tokenizer(),
        evaluation={},
        card="",
    )
    return uri


def publish_byte_model(store: ObjectStore, uri: str, **dimensions: int) -> None:
    model, config = trained_byte_model(**dimensions)
    save_artifact(
        store,
        uri,
        model=model,
        config=config,
        tokenizer=byte_tokenizer(),
        evaluation={},
        card="# test model\n",
    )
