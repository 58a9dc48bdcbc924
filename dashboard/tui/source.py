"""Where `agentctl watch` gets its data: the local store's read model, or a remote dashboard's
JSON API. Both return the same frozen views, so the screens never know which one they read.

Calls block (SQL or HTTP) and run in the TUI's worker threads, never on the event loop.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx

from agentctl.collectors.store import EventView
from agentctl.dashboard.actions import ActionResult
from agentctl.dashboard.readmodel import FleetView, NodeDetail, ReadModel, ServingView
from agentctl.dashboard.serialize import from_json

T = TypeVar("T")


class SourceError(Exception):
    """A read failed (unreachable, refused, malformed): the TUI shows it and keeps old data."""


class DataSource(Protocol):
    def fleet(self) -> FleetView: ...

    def node(self, name: str, range_name: str = "24h") -> NodeDetail | None: ...

    def serving(self) -> ServingView: ...

    def events(self, node: str | None = None, limit: int = 50) -> list[EventView]: ...


class LocalSource:
    """Reads the store on this machine through the read model the web dashboard uses."""

    def __init__(self, model: ReadModel) -> None:
        self.model = model

    def fleet(self) -> FleetView:
        return self.model.fleet()

    def node(self, name: str, range_name: str = "24h") -> NodeDetail | None:
        return self.model.node(name, range_name)

    def serving(self) -> ServingView:
        return self.model.serving()

    def events(self, node: str | None = None, limit: int = 50) -> list[EventView]:
        return self.model.events(node=node, limit=limit)


class RemoteSource:
    """Reads a remote `agentctl dashboard serve` over its token-authenticated JSON API.

    One pooled client shared by the worker threads (httpx clients are thread-safe); `close()`
    releases it. Every answer is the `{ok, data, errors, meta}` envelope.
    """

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 10.0, verify: bool = True
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            verify=verify,
        )

    def close(self) -> None:
        self._client.close()

    def fleet(self) -> FleetView:
        return self._view(FleetView, self._get("/api/v1/fleet"))

    def node(self, name: str, range_name: str = "24h") -> NodeDetail | None:
        path = f"/api/v1/nodes/{quote(name, safe='')}"
        data = self._get(path, {"range": range_name}, missing_ok=True)
        return None if data is None else self._view(NodeDetail, data)

    def serving(self) -> ServingView:
        return self._view(ServingView, self._get("/api/v1/serving"))

    def events(self, node: str | None = None, limit: int = 50) -> list[EventView]:
        params: dict[str, str | int] = {"limit": limit}
        if node is not None:
            params["node"] = node
        data = self._get("/api/v1/events", params)
        if not isinstance(data, list):
            raise SourceError(f"{self.base_url}/api/v1/events: expected a list of events")
        return [self._view(EventView, item) for item in data]

    def role(self) -> str:
        """The token's role on the remote dashboard (what `l` is allowed to do)."""
        data = self._get("/api/v1/me")
        return str(data.get("role", "viewer")) if isinstance(data, dict) else "viewer"

    def actions(self) -> RemoteActions:
        return RemoteActions(self)

    def _post(self, path: str) -> Any:
        url = f"{self.base_url}{path}"
        try:
            resp = self._client.post(path)
        except httpx.HTTPError as exc:
            raise SourceError(f"{url}: {exc}") from exc
        return self._data(url, resp)

    def _view(self, cls: type[T], data: Any) -> T:
        try:
            return from_json(cls, data)
        except (ValueError, TypeError) as exc:
            raise SourceError(f"{self.base_url}: unexpected {cls.__name__} data: {exc}") from exc

    def _get(
        self, path: str, params: dict[str, str | int] | None = None, *, missing_ok: bool = False
    ) -> Any:
        """The envelope's `data`; a transport error, non-JSON body or non-ok envelope raises
        SourceError carrying the server's own first error message where it sent one."""
        url = f"{self.base_url}{path}"
        try:
            resp = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise SourceError(f"{url}: {exc}") from exc
        if missing_ok and resp.status_code == 404:
            return None
        return self._data(url, resp)

    @staticmethod
    def _data(url: str, resp: httpx.Response) -> Any:
        try:
            doc = resp.json()
        except ValueError:
            raise SourceError(f"{url}: HTTP {resp.status_code}, not a JSON answer") from None
        if not isinstance(doc, dict):
            raise SourceError(f"{url}: HTTP {resp.status_code}, not an agentctl envelope")
        if resp.is_error or doc.get("ok") is not True:
            raise SourceError(f"{url}: {_first_error(doc) or f'HTTP {resp.status_code}'}")
        return doc.get("data")


class RemoteActions:
    """The remote dashboard's operator actions (`POST /api/v1/nodes/<n>/l1|drain|undrain`
    with the token; the server checks the role)."""

    def __init__(self, source: RemoteSource) -> None:
        self._source = source

    def _act(self, node: str, what: str) -> ActionResult:
        try:
            data = self._source._post(f"/api/v1/nodes/{quote(node, safe='')}/{what}")
        except SourceError as exc:
            return ActionResult(False, exc.args[0] if exc.args else str(exc))
        return from_json(ActionResult, data)

    def run_l1(self, node: str) -> ActionResult:
        return self._act(node, "l1")

    def drain(self, node: str) -> ActionResult:
        return self._act(node, "drain")

    def undrain(self, node: str) -> ActionResult:
        return self._act(node, "undrain")


def _first_error(doc: dict[str, Any]) -> str | None:
    errors = doc.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        message = errors[0].get("message")
        if isinstance(message, str) and message:
            return message
    return None
