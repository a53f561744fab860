"""Strategies that mutate real manifests into plausible and broken ones: the unit tests check
llmkube's validation with them, the cluster tests the apiserver and the operator."""

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

EXAMPLES = Path(__file__).parents[1] / "examples"
Json = Any

# Values that are sometimes right, so mutations also produce valid specs, not only garbage.
PLAUSIBLE = st.sampled_from(
    [
        "s3://bucket/data/",
        "file:///tmp/x",
        "tiny",
        "gpt2-124m",
        "custom",
        "ttftP95",
        "bpe",
        "byte",
        "16Gi",
        "NoSchedule",
        "Exists",
        "NewCluster",
        "fp32",
        "cosine",
        "",
        "a-name",
    ]
)
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.integers(min_value=0, max_value=64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | PLAUSIBLE
)
KEYS = st.text(max_size=10) | st.sampled_from(
    ["maxSteps", "epochs", "uri", "trainingJobRef", "query", "target", "nHead", "dModel"]
)
VALUE = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def example(name: str) -> dict[str, Json]:
    loaded = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def node_paths(doc: Json, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, child in doc.items():
            found.extend(node_paths(child, (*prefix, key)))
    elif isinstance(doc, list):
        for index, child in enumerate(doc):
            found.extend(node_paths(child, (*prefix, index)))
    return found


def mutate(doc: dict[str, Json], data: st.DataObject) -> dict[str, Json]:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        path = data.draw(st.sampled_from([p for p in node_paths(doc) if p]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "delete", "add-sibling"]))
        if action == "replace":
            parent[path[-1]] = data.draw(LEAF if data.draw(st.booleans()) else VALUE)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(KEYS)] = data.draw(VALUE)
        else:
            parent.append(data.draw(VALUE))
    return doc
