"""What the driver worker (rank 0) tells the world: a log line per logged step, progress.json
and metrics.jsonl under the output (docs/architecture.md), and Prometheus gauges through Ray's
metrics agent (Ray exports them with its `ray_` prefix, e.g. `ray_llmkube_train_loss`)."""

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from ray.util.metrics import Gauge

from llmkube.api.artifacts import METRICS_FILE, PROGRESS_FILE, ProgressRecord
from llmkube.api.contract import EVAL_LOSS, TRAIN_LOSS, TRAIN_STEP, TRAIN_TOKENS_PER_SECOND
from llmkube.storage import ObjectStore
from llmkube.storage.uri import join

log = logging.getLogger("llmkube.train")

# Object stores cannot append: metrics.jsonl is rewritten whole, so not on every step.
FLUSH_SECONDS = 2.0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Reporter:
    def __init__(
        self,
        store: ObjectStore,
        output: str,
        *,
        job: str,
        total_steps: int,
        start_step: int,
        parameters: tuple[int, int] | None = None,
    ) -> None:
        """`parameters`: (all, trainable) of the model, reported in progress.json."""
        self.store = store
        self.output = output
        self.total_steps = total_steps
        self.tags = {"training_job": job}
        self.records = self._earlier_records(start_step)
        if start_step > 0:
            self.records.append({"step": start_step, "kind": "resume"})
            log.info(
                "resuming at step %d of %d from the latest checkpoint", start_step, total_steps
            )
        self.progress = ProgressRecord(
            step=start_step,
            total_steps=total_steps,
            updated_at=self._now(),
            parameters=parameters[0] if parameters else None,
            trainable_parameters=parameters[1] if parameters else None,
        )
        self.last_flush = 0.0
        self.started = time.monotonic()
        self.started_step = start_step
        self.gauges = {
            name: Gauge(name, description=text, tag_keys=("training_job",))
            for name, text in (
                (TRAIN_LOSS, "Training loss at the latest logged step."),
                (EVAL_LOSS, "Validation loss at the latest evaluation."),
                (TRAIN_TOKENS_PER_SECOND, "Training throughput over all workers."),
                (TRAIN_STEP, "Optimizer steps done."),
            )
        }

    def _earlier_records(self, start_step: int) -> list[dict[str, Any]]:
        """Records of earlier attempts up to the checkpoint resumed from; later ones are redone."""
        uri = join(self.output, METRICS_FILE)
        if start_step == 0 or not self.store.exists(uri):
            return []
        records = []
        for line in self.store.read_bytes(uri).decode().splitlines():
            record = json.loads(line)
            if record["step"] <= start_step:
                records.append(record)
        return records

    @staticmethod
    def _now() -> str:
        return datetime.now(UTC).isoformat(timespec="seconds")

    def _eta(self, step: int) -> float | None:
        done = step - self.started_step
        if done <= 0:
            return None
        return (time.monotonic() - self.started) / done * (self.total_steps - step)

    def train_step(
        self,
        step: int,
        *,
        loss: float,
        learning_rate: float,
        tokens_per_second: float,
        tokens_seen: int,
        epoch: float,
    ) -> None:
        eta = self._eta(step)
        log.info(
            "step %d/%d | loss %.4f | lr %.2e | %s tok/s | epoch %.2f | eta %s",
            step,
            self.total_steps,
            loss,
            learning_rate,
            f"{tokens_per_second:,.0f}",
            epoch,
            _duration(eta),
        )
        self.records.append(
            {
                "step": step,
                "kind": "train",
                "train_loss": loss,
                "learning_rate": learning_rate,
                "tokens_per_second": tokens_per_second,
            }
        )
        self.progress = self.progress.model_copy(
            update={
                "step": step,
                "epoch": epoch,
                "tokens_seen": tokens_seen,
                "eta_s": eta,
                "updated_at": self._now(),
            }
        )
        self.gauges[TRAIN_LOSS].set(loss, tags=self.tags)
        self.gauges[TRAIN_TOKENS_PER_SECOND].set(tokens_per_second, tags=self.tags)
        self.gauges[TRAIN_STEP].set(step, tags=self.tags)
        if time.monotonic() - self.last_flush >= FLUSH_SECONDS or step == self.total_steps:
            self.flush()

    def evaluation(self, step: int, results: dict[str, Any]) -> None:
        log.info(
            "eval at step %d | loss %.4f | perplexity %.2f | accuracy %.3f",
            step,
            results["eval_loss"],
            results["perplexity"],
            results["accuracy"],
        )
        for sample in results.get("samples", []):
            log.info("sample %r -> %r", sample["prompt"], sample["completion"])
        self.records.append({"step": step, "kind": "eval", **results})
        self.gauges[EVAL_LOSS].set(results["eval_loss"], tags=self.tags)
        self.flush()

    def checkpoint(self, step: int, uri: str) -> None:
        log.info("checkpoint at step %d: %s", step, uri)
        self.progress = self.progress.model_copy(
            update={"checkpoint_uri": uri, "checkpoint_step": step, "updated_at": self._now()}
        )
        self.flush()

    def flush(self) -> None:
        lines = "".join(json.dumps(record) + "\n" for record in self.records)
        self.store.write_bytes(join(self.output, METRICS_FILE), lines.encode())
        self.store.write_bytes(
            join(self.output, PROGRESS_FILE), self.progress.model_dump_json().encode()
        )
        self.last_flush = time.monotonic()
