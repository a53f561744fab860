"""The LoRA adapters of a running replica, brought to what its config lists without a restart
(Ray Serve calls the replica's `reconfigure` when the deployment's user_config changes).

An adapter is checked before it is read (its base's digest and its rank, storage/models.py),
copied to this machine, then added to the model between two engine steps. A removed adapter
stops being offered at once; the model drops it once the requests already using it finish.
"""

import logging
from dataclasses import dataclass, field

from llmkube.api.runconfig import AdapterConfig, StorageConfig
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface import HuggingFaceLM
from llmkube.runtime.models.local_copy import local_model_folder
from llmkube.runtime.serving.engine import Engine
from llmkube.runtime.serving.served_model import ServedModel
from llmkube.storage import StorageError, open_store
from llmkube.storage.models import ADAPTER_CONFIG_FILE, adapter_problem, inspect_model

log = logging.getLogger("llmkube.serve")

CHANGE_TIMEOUT_SECONDS = 600.0
"""How long adding an adapter may wait for the engine (it waits for no request: only for the
step in progress)."""


@dataclass
class AdapterSet:
    served: ServedModel
    engine: Engine
    storage: StorageConfig
    max_rank: int
    problems: dict[str, str] = field(default_factory=dict)
    """Adapters not loaded, and why."""
    own: frozenset[str] = frozenset()
    """The deployment's own adapter (loaded with the model, never removed here)."""

    def __post_init__(self) -> None:
        self.own = frozenset(self.served.adapters_loaded)

    def apply(self, wanted: list[AdapterConfig]) -> None:
        """Load, replace and remove adapters until the replica serves `wanted` (besides its own
        adapter). What cannot load is logged, kept in `problems` and left out."""
        current = {n: u for n, u in self.served.adapters_loaded.items() if n not in self.own}
        spec = {adapter.name: adapter.uri for adapter in wanted}
        self.problems = {}
        for name in sorted(set(current) - set(spec)):
            self._remove(name)
        for name, uri in sorted(spec.items()):
            if current.get(name) == uri:
                continue
            if name in current:
                self._remove(name)
            try:
                self._add(name, uri)
            except Exception as error:
                # Whatever one adapter does wrong (its weights not fitting, say), the replica
                # keeps serving the others; GET /v1/adapters says what happened.
                self.problems[name] = f"{type(error).__name__}: {error}"
                log.warning("adapter %s not loaded: %s", name, error)

    def _remove(self, name: str) -> None:
        self.served.ids = {n: a for n, a in self.served.ids.items() if n != name}
        self.served.adapters_loaded.pop(name, None)
        model = self._model()
        self.engine.change_adapter(name, lambda: model.remove_adapter(name), removing=True)
        log.info("adapter %s removed", name)

    def _add(self, name: str, uri: str) -> None:
        folder_uri = self._checked(uri)
        store = open_store(uri, self.storage)
        folder = local_model_folder(
            store, folder_uri, what=f"adapter {name}", required=ADAPTER_CONFIG_FILE
        )
        model = self._model()
        self.engine.change_adapter(
            name, lambda: model.add_adapter(name, folder), removing=False
        ).result(timeout=CHANGE_TIMEOUT_SECONDS)
        self.served.adapters_loaded[name] = uri
        self.served.ids = {**self.served.ids, name: name}
        log.info("adapter %s loaded from %s", name, uri)

    def _checked(self, uri: str) -> str:
        """The folder of the adapter at `uri` (resolved once: storage.versions); a ModelError
        when it cannot go on the served model."""
        base = self.served.base
        if base is None:
            raise ModelError(
                "llmkube's own GPT models take no LoRA adapters; serve a Hugging Face model"
            )
        try:
            adapter = inspect_model(open_store(uri, self.storage), uri)
        except StorageError as error:
            raise ModelError(str(error)) from None
        problem = adapter_problem(
            adapter, base_uri=base.uri, base_digest=self.served.base_digest, max_rank=self.max_rank
        )
        if problem is not None:
            raise ModelError(problem)
        return adapter.uri

    def _model(self) -> HuggingFaceLM:
        assert isinstance(self.served.model, HuggingFaceLM), "checked in _checked"
        return self.served.model
