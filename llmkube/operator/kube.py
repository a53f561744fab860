"""Kubernetes I/O for the operator: raw JSON over the official client's connection handling.

Objects stay plain dicts (no model classes): the builders produce dicts and the operator must keep
up with thousands of objects, where the client's model (de)serialization would dominate.
"""

import datetime
import json
import logging
import socket
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from llmkube.api import contract

Body = dict[str, Any]
COMPONENT = "llmkube-operator"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


CONFIGMAPS = Resource("", "v1", "configmaps")
EVENTS = Resource("", "v1", "events")
SECRETS = Resource("", "v1", "secrets")
PODS = Resource("", "v1", "pods")
RAYJOBS = Resource(*contract.RAYJOBS)
TRAINING_JOBS = Resource(*contract.TRAINING_JOBS)
TUNING_JOBS = Resource(*contract.TUNING_JOBS)
DEPLOYMENTS = Resource(*contract.DEPLOYMENTS)
MODEL_PUBLISHERS = {"LLMTrainingJob": TRAINING_JOBS, "LLMTuningJob": TUNING_JOBS}
"""The kinds of job a deployment may serve the model of (TrainingJobRef.kind)."""
RAYSERVICES = Resource(*contract.RAYSERVICES)
RAYCLUSTERS = Resource(*contract.RAYCLUSTERS)
SERVICES = Resource("", "v1", "services")
SERVICE_MONITORS = Resource("monitoring.coreos.com", "v1", "servicemonitors")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status in (0, 429) or self.status >= 500


class ConflictError(ApiError):
    """409: the object exists already (create) or changed meanwhile (update)."""


class KubeApi:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        # Events are best-effort: posting them off the reconcile's path saves a round-trip.
        self._event_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="events")

    @classmethod
    def from_environment(cls, pool_size: int = 64, kubeconfig: str | None = None) -> "KubeApi":
        """In-cluster credentials, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        configuration = client.Configuration()
        if kubeconfig is not None:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    def _request(
        self, method: str, path: str, body: Body | None = None, content_type: str | None = None
    ) -> Body:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            method, url, headers, payload, _ = self.api_client.param_serialize(
                method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
            )
            response = self.api_client.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=30
            )
            data = response.read()  # type: ignore[no-untyped-call]
            status = int(response.status)
        except ApiException as error:
            status, data = int(error.status or 0), (error.body or "").encode()
        except HTTPError as error:
            raise ApiError(0, f"apiserver unreachable: {error}") from None
        if not 200 <= status <= 299:
            kind = ConflictError if status == 409 else ApiError
            raise kind(status, _api_message(data))
        parsed: Body = json.loads(data) if data else {}
        return parsed

    def get(self, resource: Resource, namespace: str, name: str) -> Body | None:
        try:
            return self._request("GET", resource.path(namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(
        self,
        resource: Resource,
        namespace: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Body]:
        path = resource.path(namespace)
        query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        selected = {key: value for key, value in query.items() if value is not None}
        if selected:
            path += "?" + urllib.parse.urlencode(selected)
        items: list[Body] = self._request("GET", path)["items"]
        return items

    def create(self, resource: Resource, namespace: str, body: Body) -> Body:
        return self._request("POST", resource.path(namespace), body)

    def create_or_get(self, resource: Resource, namespace: str, body: Body) -> tuple[Body, bool]:
        """(object, created): creates it, or returns the one already there under that name."""
        try:
            return self.create(resource, namespace, body), True
        except ConflictError:
            existing = self.get(resource, namespace, body["metadata"]["name"])
            if existing is None:  # deleted in between: the next reconcile creates it
                raise ApiError(409, f"{body['metadata']['name']} vanished during create") from None
            return existing, False

    def post_event(self, involved: Body, *, type: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about `involved` in the background; a lost Event is only logged."""
        self._event_pool.submit(self._post_event, involved, type, reason, message)

    def _post_event(self, involved: Body, type: str, reason: str, message: str) -> None:
        meta = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.create(EVENTS, meta["namespace"], event)
        except ApiError as error:
            log.warning("could not post event %s on %s: %s", reason, meta["name"], error)

    def delete(self, resource: Resource, namespace: str, name: str) -> None:
        try:
            self._request("DELETE", resource.path(namespace, name))
        except ApiError as error:
            if error.status != 404:
                raise

    def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Body,
        subresource: str | None = None,
    ) -> Body:
        return self._request(
            "PATCH",
            resource.path(namespace, name, subresource),
            patch,
            content_type="application/merge-patch+json",
        )


def _api_message(data: bytes | str) -> str:
    try:
        return str(json.loads(data).get("message") or data)
    except (TypeError, ValueError, AttributeError):
        return str(data)[:500]
