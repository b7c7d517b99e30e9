"""A generic HTTP call, for APIs that have no task of their own."""

from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict

from .. import netguard
from ..decorator import task
from ..errors import TaskError


class HttpAnswer(TypedDict):
    status: int
    headers: dict[str, str]
    json: object | None
    text: str | None


@task("http.request", category="get", capabilities=["network"], timeout=120)
def http_request(url: str, method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET",
                 headers: dict[str, str] | None = None, body: object | None = None,
                 timeout_s: float = 30.0, fail_on_status: bool = True) -> HttpAnswer:
    """Calls an HTTP API: JSON `body` sent as JSON; a JSON answer parsed, any other kept as text."""
    import httpx

    netguard.check_url(url)
    try:
        with netguard.client(follow_redirects=True, timeout=timeout_s) as c:
            r = c.request(method, url, headers=headers, json=body)
    except httpx.TransportError as e:
        raise TaskError(f"{method} {url} failed: {e}", retryable=True) from None
    if fail_on_status and r.status_code >= 400:
        raise TaskError(f"{method} {url} answered {r.status_code}: {r.text[:200]}",
                        retryable=r.status_code >= 500 or r.status_code == 429)
    is_json = "json" in r.headers.get("content-type", "")
    try:
        parsed = r.json() if is_json else None
    except ValueError:
        parsed, is_json = None, False
    return {"status": r.status_code, "headers": dict(r.headers), "json": parsed, "text": None if is_json else r.text}
