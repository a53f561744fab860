"""Whether a model fits this machine's memory for an export, judged from the size of its weight
files before anything is loaded."""

import json
from pathlib import Path

from llmkube.runtime.export.errors import ExportError
from llmkube.storage import ObjectStore
from llmkube.storage.models import ModelFolder
from llmkube.storage.uri import join

COPIES = 4
"""fp32 weights held at once: the PyTorch model, the graph torch.onnx serializes, and ONNX
Runtime's prefill and decode sessions (each loads its own initializers)."""
HALF_PRECISION = {"float16", "bfloat16"}


def _stored_element_bytes(store: ObjectStore, folder: ModelFolder) -> int:
    config_uri = join(folder.uri, "config.json")
    if folder.format != "huggingface" or not store.exists(config_uri):
        return 4
    config = json.loads(store.read_bytes(config_uri))
    return 2 if (config.get("dtype") or config.get("torch_dtype")) in HALF_PRECISION else 4


def weights_in_memory(store: ObjectStore, folders: list[ModelFolder]) -> int:
    """Bytes of the folders' safetensors weights once loaded in fp32."""
    total = 0
    for folder in folders:
        stored = sum(
            info.size
            for info in store.list_info(folder.uri.rstrip("/") + "/")
            if info.uri.endswith(".safetensors")
        )
        total += stored * 4 // _stored_element_bytes(store, folder)
    return total


def _cgroup_room() -> int | None:
    group = Path("/sys/fs/cgroup")
    try:
        limit = (group / "memory.max").read_text().strip()
        used = int((group / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def available_memory() -> int:
    """Bytes this process may still allocate: the smaller of the kernel's estimate of available
    memory and what the container's cgroup limit leaves."""
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    available = int(fields["MemAvailable"].split()[0]) * 1024
    room = _cgroup_room()
    return available if room is None else min(available, room)


def memory_problem(weights: int, available: int) -> str | None:
    need = weights * COPIES
    if need <= available:
        return None
    return (
        f"exporting needs about {need / 2**30:.1f} GiB ({COPIES} copies of "
        f"{weights / 2**30:.1f} GiB of fp32 weights) but {available / 2**30:.1f} GiB is "
        "available; export on a machine with more memory"
    )


def check_memory(weights: int, available: int | None = None) -> None:
    problem = memory_problem(weights, available_memory() if available is None else available)
    if problem is not None:
        raise ExportError(problem)
