"""The console's web app: pages rendered on the server (Jinja2), live parts over server-sent
events (htmx's SSE extension for tables, a few lines of our own script for charts), and the
playground's requests relayed to a deployment's OpenAI API. Page handlers run in FastAPI's
thread pool: a source reads files or object storage."""

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import httpx
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from llmkube.console import sse
from llmkube.console.access import Access, OpenAccess
from llmkube.console.csrf import CSRF_HEADER, SESSION_COOKIE, CsrfTokens
from llmkube.console.curves import Curve, RunCurves, since, thin
from llmkube.console.formatting import MISSING, duration, number, when
from llmkube.console.searches import SearchDetail
from llmkube.console.serving_numbers import PrometheusNumbers
from llmkube.console.source import (
    ConsoleSource,
    DeploymentRow,
    JobDetail,
    JobQuery,
    JobsPage,
    Visible,
    everywhere,
)

HERE = Path(__file__).parent
TOKEN_COOKIE = "llmkube_console_token"
API_KEY_HEADER = "X-Deployment-Api-Key"

PAGE_SIZE = 50
PHASES = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed", "Stopped")
# The console relays the playground to the deployment: generation takes long on CPUs.
RELAY_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=30.0, pool=10.0)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)


def create_app(
    source: ConsoleSource,
    *,
    access: Access | None = None,
    csrf: CsrfTokens | None = None,
    prometheus: PrometheusNumbers | None = None,
) -> FastAPI:
    """`prometheus`: where the deployments page reads live request and token rates."""
    app = FastAPI(title="llmkube console", docs_url=None, redoc_url=None, openapi_url=None)
    tokens = csrf or CsrfTokens()
    who = access or OpenAccess()
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(number=number, when=when, duration=duration)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def session_and_headers(request: Request, call_next: Any) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        fresh = session is None
        request.state.session = session or CsrfTokens.new_session()
        request.state.viewer = await asyncio.to_thread(who.viewer, _bearer_token(request))
        response: Response
        if who.login_required and request.state.viewer is None and not _public(request):
            response = _login_needed(request)
        else:
            response = await call_next(request)
        if fresh:
            response.set_cookie(
                SESSION_COOKIE, request.state.session, httponly=True, samesite="strict"
            )
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def page(request: Request, name: str, **context: Any) -> Response:
        context["csrf_token"] = tokens.token(request.state.session)
        context["viewer"] = request.state.viewer if who.login_required else None
        return templates.TemplateResponse(request, name, context)

    def require_csrf(request: Request, sent: str | None = None) -> None:
        token = sent if sent is not None else request.headers.get(CSRF_HEADER)
        if not tokens.valid(request.cookies.get(SESSION_COOKIE), token):
            raise HTTPException(
                403, f"missing or wrong {CSRF_HEADER} header: reload the page and try again"
            )

    def visible(request: Request, resource: str) -> Visible:
        """Namespaces whose objects the viewer may list, as `kubectl get` would allow."""
        viewer = request.state.viewer
        if who.allowed(viewer, "list", resource, ""):
            return everywhere
        return lambda namespace: who.allowed(viewer, "list", resource, namespace)

    def may_get(request: Request, resource: str, namespace: str, name: str) -> bool:
        return who.allowed(request.state.viewer, "get", resource, namespace, name)

    def find_job(request: Request, namespace: str, name: str) -> JobDetail:
        # A job the viewer may not see reads as one that does not exist: no names leak.
        allowed = may_get(request, "llmtrainingjobs", namespace, name)
        detail = source.job(namespace, name) if allowed else None
        if detail is None:
            raise HTTPException(404, f"no training job {namespace}/{name}")
        if not may_get(request, "events", namespace, ""):
            detail = dataclasses.replace(detail, events=[])
        return detail

    def find_deployment(request: Request, namespace: str, name: str) -> DeploymentRow:
        allowed = may_get(request, "llmdeployments", namespace, name)
        deployment = source.deployment(namespace, name) if allowed else None
        if deployment is None:
            raise HTTPException(404, f"no deployment {namespace}/{name}")
        return deployment

    def find_search(request: Request, namespace: str, name: str) -> SearchDetail:
        allowed = may_get(request, "llmtuningjobs", namespace, name)
        detail = source.search(namespace, name) if allowed else None
        if detail is None:
            raise HTTPException(404, f"no search {namespace}/{name}")
        return detail

    def listing(request: Request, shown: JobsFilter) -> JobsPage:
        offset = (shown.page - 1) * PAGE_SIZE
        namespaces = visible(request, "llmtrainingjobs")
        return source.jobs(JobQuery(shown.q, shown.phase, offset, PAGE_SIZE, namespaces))

    def rows_html(request: Request, shown: JobsFilter) -> str:
        rows = listing(request, shown).rows
        return templates.get_template("_job_rows.html").render(rows=rows)

    def deployment_rows_context(request: Request) -> dict[str, Any]:
        shown = source.deployments(visible(request, "llmdeployments"))
        numbers = (
            {(d.namespace, d.name): prometheus.numbers(d.series) for d in shown}
            if prometheus is not None
            else None
        )
        return {"deployments": shown, "numbers": numbers}

    @app.get("/login")
    def login_page(request: Request) -> Response:
        return page(request, "login.html", error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace"))
        require_csrf(request, (form.get("csrf_token") or [""])[0])
        token = (form.get("token") or [""])[0].strip()
        viewer = await asyncio.to_thread(who.viewer, token)
        if viewer is None:
            request.state.viewer = None
            response = page(request, "login.html", error="The cluster does not accept this token.")
            response.status_code = 401
            return response
        response = RedirectResponse("/jobs", status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace"))
        require_csrf(request, (form.get("csrf_token") or [""])[0])
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE)
        return response

    @app.get("/")
    def home() -> Response:
        return RedirectResponse("/jobs")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    @app.get("/jobs")
    def jobs(request: Request, shown: Annotated[JobsFilter, Depends()]) -> Response:
        found = listing(request, shown)
        return page(
            request,
            "jobs.html",
            listing=found,
            rows=found.rows,
            q=shown.q,
            phase=shown.phase,
            phases=PHASES,
            page_number=shown.page,
            pages=max(1, -(-found.total // PAGE_SIZE)),
            stream_url="/jobs/stream?" + shown.query(shown.page),
            page_url=lambda n: "/jobs?" + shown.query(n),
        )

    @app.get("/jobs/stream")
    def jobs_stream(request: Request, shown: Annotated[JobsFilter, Depends()]) -> Response:
        return _event_stream(sse.on_change(lambda: [("rows", rows_html(request, shown))]))

    @app.get("/jobs/{namespace}/{name}")
    def job(request: Request, namespace: str, name: str) -> Response:
        detail = find_job(request, namespace, name)
        curves = source.curves(namespace, name)
        return page(
            request,
            "job.html",
            job=detail,
            curves_json=json.dumps(_curves_payload(curves)),
            evaluations=curves.evaluations,
        )

    @app.get("/jobs/{namespace}/{name}/curves")
    def job_curves(request: Request, namespace: str, name: str) -> JSONResponse:
        find_job(request, namespace, name)
        return JSONResponse(_curves_payload(source.curves(namespace, name)))

    @app.get("/jobs/{namespace}/{name}/stream")
    def job_stream(request: Request, namespace: str, name: str) -> Response:
        """The page's summary and evaluations, as HTML for htmx to swap in."""
        find_job(request, namespace, name)
        summary = templates.get_template("_job_summary.html")
        evaluations = templates.get_template("_evaluations.html")

        def read() -> list[tuple[str, str]]:
            try:
                detail = find_job(request, namespace, name)
            except HTTPException:  # deleted, or the viewer lost the right to see it
                return []
            curves = source.curves(namespace, name)
            return [
                ("summary", summary.render(job=detail)),
                ("evaluations", evaluations.render(evaluations=curves.evaluations)),
            ]

        return _event_stream(sse.on_change(read))

    @app.get("/jobs/{namespace}/{name}/points")
    def job_points(request: Request, namespace: str, name: str, after: int = -1) -> Response:
        """New curve points, as JSON, each time the run logs steps after `after`."""
        find_job(request, namespace, name)
        drawn = {"step": after}

        def read() -> list[tuple[str, str]]:
            curves = source.curves(namespace, name)
            if curves.last_step <= drawn["step"]:
                return []
            new = _curves_payload(curves, after=drawn["step"])
            drawn["step"] = curves.last_step
            return [("points", json.dumps(new))]

        return _event_stream(sse.on_change(read))

    @app.get("/compare")
    def compare(request: Request, run: Annotated[list[str] | None, Query()] = None) -> Response:
        runs = []
        for ref in run or []:
            namespace, _, name = ref.partition("/")
            detail = find_job(request, namespace, name)
            runs.append((detail, _curves_payload(source.curves(namespace, name))))
        keys = sorted({key for detail, _ in runs for key in detail.hyperparameters})
        settings = []
        for key in keys:
            values = [detail.hyperparameters.get(key, MISSING) for detail, _ in runs]
            settings.append((key, values, len(set(values)) > 1))
        settings.sort(key=lambda row: not row[2])  # what differs first: that is the question
        return page(
            request,
            "compare.html",
            runs=[detail for detail, _ in runs],
            settings=settings,
            curves_json=json.dumps(
                {f"{d.row.namespace}/{d.row.name}": curves for d, curves in runs}
            ),
        )

    @app.get("/searches")
    def searches(request: Request) -> Response:
        shown = source.searches(visible(request, "llmtuningjobs"))
        return page(request, "searches.html", searches=shown)

    @app.get("/searches/{namespace}/{name}")
    def search(request: Request, namespace: str, name: str) -> Response:
        return page(request, "search.html", search=find_search(request, namespace, name))

    @app.get("/deployments")
    def deployments(request: Request) -> Response:
        return page(request, "deployments.html", **deployment_rows_context(request))

    @app.get("/deployments/rows")
    def deployment_rows(request: Request) -> Response:
        return page(request, "_deployment_rows.html", **deployment_rows_context(request))

    @app.get("/deployments/{namespace}/{name}/playground")
    def playground(request: Request, namespace: str, name: str) -> Response:
        return page(
            request, "playground.html", deployment=find_deployment(request, namespace, name)
        )

    @app.get("/api/deployments/{namespace}/{name}/models")
    async def models(request: Request, namespace: str, name: str) -> Response:
        deployment = await asyncio.to_thread(find_deployment, request, namespace, name)
        async with httpx.AsyncClient(timeout=RELAY_TIMEOUT) as client:
            try:
                answer = await client.get(f"{_endpoint(deployment)}/models", headers=_auth(request))
            except httpx.HTTPError as failure:
                return _unreachable(deployment, failure)
        return Response(answer.content, answer.status_code, media_type="application/json")

    @app.post("/api/deployments/{namespace}/{name}/{kind}")
    async def relay(request: Request, namespace: str, name: str, kind: str) -> Response:
        require_csrf(request)
        if kind not in ("chat", "completions"):
            raise HTTPException(404, f"no {kind} API: use chat or completions")
        deployment = await asyncio.to_thread(find_deployment, request, namespace, name)
        path = "chat/completions" if kind == "chat" else "completions"
        return await _relay(
            f"{_endpoint(deployment)}/{path}", await request.body(), deployment, _auth(request)
        )

    @app.exception_handler(HTTPException)
    async def error(request: Request, failure: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.method != "GET":
            return JSONResponse({"error": {"message": failure.detail}}, failure.status_code)
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": failure.status_code, "message": failure.detail, "csrf_token": ""},
            status_code=failure.status_code,
        )

    return app


class JobsFilter:
    """The jobs page's query string: a name filter, a phase and a page number."""

    def __init__(self, q: str = "", phase: str = "", page: Annotated[int, Query(ge=1)] = 1):
        self.q, self.phase, self.page = q, phase, page

    def query(self, page: int) -> str:
        return urlencode({"q": self.q, "phase": self.phase, "page": page})


def _curves_payload(curves: RunCurves, *, after: int | None = None) -> dict[str, Any]:
    def shape(curve: Curve) -> dict[str, list[Any]]:
        shown = since(curve, after) if after is not None else thin(curve)
        return {"steps": shown.steps, "values": shown.values}

    return {
        "train_loss": shape(curves.train_loss),
        "eval_loss": shape(curves.eval_loss),
        "learning_rate": shape(curves.learning_rate),
        "tokens_per_second": shape(curves.tokens_per_second),
        "last_step": curves.last_step,
    }


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _endpoint(deployment: DeploymentRow) -> str:
    if deployment.endpoint is None:
        raise HTTPException(
            409, f"{deployment.name} is not serving yet (phase {deployment.phase}); try again soon"
        )
    return deployment.endpoint.rstrip("/")


def _unreachable(deployment: DeploymentRow, failure: Exception) -> JSONResponse:
    message = f"cannot reach {deployment.name} at {deployment.endpoint}: {failure}"
    return JSONResponse({"error": {"message": message}}, 502)


def _auth(request: Request) -> dict[str, str]:
    """The deployment's API key, as the person typed it into the playground."""
    key = request.headers.get(API_KEY_HEADER)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(TOKEN_COOKIE)


def _public(request: Request) -> bool:
    return request.url.path in ("/login", "/healthz") or request.url.path.startswith("/static/")


def _login_needed(request: Request) -> Response:
    if request.method == "GET" and not request.url.path.startswith("/api/"):
        return RedirectResponse("/login", status_code=303)
    message = "sign in: send your Kubernetes bearer token (Authorization: Bearer …)"
    return JSONResponse({"error": {"message": message}}, 401)


async def _relay(
    url: str, body: bytes, deployment: DeploymentRow, auth: dict[str, str]
) -> Response:
    """The deployment's answer as it comes: a stream stays a stream, an error keeps its status
    and its OpenAI-shaped body."""
    client = httpx.AsyncClient(timeout=RELAY_TIMEOUT)
    headers = {"Content-Type": "application/json", **auth}
    try:
        upstream = await client.send(
            client.build_request("POST", url, content=body, headers=headers), stream=True
        )
    except httpx.HTTPError as failure:
        await client.aclose()
        return _unreachable(deployment, failure)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    return StreamingResponse(
        chunks(),
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type", "application/json"),
        headers={"Cache-Control": "no-store"},
    )
