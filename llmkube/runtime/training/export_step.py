"""A training job's `spec.export`: once its model is published, the same run exports it (into
<output>/onnx/), unless an export of that very version with these settings is already there."""

import logging

from llmkube.api.artifacts import MODEL_DIR
from llmkube.api.export import EXPORT_MANIFEST_FILE, ONNX_DIR, ExportManifest
from llmkube.api.runconfig import TrainingRunConfig
from llmkube.runtime.export.errors import ExportError
from llmkube.storage import open_store
from llmkube.storage.uri import join
from llmkube.storage.versions import read_pointer

log = logging.getLogger("llmkube.train")


def export_published(config: TrainingRunConfig) -> None:
    """An ExportError when the export is refused or fails its parity check."""
    spec = config.export.onnx
    if not spec.enabled:
        return
    try:  # the export extra: only a run that asks for an export needs it
        from llmkube.runtime.export.exporting import export_onnx
    except ImportError as error:
        raise ExportError(
            f"spec.export.onnx needs the export extra (pip install 'llmkube[export]'): {error}"
        ) from None
    store = open_store(config.output, config.storage)
    published = read_pointer(store, config.output)
    out = join(config.output, ONNX_DIR)
    manifest_uri = join(out, EXPORT_MANIFEST_FILE)
    if published is not None and store.exists(manifest_uri):
        done = ExportManifest.model_validate_json(store.read_bytes(manifest_uri))
        if (done.source_version, done.opset, done.dtype) == (
            published.version,
            spec.opset,
            spec.dtype,
        ):
            log.info("%s already holds the export of version %s", out, published.version)
            return
    log.info("exporting the published model to ONNX at %s", out)
    manifest = export_onnx(join(config.output, MODEL_DIR), out, config.storage, spec)
    parity = manifest.parity
    log.info(
        "exported version %s in %.0f s; max |Δlogits| against PyTorch %.2g (prefill), "
        "%.2g (decode), bound %g",
        manifest.source_version,
        manifest.export_seconds,
        parity.prefill_max_abs_diff,
        parity.decode_max_abs_diff,
        parity.bound,
    )
