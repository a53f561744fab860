"""What llmkube writes for Kueue (kueue.sigs.k8s.io): the labels it reads on a RayJob or
RayService. Kueue then owns suspension: it creates the object's Workload, keeps it suspended
until its LocalQueue's ClusterQueue admits it, and may suspend it again to preempt it; the
operator never writes that field of a queued object afterwards."""

from llmkube.api.common import Scheduling

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"


def kueue_labels(scheduling: Scheduling) -> dict[str, str]:
    labels = {}
    if scheduling.queue_name is not None:
        labels[QUEUE_LABEL] = scheduling.queue_name
    if scheduling.priority_class_name is not None:
        labels[PRIORITY_LABEL] = scheduling.priority_class_name
    return labels


def queued_message(scheduling: Scheduling, ran_before: bool) -> tuple[str, str]:
    """(reason, message) for a queued object that Kueue holds suspended."""
    queue = f"LocalQueue {scheduling.queue_name}"
    if ran_before:
        return (
            "Preempted",
            f"Kueue suspended it to make room for other work ({queue}); it resumes when "
            "re-admitted",
        )
    return "Queued", f"waiting in {queue} for Kueue to admit it (kubectl get workloads)"
