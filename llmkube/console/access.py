"""Who is looking, and what they may see. Locally anyone who reaches 127.0.0.1 sees every run
(`OpenAccess`). In a cluster the console acts for the person behind each request: their bearer
token is checked with a TokenReview, and each object with a SubjectAccessReview for their user
and groups, so a page shows what `kubectl` would show them (`KubeAccess`). The console's own
ServiceAccount only reads; it needs `create` on those two reviews and nothing else that writes."""

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

GROUP = "llmkube.io"
REVIEW_TTL_SECONDS = 30.0
"""How long an answer about a token or a permission is reused: RBAC changes show within it."""


@dataclass(frozen=True)
class Viewer:
    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)


class Access(Protocol):
    login_required: bool

    def viewer(self, token: str | None) -> Viewer | None:
        """The person a token belongs to; None when it is missing, expired or unknown."""
        ...

    def allowed(
        self, viewer: Viewer | None, verb: str, resource: str, namespace: str, name: str = ""
    ) -> bool:
        """Whether they may `verb` the `resource` (of llmkube.io, or `events`) in `namespace`
        ("" for every namespace)."""
        ...


class OpenAccess:
    """`llmkube run` and `llmkube console` on a laptop: bound to 127.0.0.1, no login."""

    login_required = False

    def viewer(self, token: str | None) -> Viewer | None:
        return Viewer("local")

    def allowed(
        self, viewer: Viewer | None, verb: str, resource: str, namespace: str, name: str = ""
    ) -> bool:
        return True


class _Expiring:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = compute()
        with self._lock:
            if len(self._values) > 10_000:  # many tokens or objects: start over
                self._values.clear()
            self._values[key] = (now + self.ttl, value)
        return value


class KubeAccess:
    login_required = True

    def __init__(self, api_client: Any, ttl: float = REVIEW_TTL_SECONDS) -> None:
        from kubernetes import client

        self._authentication = client.AuthenticationV1Api(api_client)
        self._authorization = client.AuthorizationV1Api(api_client)
        self._client = client
        self._tokens = _Expiring(ttl)
        self._decisions = _Expiring(ttl)

    def viewer(self, token: str | None) -> Viewer | None:
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()  # never keep the token itself
        found: Viewer | None = self._tokens.get(digest, lambda: self._review_token(token))
        return found

    def _review_token(self, token: str) -> Viewer | None:
        review = self._authentication.create_token_review(
            self._client.V1TokenReview(spec=self._client.V1TokenReviewSpec(token=token))
        )
        status = review.status
        if not status or not status.authenticated or not status.user:
            return None
        user = status.user
        return Viewer(
            user=user.username or "",
            groups=tuple(user.groups or ()),
            uid=user.uid or "",
            extra={key: list(values) for key, values in (user.extra or {}).items()},
        )

    def allowed(
        self, viewer: Viewer | None, verb: str, resource: str, namespace: str, name: str = ""
    ) -> bool:
        if viewer is None:
            return False
        key = (viewer, verb, resource, namespace, name)
        decision: bool = self._decisions.get(
            key, lambda: self._review_access(viewer, verb, resource, namespace, name)
        )
        return decision

    def _review_access(
        self, viewer: Viewer, verb: str, resource: str, namespace: str, name: str
    ) -> bool:
        attributes = self._client.V1ResourceAttributes(
            group="" if resource == "events" else GROUP,
            resource=resource,
            verb=verb,
            namespace=namespace or None,
            name=name or None,
        )
        review = self._authorization.create_subject_access_review(
            self._client.V1SubjectAccessReview(
                spec=self._client.V1SubjectAccessReviewSpec(
                    user=viewer.user,
                    groups=list(viewer.groups),
                    uid=viewer.uid or None,
                    extra=viewer.extra or None,
                    resource_attributes=attributes,
                )
            )
        )
        return bool(review.status and review.status.allowed)
