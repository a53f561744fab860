"""Reading a local metrics.jsonl as it grows: only the new lines are parsed while the file only
grows (as the runtime rewrites it), the whole file when it changed otherwise."""

from pathlib import Path

import pytest

from llmkube.console import outputs
from llmkube.console.curves import RunCurves, parse_metrics
from llmkube.storage import open_store
from llmkube.testing.console import metrics_lines


def _rewrite(path: Path, text: str) -> None:
    partial = path.with_name(".tmp-metrics")
    partial.write_text(text)
    partial.replace(path)  # as the runtime's reporter writes it: whole, atomically


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many lines each parse was given."""
    sizes: list[int] = []

    def counting(text: str) -> RunCurves:
        sizes.append(len(text.splitlines()))
        return parse_metrics(text)

    monkeypatch.setattr(outputs, "parse_metrics", counting)
    return sizes


def test_a_growing_file_is_parsed_from_where_the_last_look_stopped(
    tmp_path: Path, parsed: list[int]
) -> None:
    path = tmp_path / "metrics.jsonl"
    reader, store = outputs.OutputReader(), open_store(f"file://{tmp_path}")
    lines = metrics_lines(30, eval_every=10).splitlines(keepends=True)
    _rewrite(path, "".join(lines[:20]))
    assert len(reader.curves(store, f"file://{tmp_path}").train_loss) == 19  # and 1 eval
    assert reader.curves(store, f"file://{tmp_path}") is reader.curves(store, f"file://{tmp_path}")
    _rewrite(path, "".join(lines) + '{"step": 31, "kind": "tr')  # a line still being written
    grown = reader.curves(store, f"file://{tmp_path}")
    assert grown == parse_metrics("".join(lines))
    _rewrite(path, "".join(lines) + '{"step": 31, "kind": "train", "train_loss": 1.5}\n')
    finished = reader.curves(store, f"file://{tmp_path}")
    assert finished.train_loss.steps[-1] == 31
    assert finished.last_step == 31
    assert parsed == [20, 13, 1]  # never the whole file twice


def test_a_file_rewritten_otherwise_is_parsed_whole(tmp_path: Path, parsed: list[int]) -> None:
    path = tmp_path / "metrics.jsonl"
    reader, store = outputs.OutputReader(), open_store(f"file://{tmp_path}")
    _rewrite(path, metrics_lines(30))
    assert len(reader.curves(store, f"file://{tmp_path}").train_loss) == 30
    restarted = metrics_lines(40, learning_rate=5e-4)  # longer, but not the same lines
    _rewrite(path, restarted)
    assert reader.curves(store, f"file://{tmp_path}") == parse_metrics(restarted)
    _rewrite(path, metrics_lines(3))
    assert len(reader.curves(store, f"file://{tmp_path}").train_loss) == 3
    assert parsed == [30, 40, 3]
    path.unlink()
    assert len(reader.curves(store, f"file://{tmp_path}").train_loss) == 0
