"""Using what a run produced: `generate` with a published model, `status` of a job's output,
`chat` with a served model."""

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def generate(
    prompt: Annotated[str, typer.Argument(help="Text to continue.")],
    model: Annotated[str | None, typer.Option(help="Model artifact URI (a model/ folder).")] = None,
    onnx: Annotated[
        str | None,
        typer.Option(help="An ONNX export's folder: generate with ONNX Runtime instead."),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 for greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="0 keeps all tokens.")] = 40,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
) -> None:
    """Continue a prompt with a published or imported model (llmkube's GPT, a Hugging Face
    model, or a LoRA adapter on its base), or with its ONNX export, without starting a
    server."""
    from llmkube.runtime.sampling import SamplingParams

    params = SamplingParams(temperature=temperature, top_k=top_k)
    if (model is None) == (onnx is None):
        err.print("[red]error:[/] name the model with exactly one of --model and --onnx")
        raise typer.Exit(2)
    if onnx is not None:
        out.print(
            prompt + _generate_onnx(onnx, prompt, max_tokens, params, seed),
            markup=False,
            highlight=False,
        )
        return
    assert model is not None
    from llmkube.api.deployment import ServingSpec
    from llmkube.api.runconfig import StorageConfig
    from llmkube.runtime.models.errors import ModelError
    from llmkube.runtime.sampling import generate as sample
    from llmkube.runtime.serving.served_model import load_model
    from llmkube.storage import StorageError

    try:
        loaded = load_model(
            model,
            StorageConfig(),
            "cpu",
            name="generate",
            max_lora_rank=ServingSpec().max_lora_rank,
        )
    except (StorageError, ModelError) as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    ids = sample(
        loaded.model,
        loaded.codec.encode(prompt),
        max_tokens,
        params,
        seed=seed,
        stop_ids=loaded.codec.stop_ids,
        adapter=loaded.ids["generate"],
    )
    out.print(prompt + loaded.codec.decode(ids), markup=False, highlight=False)


def _generate_onnx(uri: str, prompt: str, max_tokens: int, params: Any, seed: int | None) -> str:
    from llmkube.api.runconfig import StorageConfig
    from llmkube.runtime.export.errors import ExportError
    from llmkube.runtime.export.onnx_runner import generate_onnx, open_export
    from llmkube.storage import StorageError

    try:
        opened = open_export(uri, StorageConfig())
    except (ExportError, StorageError) as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    ids = generate_onnx(
        opened.decoder, opened.manifest, opened.codec.encode(prompt), max_tokens, params, seed=seed
    )
    return opened.codec.decode(ids)


def status(
    output: Annotated[str, typer.Argument(help="A training job's output URI.")],
) -> None:
    """Progress and evaluation of a training job, read from its output (as the operator does)."""
    from llmkube.api.artifacts import EVAL_FILE, MODEL_DIR, PROGRESS_FILE
    from llmkube.storage import StorageError, open_store
    from llmkube.storage.uri import join
    from llmkube.storage.versions import resolve_model

    try:
        store = open_store(output)
        model = resolve_model(store, join(output, MODEL_DIR))
        found = {
            name: json.loads(store.read_bytes(uri))
            for name, uri in (
                ("progress", join(output, PROGRESS_FILE)),
                ("evaluation", join(model.uri, EVAL_FILE)),
            )
            if store.exists(uri)
        }
    except StorageError as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    if not found:
        err.print(f"[red]error:[/] no progress.json under {output}; has a run started there?")
        raise typer.Exit(1)
    progress = found.get("progress", {})
    if progress:
        total = progress.get("total_steps") or 0
        out.print(
            f"step {progress.get('step')}/{total}  epoch {progress.get('epoch', 0):.2f}  "
            f"tokens {progress.get('tokens_seen', 0):,}  "
            f"checkpoint {progress.get('checkpoint_step') or '-'}  "
            f"updated {progress.get('updated_at')}"
        )
    evaluation = found.get("evaluation")
    if evaluation:
        version = f" (version {model.version})" if model.version else ""
        out.print(
            f"published{version}: eval loss {evaluation['eval_loss']:.4f}  perplexity "
            f"{evaluation['perplexity']:.2f}  accuracy {evaluation['accuracy']:.3f}"
        )
        for sample_ in evaluation.get("samples", []):
            out.print(f"  {sample_['prompt']!r} → {sample_['completion']!r}", markup=False)
    else:
        out.print("not published yet")


def chat(
    endpoint: Annotated[
        str, typer.Option(help="OpenAI API base URL, e.g. http://127.0.0.1:8000/v1")
    ],
    model: Annotated[
        str | None, typer.Option(help="Model id (default: the server's only one).")
    ] = None,
    max_tokens: Annotated[int, typer.Option()] = 128,
    temperature: Annotated[float, typer.Option()] = 0.8,
) -> None:
    """Chat with a served model; answers stream in. An empty line or Ctrl-D ends."""
    import openai

    client = openai.OpenAI(
        base_url=endpoint, api_key=os.environ.get("LLMKUBE_API_KEY", "none"), max_retries=0
    )
    try:
        model = model or client.models.list().data[0].id
    except openai.OpenAIError as error:
        err.print(f"[red]error:[/] cannot reach {endpoint}: {error}")
        raise typer.Exit(2) from None
    messages: list[dict[str, str]] = []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not line:
            break
        messages.append({"role": "user", "content": line})
        sys.stdout.write(f"{model}> ")
        answer = ""
        stream = client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
        )
        for chunk in stream:
            choices = getattr(chunk, "choices", None)
            piece = (choices[0].delta.content or "") if choices else ""
            answer += piece
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": answer})
