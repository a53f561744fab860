"""Reading metrics.jsonl into curves, and thinning them for display."""

import json

from llmkube.console.curves import Curve, parse_metrics, since, thin
from llmkube.testing.console import metrics_lines


def test_every_record_lands_in_its_curve_and_bad_lines_are_skipped() -> None:
    text = metrics_lines(10, eval_every=5) + "{not json\n" + json.dumps({"kind": "train"}) + "\n"
    curves = parse_metrics(text + '{"step": 11, "kind": "train", "train_loss": NaN}\n{"step": 12')
    assert curves.train_loss.steps == list(range(1, 11))
    assert len(curves.learning_rate) == len(curves.tokens_per_second) == 10
    assert curves.eval_loss.steps == [5, 10]
    assert [e["samples"][0]["completion"] for e in curves.evaluations] == [" iterates"] * 2
    assert curves.last_step == 11  # the NaN record counts as logged, its value is not drawn


def test_a_resume_record_is_neither_train_nor_eval() -> None:
    curves = parse_metrics('{"step": 40, "kind": "resume"}\n')
    assert (len(curves.train_loss), len(curves.eval_loss), curves.last_step) == (0, 0, 40)


def test_a_curve_that_fits_is_sent_whole() -> None:
    curve = Curve(list(range(100)), [float(i) for i in range(100)])
    assert thin(curve, 100) is curve


def test_thinning_keeps_the_ends_and_every_spike() -> None:
    values = [1.0] * 100_000
    values[31_337] = 50.0  # one spike, as a bad batch makes
    values[77_777] = -3.0
    curve = Curve(list(range(100_000)), values)
    shown = thin(curve, 2000)
    assert len(shown) <= 2000
    assert shown.steps[0] == 0
    assert shown.steps[-1] == 99_999
    assert 31_337 in shown.steps
    assert 77_777 in shown.steps
    assert max(shown.values) == 50.0
    assert min(shown.values) == -3.0
    assert shown.steps == sorted(shown.steps)


def test_since_returns_only_the_points_a_live_chart_has_not_drawn() -> None:
    curve = Curve([2, 4, 6, 8], [1.0, 2.0, 3.0, 4.0])
    assert since(curve, 4) == Curve([6, 8], [3.0, 4.0])
    assert since(curve, 5) == Curve([6, 8], [3.0, 4.0])
    assert since(curve, -1) == curve
    assert since(curve, 8) == Curve([], [])
