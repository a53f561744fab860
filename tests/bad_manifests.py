"""The corpus of bad manifests under tests/data/bad-manifests and what each must produce.

Each file starts with comment lines:
    # apiserver: <text the apiserver's rejection must contain>   (absent: the apiserver accepts it)
    # llmkube: <text llmkube's validation must contain>
or, for what only a cluster refuses (`llmkube run` accepts it; `llmkube validate --cluster` and
the operator do not):
    # cluster: <text llmkube's cluster validation must contain>
or, for a rule the CRD's CEL checks in the same words pydantic uses:
    # both: <text the apiserver's rejection and llmkube's validation must both contain>
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
    same_message: bool = False

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
        both_say = _expectation(text, "both")
        llmkube_says = _expectation(text, "llmkube") or cluster_says or both_say
        assert llmkube_says, f"{path} needs a '# llmkube:', '# cluster:' or '# both:' line"
        apiserver_says = _expectation(text, "apiserver") or both_say
        manifests.append(
            BadManifest(
                path,
                apiserver_says,
                llmkube_says,
                cluster_only=cluster_says is not None,
                same_message=both_say is not None,
            )
        )
    return manifests
