"""The corpus of bad manifests under tests/data/bad-manifests and what each must produce.

Each file starts with comment lines:
    # apiserver: <text the apiserver's rejection must contain>   (absent: the apiserver accepts it)
    # llmkube: <text llmkube's validation must contain>
or, for what only a cluster refuses (`llmkube run` accepts it; `llmkube validate --cluster` and
the operator do not):
    # cluster: <text llmkube's cluster validation must contain>
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

FOLDER = Path(__file__).parent / "data" / "bad-manifests"


@dataclass(frozen=True)
class BadManifest:
    path: Path
    apiserver_says: str | None
    llmkube_says: str
    cluster_only: bool = False

    @property
    def document(self) -> dict[str, object]:
        loaded = yaml.safe_load(self.path.read_text())
        assert isinstance(loaded, dict)
        return loaded

    def __str__(self) -> str:
        return self.path.stem


def _expectation(text: str, key: str) -> str | None:
    prefix = f"# {key}: "
    found = [line[len(prefix) :].strip() for line in text.splitlines() if line.startswith(prefix)]
    return found[0] if found else None


def corpus() -> list[BadManifest]:
    manifests = []
    for path in sorted(FOLDER.glob("*.yaml")):
        text = path.read_text()
        cluster_says = _expectation(text, "cluster")
        llmkube_says = _expectation(text, "llmkube") or cluster_says
        assert llmkube_says, f"{path} needs a '# llmkube: ...' or '# cluster: ...' line"
        apiserver_says = _expectation(text, "apiserver")
        manifests.append(BadManifest(path, apiserver_says, llmkube_says, cluster_says is not None))
    return manifests
