"""Publishing the best trial's model to the search's own <output>/model, as a training job
publishes its model: the same version folder (same files, same digest) and a pointer to it, so
a deployment serving the search reads it like any job's model."""

import tempfile
from pathlib import Path

from llmkube.api.artifacts import MODEL_DIR, PUBLISHED_LAST
from llmkube.api.training import PublishedModel
from llmkube.storage import ObjectStore
from llmkube.storage.uri import join
from llmkube.storage.versions import PROVENANCE_FILE, publish_version, read_pointer, resolve_model


def publish_best(store: ObjectStore, output: str, trial_output: str) -> PublishedModel:
    """Copy the model the trial published at `trial_output` to `output`, and point
    `<output>/model` at it. Publishing the same model again changes nothing."""
    pointer = read_pointer(store, trial_output)
    assert pointer is not None, "a succeeded trial published its model"
    source = resolve_model(store, join(trial_output, MODEL_DIR)).uri
    prefix = source + "/"
    with tempfile.TemporaryDirectory(prefix="llmkube-best-") as scratch:
        staged = Path(scratch)
        provenance = b""
        for uri in store.list(prefix):
            relative = uri.removeprefix(prefix)
            data = store.read_bytes(uri)
            if relative == PROVENANCE_FILE:
                provenance = data
                continue
            target = staged / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        published = publish_version(
            store, output, staged, run=pointer.run, provenance=provenance, last=PUBLISHED_LAST
        )
    return PublishedModel(uri=join(output, MODEL_DIR), version=published.version)
