"""Querying Prometheus' HTTP API for one number."""

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class PrometheusError(Exception):
    """Prometheus could not be reached or rejected the query."""


def parse_value(payload: dict[str, Any]) -> float | None:
    """The value of an instant query's result: None when it returned no series."""
    if payload.get("status") != "success":
        raise PrometheusError(payload.get("error") or "query failed")
    data = payload.get("data") or {}
    result = data.get("result") or []
    if data.get("resultType") == "scalar":
        return float(result[1])
    if data.get("resultType") != "vector":
        raise PrometheusError(f"expected one number, got a {data.get('resultType')}")
    if not result:
        return None
    # sum() and histogram_quantile() give one series; several are added up.
    values = [float(sample["value"][1]) for sample in result]
    return None if any(v != v for v in values) else sum(values)  # NaN: no data yet


def query(base_url: str, promql: str, timeout: float = 5.0) -> float | None:
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            payload = json.loads(error.read())
        except ValueError:
            raise PrometheusError(f"{base_url}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise PrometheusError(f"cannot query {base_url}: {error}") from None
    return parse_value(payload)
