"""The outermost layer of a replica's HTTP app: every request gets an id, no body larger than
the limit is read, and nothing that goes wrong inside reaches a client as a stack trace.

Written as plain ASGI (not a Starlette BaseHTTPMiddleware) so that it can count a body's bytes
as they arrive, before anything parses them, and leaves streamed answers unbuffered.
"""

import logging
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmkube.runtime.serving.protocol import ApiError

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class BodyTooLargeError(Exception):
    pass


def request_id(scope: Scope) -> str:
    """The id this request is logged and answered under (the client's, when it sent one)."""
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        sent = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode(), b"").decode()
        state["request_id"] = sent if _SANE_ID.match(sent) else f"req-{secrets.token_hex(12)}"
    found: str = state["request_id"]
    return found


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than this server's limit of {limit} bytes; send a "
        "shorter prompt (serving.maxRequestBytes sets the limit)",
        code="request_too_large",
    )


class RequestGuard:
    """Installed on the module-level app before any replica exists; each replica (a process of
    its own) sets its limit with `limit_bodies`."""

    max_body_bytes = DEFAULT_MAX_BODY_BYTES

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _answer(too_large(self.max_body_bytes), rid, scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise BodyTooLargeError
            return message

        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers") or [])
                if not any(name.lower() == REQUEST_ID_HEADER.encode() for name, _ in headers):
                    headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, counted, tagged)
        except BodyTooLargeError:
            if not started:
                await _answer(too_large(self.max_body_bytes), rid, scope, receive, send)
        except Exception:
            log.exception("request %s (%s %s) failed", rid, scope.get("method"), scope.get("path"))
            if not started:
                error = ApiError(
                    500,
                    f"the server failed to answer this request (request id {rid}); retry, and "
                    "report the id if it happens again",
                    kind="server_error",
                    code="internal_error",
                )
                await _answer(error, rid, scope, receive, send)


async def _answer(error: ApiError, rid: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = error.response()
    response.headers[REQUEST_ID_HEADER] = rid
    await response(scope, receive, send)


def limit_bodies(max_body_bytes: int) -> None:
    RequestGuard.max_body_bytes = max_body_bytes
