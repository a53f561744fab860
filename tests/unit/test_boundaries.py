"""The package boundaries in docs/architecture.md, checked on the source and on what importing
pulls in."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "llmkube"

# What each sub-package must never import, directly or through another llmkube package.
FORBIDDEN = {
    "api": {
        "torch",
        "ray",
        "transformers",
        "peft",
        "kopf",
        "kubernetes",
        "minio",
        "yaml",
        "llmkube.operator",
        "llmkube.runtime",
        "llmkube.storage",
        "llmkube.cli",
    },
    "storage": {
        "torch",
        "ray",
        "transformers",
        "peft",
        "kopf",
        "kubernetes",
        "llmkube.operator",
        "llmkube.runtime",
        "llmkube.cli",
    },
    "operator": {
        "torch",
        "ray",
        "transformers",
        "peft",
        "onnx",
        "onnxruntime",
        "llmkube.runtime",
        "llmkube.cli",
    },
    # The console starts beside a run and in its own small image: no ML stack, no operator.
    "console": {
        "torch",
        "ray",
        "transformers",
        "peft",
        "kopf",
        "llmkube.operator",
        "llmkube.runtime",
        "llmkube.cli",
    },
    "runtime": {"kopf", "kubernetes", "llmkube.operator", "llmkube.cli"},
}
# llmkube.api may use pydantic and the standard library, nothing else.
API_THIRD_PARTY = {"pydantic", "pydantic_core"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def violates(module: str, banned: set[str]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_source_imports_respect_the_boundaries(package: str) -> None:
    problems = [
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in (PACKAGE / package).rglob("*.py")
        for module in imported_modules(path)
        if violates(module, FORBIDDEN[package])
    ]
    assert not problems


def test_api_imports_only_pydantic_and_the_standard_library() -> None:
    for path in (PACKAGE / "api").rglob("*.py"):
        for module in imported_modules(path):
            root = module.split(".")[0]
            allowed = root in sys.stdlib_module_names or root in API_THIRD_PARTY
            assert allowed or module.startswith("llmkube.api"), f"{path.name} imports {module}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_a_package_pulls_in_nothing_forbidden(package: str) -> None:
    # Catches transitive imports the source scan cannot see.
    modules = sorted(
        "llmkube."
        + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for p in (PACKAGE / package).rglob("*.py")
    )
    banned = sorted(FORBIDDEN[package])
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"banned = {banned!r}\n"
        "bad = [m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in banned)]\n"
        "print(' '.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"importing llmkube.{package} loads {result.stdout}"
