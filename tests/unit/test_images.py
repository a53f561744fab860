"""The Dockerfiles install what each image needs and run as the chart expects (no Docker engine
runs on the development machines, so the images themselves are built elsewhere)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def instructions(name: str) -> list[str]:
    text = (ROOT / "docker" / name).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_operator_image_has_no_torch_and_runs_the_operator_unprivileged() -> None:
    lines = instructions("operator.Dockerfile")
    assert any('pip install ".[operator,console]"' in line for line in lines)
    assert not any(
        "runtime" in line or "export" in line or "torch" in line or "onnx" in line for line in lines
    )
    assert "USER 65532:65532" in lines
    assert 'CMD ["python", "-m", "llmkube.operator"]' in lines
    deployment = (ROOT / "helm" / "llmkube" / "templates" / "deployment.yaml").read_text()
    assert 'args: ["python", "-m", "llmkube.operator"]' in deployment
    values = yaml.safe_load((ROOT / "helm" / "llmkube" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532
    # The console runs from the same image, with the command its extra installs.
    console = (ROOT / "helm" / "llmkube" / "templates" / "console.yaml").read_text()
    assert 'args: ["llmkube", "console", "--kubernetes"' in console
    assert "llmkube.console.app" in " ".join(lines)


def test_runtime_image_has_the_runtime_and_kuberays_probe_tool() -> None:
    lines = instructions("runtime.Dockerfile")
    # spec.export.onnx runs in the training RayJob's driver.
    assert any('pip install ".[runtime,export]"' in line for line in lines)
    assert any("wget" in line for line in lines)
    assert any(
        "llmkube.runtime.train" in line and "llmkube.runtime.serve" in line for line in lines
    )
    assert "USER 1000" in lines
