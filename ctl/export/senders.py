"""The two HTTP collectors `deliver` talks to, and what each answer means for the records.

A sender turns one request's answer into an `Outcome`: delivered, known duplicates, refused as
invalid (kept aside), to retry (with or without backing off), or an unknown outcome, which
for HEC (no idempotency) means the records may land twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from agentctl.ctl.export.bounds import json_line
from agentctl.ctl.export.formats import hec
from agentctl.ctl.export.formats.base import Context
from agentctl.ctl.export.records import epoch_ms
from agentctl.ctl.export.spool import Line

HEC_PATH: Final = "/services/collector/event"


@dataclass
class Outcome:
    """What one request did to the lines it carried."""

    delivered: int = 0
    duplicates: int = 0
    rejected: list[tuple[Line, str]] = field(default_factory=list)
    retry: list[Line] = field(default_factory=list)
    wait: bool = False  # back off before retrying
    uncertain: bool = False  # the collector may have taken the lines (HEC: maybe duplicated)
    shrink: bool = False  # 413: send fewer at a time
    fatal: str | None = None


def _json_body(r: httpx.Response) -> dict[str, Any]:
    try:
        doc = r.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _excerpt(r: httpx.Response) -> str:
    return f"HTTP {r.status_code}: {r.text[:300]}"


def _retry_all(lines: list[Line], *, uncertain: bool) -> Outcome:
    return Outcome(retry=list(lines), wait=True, uncertain=uncertain)


# -- Splunk HEC -----------------------------------------------------------------------------


def _is_envelope(doc: Mapping[str, Any]) -> bool:
    return "event" in doc and ("sourcetype" in doc or "time" in doc) and "ecs" not in doc


def hec_line(text: str, ctx: Context) -> str:
    """An HEC envelope for a spooled record: as is if it is one, else ECS/OCSF wrapped."""
    doc = json.loads(text)
    if _is_envelope(doc):
        return text
    host = doc.get("host", {}).get("name") if isinstance(doc.get("host"), dict) else None
    device = doc.get("device")
    host = host or (device.get("name") if isinstance(device, dict) else None) or "agentctl"
    if isinstance(doc.get("@timestamp"), str):
        time_ms = epoch_ms(datetime.fromisoformat(doc["@timestamp"]))
    elif isinstance(doc.get("time"), int):
        time_ms = doc["time"]
    else:
        time_ms = int(time.time() * 1000)
    return json_line(hec.wrap(doc, ctx, host=str(host), time_ms=time_ms))


class HecSender:
    def __init__(
        self,
        client: httpx.Client,
        url: str,
        token: str | None,
        channel: str,
        *,
        ack: bool,
        ack_timeout: float,
        sleep: Callable[[float], None],
        ctx: Context,
    ) -> None:
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        path = path if path.endswith(HEC_PATH) else path + "/event"
        self.url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self.ack_url = urlunsplit(
            (parts.scheme, parts.netloc, path[: -len("/event")] + "/ack", "", "")
        )
        self.client, self.ack, self.ack_timeout, self.sleep, self.ctx = (
            client,
            ack,
            ack_timeout,
            sleep,
            ctx,
        )
        self.headers = {"Content-Type": "application/json", "X-Splunk-Request-Channel": channel}
        if token:
            self.headers["Authorization"] = f"Splunk {token}"

    def send(self, lines: list[Line]) -> Outcome:
        body = "".join(hec_line(line.text, self.ctx) + "\n" for line in lines).encode()
        try:
            r = self.client.post(self.url, content=body, headers=self.headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            return _retry_all(lines, uncertain=False)
        except httpx.TransportError:  # sent, maybe taken: read timeout, dropped connection
            return _retry_all(lines, uncertain=True)
        if r.status_code == 200:
            ack_id = _json_body(r).get("ackId")
            if self.ack and ack_id is not None and not self._acked(int(ack_id)):
                return _retry_all(lines, uncertain=True)
            return Outcome(delivered=len(lines))
        return self._refused(r, lines)

    def _refused(self, r: httpx.Response, lines: list[Line]) -> Outcome:
        code = r.status_code
        if code in (429, 503):  # "server is busy": not taken
            return _retry_all(lines, uncertain=False)
        if code == 413:
            return Outcome(retry=list(lines), shrink=True)
        if code >= 500:
            return _retry_all(lines, uncertain=True)
        doc = _json_body(r)
        bad = doc.get("invalid-event-number")
        if code == 400 and isinstance(bad, int) and 0 <= bad < len(lines):
            reason = f"HEC code {doc.get('code')}: {doc.get('text')}"
            return Outcome(delivered=bad, rejected=[(lines[bad], reason)], retry=lines[bad + 1 :])
        return Outcome(fatal=_excerpt(r))

    def _acked(self, ack_id: int) -> bool:
        """Poll the ack endpoint until the batch is indexed or `ack_timeout` passes."""
        deadline = time.monotonic() + self.ack_timeout
        delay = 0.05
        while True:
            try:
                r = self.client.post(self.ack_url, json={"acks": [ack_id]}, headers=self.headers)
                acks = _json_body(r).get("acks", {}) if r.status_code == 200 else {}
                if isinstance(acks, dict) and acks.get(str(ack_id)) is True:
                    return True
            except httpx.TransportError:
                pass
            if time.monotonic() + delay > deadline:
                return False
            self.sleep(delay)
            delay = min(delay * 2, 2.0)


# -- Elastic _bulk --------------------------------------------------------------------------


def bulk_source(text: str) -> str:
    """The document Elastic indexes for a spooled record (an HEC envelope is unwrapped)."""
    doc = json.loads(text)
    return json_line(doc["event"]) if _is_envelope(doc) else text


def doc_id(source: str) -> str:
    """The `_id` of a document: its sha256, so a resent document is a 409, not a copy."""
    return hashlib.sha256(source.encode()).hexdigest()


class BulkSender:
    def __init__(
        self, client: httpx.Client, url: str, token: str | None, scheme: str, index: str | None
    ) -> None:
        self.client, self.url, self.index = client, url, index
        self.headers = {"Content-Type": "application/x-ndjson"}
        if token:
            self.headers["Authorization"] = f"{scheme} {token}"

    def send(self, lines: list[Line]) -> Outcome:
        parts = []
        for line in lines:
            source = bulk_source(line.text)
            action: dict[str, Any] = {"_id": doc_id(source)}
            if self.index:
                action["_index"] = self.index
            parts.append(json_line({"create": action}) + "\n" + source + "\n")
        try:
            r = self.client.post(self.url, content="".join(parts).encode(), headers=self.headers)
        except httpx.TransportError:  # whatever landed answers 409 next time
            return _retry_all(lines, uncertain=False)
        if r.status_code == 200:
            return self._items(_json_body(r), lines)
        if r.status_code == 413:
            return Outcome(retry=list(lines), shrink=True)
        if r.status_code == 429 or r.status_code >= 500:
            return _retry_all(lines, uncertain=False)
        return Outcome(fatal=_excerpt(r))

    @staticmethod
    def _items(doc: Mapping[str, Any], lines: list[Line]) -> Outcome:
        items = doc.get("items")
        if not isinstance(items, list) or len(items) != len(lines):
            return _retry_all(lines, uncertain=False)
        out = Outcome()
        for line, item in zip(lines, items, strict=True):
            result: Any = next(iter(item.values()), {}) if isinstance(item, dict) else {}
            status = int(result.get("status", 0)) if isinstance(result, dict) else 0
            if status in (200, 201):
                out.delivered += 1
            elif status == 409:
                out.duplicates += 1
            elif status == 429 or status >= 500 or status == 0:
                out.retry.append(line)
                out.wait = True
            else:
                error = result.get("error", {}) if isinstance(result, dict) else {}
                reason = f"{status} {error.get('type')}: {error.get('reason')}"
                out.rejected.append((line, reason))
        return out


Sender = HecSender | BulkSender
