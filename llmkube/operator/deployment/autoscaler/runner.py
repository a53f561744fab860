"""Applying the policy: query the metric, decide, scale through /scale, record why."""

import datetime
import logging

from llmkube.api import LLMDeployment
from llmkube.api.deployment import AutoscalingStatus, ScaleDecision
from llmkube.operator.blocked import fetch_valid
from llmkube.operator.conditions import ConditionStatus, set_condition
from llmkube.operator.deployment.autoscaler.policy import Recommendation, decide, raw_recommendation
from llmkube.operator.deployment.autoscaler.prometheus import PrometheusError, query
from llmkube.operator.deployment.autoscaler.queries import promql
from llmkube.operator.kube import DEPLOYMENTS, KubeApi
from llmkube.operator.metrics import AUTOSCALER_DECISIONS
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.status_writer import current_deployment_status, write_deployment_status

log = logging.getLogger(__name__)
HISTORY_KEPT = 10


def _iso_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Autoscaler:
    """Evaluates each autoscaled deployment every `autoscaling.intervalSeconds`.

    Recommendation history lives in memory, as the HPA's does: after an operator restart the
    stabilization windows fill again before anything scales.
    """

    def __init__(self, api: KubeApi, settings: OperatorSettings) -> None:
        self.api = api
        self.settings = settings
        self.history: dict[tuple[str, str], list[Recommendation]] = {}
        self.next_at: dict[tuple[str, str], float] = {}

    def due(self, deployments: list[tuple[str, str]], now: float) -> list[tuple[str, str]]:
        """The deployments to evaluate now (forgetting those no longer autoscaled)."""
        for key in set(self.next_at) - set(deployments):
            self.next_at.pop(key, None)
            self.history.pop(key, None)
        return [key for key in deployments if self.next_at.get(key, 0.0) <= now]

    def evaluate(self, namespace: str, name: str, *, now: float) -> None:
        key = (namespace, name)
        found = fetch_valid(self.api, DEPLOYMENTS, LLMDeployment, namespace, name)
        if found is None:
            return
        body, deployment = found
        spec = deployment.spec.autoscaling
        self.next_at[key] = now + spec.interval_seconds
        status = current_deployment_status(body)
        autoscaling = status.autoscaling or AutoscalingStatus()
        generation = deployment.metadata.generation

        def report(state: ConditionStatus, reason: str, message: str) -> None:
            status.autoscaling = autoscaling
            status.conditions = set_condition(
                status.conditions,
                type="ScalingActive",
                status=state,
                reason=reason,
                message=message,
                generation=generation,
                now=_iso_now(),
            )
            write_deployment_status(self.api, body, status)

        url = spec.prometheus.url or self.settings.prometheus_url
        if url is None:
            report(
                "False", "NoPrometheus", "set autoscaling.prometheus.url or LLMKUBE_PROMETHEUS_URL"
            )
            return
        expression = promql(spec.metric, namespace, name)
        try:
            value = query(url, expression)
        except PrometheusError as error:
            report("False", "PrometheusUnavailable", f"{error}; replicas stay as they are")
            return
        if value is None:
            report("False", "NoData", f"no series for {expression}; replicas stay as they are")
            return

        current = deployment.spec.replicas
        target = spec.metric.resolved_target()
        raw = raw_recommendation(spec.metric.type, value, target, current, spec.tolerance)
        decision, self.history[key] = decide(now, current, raw, self.history.get(key, []), spec)
        autoscaling.metric_value = value
        summary = f"{spec.metric.type} = {value:g} against {target:g} per replica"
        if decision.changes(current):
            self.api.patch(
                DEPLOYMENTS, namespace, name, {"spec": {"replicas": decision.replicas}}, "scale"
            )
            direction = "up" if decision.replicas > current else "down"
            AUTOSCALER_DECISIONS.labels(direction=direction).inc()
            when = _iso_now()
            autoscaling.last_scale_time = when
            autoscaling.history = [
                *autoscaling.history,
                ScaleDecision(
                    time=when,
                    metric_value=value,
                    from_replicas=current,
                    to_replicas=decision.replicas,
                    reason=decision.reason,
                ),
            ][-HISTORY_KEPT:]
            self.api.post_event(
                body,
                type="Normal",
                reason=f"Scaled{direction.capitalize()}",
                message=f"{current} -> {decision.replicas} replicas: {decision.reason} ({summary})",
            )
            report("True", "Scaled", f"{summary}; {decision.reason}")
        else:
            report("True", "Stable", f"{summary}; {decision.reason}")
