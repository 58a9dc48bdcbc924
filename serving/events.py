"""vLLM's KV cache event wire format, and the ZMQ publisher / subscriber that carry it.

Why vLLM's format: a router built on these events can later follow a real vLLM (or Dynamo's
mocker, or SGLang) instead of our simulated worker without changing a line.

Wire format (vllm `vllm/distributed/kv_events.py`: msgspec structs with `array_like=True`,
`tag=True`, `omit_defaults=True`, msgpack-encoded)::

    batch         = [ts: float, [event, ...], data_parallel_rank: int, instance_id: str]
    BlockStored   = ["BlockStored", block_hashes, parent_block_hash | None, token_ids,
                     block_size, lora_id | None, medium | None, lora_name | None]
    BlockRemoved  = ["BlockRemoved", block_hashes, medium | None]
    AllBlocksCleared = ["AllBlocksCleared"]

`instance_id` is agentctl's: the worker's boot nonce, a trailing element that vLLM's own
msgspec decoder skips (array_like structs ignore extra trailing fields); vLLM sends none.

Decoding is tolerant, as Dynamo's consumer is: extra trailing fields are ignored (newer vLLMs
append `extra_keys`, `group_idx`, ...), the map form (`{"type": "BlockStored", ...}`, what a
producer without `array_like` emits) is accepted, hashes may be unsigned or signed 64-bit ints
or bytes (normalised to unsigned ints; bytes read big-endian, vLLM's external-id convention),
and unknown event tags are skipped.

Transport, as vLLM's `ZmqEventPublisher`: a PUB socket sends multipart frames
`(topic, seq as 8-byte big-endian, payload)` with `seq` counting batches from 0; a ROUTER socket
keeps the last `buffer_steps` batches for replay: a client sends the start seq (8-byte
big-endian), receives every buffered `(seq, payload)` with `seq >= start`, then `(-1, b"")`.
Unlike vLLM, the publisher always *binds* both endpoints (a router subscribes to many workers),
so `tcp://127.0.0.1:5557` and `tcp://*:5557` both work.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]
import zmq
import zmq.asyncio

from agentctl.serving.types import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent

__all__ = [
    "END_SEQ",
    "MEDIUM_GPU",
    "AsyncZmqEventSubscriber",
    "EventDecodeError",
    "KvEventBatch",
    "ZmqEventPublisher",
    "ZmqEventSubscriber",
    "decode_batch",
    "decode_event",
    "encode_batch",
    "encode_event",
]

log = logging.getLogger(__name__)

MASK64 = (1 << 64) - 1
MEDIUM_GPU = "GPU"
#: the replay stream's end marker (vLLM's `ZmqEventPublisher.END_SEQ`)
END_SEQ = -1
_END_SEQ_BYTES = END_SEQ.to_bytes(8, "big", signed=True)


class EventDecodeError(ValueError):
    """A payload that is not a KV event batch (not msgpack, wrong shape or types)."""


@dataclass(frozen=True)
class KvEventBatch:
    """One published message: the events of one engine step, in order."""

    ts: float
    events: tuple[KvEvent, ...]
    data_parallel_rank: int | None = 0
    #: the producer's boot nonce (agentctl's worker); None from producers that send none
    #: (vLLM): a consumer tells a restarted producer by it, not by racing sequence numbers
    instance_id: str | None = None
    #: events of unknown type skipped while decoding (a newer producer)
    skipped: int = field(default=0, compare=False)


# ---- encoding ------------------------------------------------------------------------------


def encode_event(event: KvEvent, medium: str | None = MEDIUM_GPU) -> list[Any]:
    """The array-like msgpack form of one event (vLLM field order)."""
    if isinstance(event, BlockStored):
        return [
            "BlockStored",
            list(event.block_hashes),
            event.parent_block_hash,
            list(event.token_ids),
            event.block_size,
            None,  # lora_id (deprecated in vLLM, still on the wire)
            medium,
            None,  # lora_name
        ]
    if isinstance(event, BlockRemoved):
        return ["BlockRemoved", list(event.block_hashes), medium]
    if isinstance(event, AllBlocksCleared):
        return ["AllBlocksCleared"]
    raise TypeError(f"not a KV event: {event!r}")


def encode_batch(batch: KvEventBatch, medium: str | None = MEDIUM_GPU) -> bytes:
    """msgpack bytes of `batch`, byte-compatible with vLLM's `msgspec` encoder."""
    body: list[Any] = [float(batch.ts), [encode_event(e, medium) for e in batch.events]]
    if batch.instance_id is not None:
        # a 4th element: msgspec's array_like decoder (vLLM's own) skips trailing fields
        body += [batch.data_parallel_rank, batch.instance_id]
    elif batch.data_parallel_rank is not None:  # omit_defaults: None is left off
        body.append(batch.data_parallel_rank)
    out = msgpack.packb(body, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


# ---- decoding ------------------------------------------------------------------------------


def _hash(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise EventDecodeError(f"{what}: expected an int or bytes hash, got bool")
    if isinstance(value, int):
        return value & MASK64  # a signed i64 producer maps onto the same unsigned id
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(value, "big") & MASK64
    raise EventDecodeError(f"{what}: expected an int or bytes hash, got {type(value).__name__}")


def _hashes(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise EventDecodeError(f"{what}: expected a list of hashes")
    return tuple(_hash(v, what) for v in value)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventDecodeError(f"{what}: expected an int, got {type(value).__name__}")
    return value


def _token_ids(value: object) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise EventDecodeError("token_ids: expected a list")
    out: list[int] = []
    for v in value:
        if isinstance(v, list | tuple) and v:  # EAGLE bigrams: keep the first of each pair
            v = v[0]
        out.append(_int(v, "token_ids"))
    return tuple(out)


def _stored(fields: Mapping[str, object]) -> BlockStored:
    parent = fields.get("parent_block_hash")
    return BlockStored(
        block_hashes=_hashes(fields.get("block_hashes"), "BlockStored.block_hashes"),
        parent_block_hash=None if parent is None else _hash(parent, "parent_block_hash"),
        token_ids=_token_ids(fields.get("token_ids")),
        block_size=_int(fields.get("block_size", 0), "block_size"),
    )


_STORED_FIELDS = ("block_hashes", "parent_block_hash", "token_ids", "block_size")


def decode_event(obj: object) -> KvEvent | None:
    """One event from its decoded msgpack form (array or map); None for an unknown tag."""
    if isinstance(obj, list | tuple):
        if not obj or not isinstance(obj[0], str):
            raise EventDecodeError("event: expected a tagged array")
        tag, rest = obj[0], obj[1:]
        if tag == "BlockStored":
            if len(rest) < 4:
                raise EventDecodeError("BlockStored: too few fields")
            return _stored(dict(zip(_STORED_FIELDS, rest, strict=False)))
        if tag == "BlockRemoved":
            if not rest:
                raise EventDecodeError("BlockRemoved: too few fields")
            return BlockRemoved(_hashes(rest[0], "BlockRemoved.block_hashes"))
        if tag == "AllBlocksCleared":
            return AllBlocksCleared()
        return None
    if isinstance(obj, dict):
        kind = obj.get("type")
        if kind == "BlockStored":
            return _stored(obj)
        if kind == "BlockRemoved":
            return BlockRemoved(_hashes(obj.get("block_hashes"), "BlockRemoved.block_hashes"))
        if kind == "AllBlocksCleared":
            return AllBlocksCleared()
        if not isinstance(kind, str):
            raise EventDecodeError("event: map without a string 'type'")
        return None
    raise EventDecodeError(f"event: expected an array or a map, got {type(obj).__name__}")


def decode_batch(payload: bytes) -> KvEventBatch:
    """Decode one message payload; raises `EventDecodeError` (never anything else) if bad."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise EventDecodeError(f"not msgpack: {exc}") from exc
    if isinstance(obj, dict):
        ts, events, rank = obj.get("ts"), obj.get("events"), obj.get("data_parallel_rank")
        instance = obj.get("instance_id")
    elif isinstance(obj, list) and len(obj) >= 2:
        ts, events = obj[0], obj[1]
        rank = obj[2] if len(obj) > 2 else None
        instance = obj[3] if len(obj) > 3 else None
    else:
        raise EventDecodeError("batch: expected [ts, events, dp_rank]")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise EventDecodeError("batch: ts must be a number")
    if not isinstance(events, list):
        raise EventDecodeError("batch: events must be a list")
    if rank is not None:
        rank = _int(rank, "data_parallel_rank")
    if not isinstance(instance, str):  # absent, or some other producer's 4th field
        instance = None
    out: list[KvEvent] = []
    skipped = 0
    for raw in events:
        ev = decode_event(raw)
        if ev is None:
            skipped += 1
        else:
            out.append(ev)
    return KvEventBatch(float(ts), tuple(out), rank, instance, skipped=skipped)


# ---- publisher -----------------------------------------------------------------------------


class ZmqEventPublisher:
    """vLLM-compatible KV event publisher: PUB stream plus a ROUTER replay buffer.

    `publish()` is cheap and thread-safe (it only enqueues); a daemon thread owns the sockets,
    assigns sequence numbers, sends, keeps the replay buffer and answers replay requests, so an
    engine loop never blocks on the network. Binding happens in the constructor, so a port that
    is taken fails there (`zmq.ZMQError`), not later in the thread.
    """

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: str = "",
        buffer_steps: int = 10_000,
        *,
        hwm: int = 100_000,
        data_parallel_rank: int = 0,
        instance_id: str | None = None,
        medium: str | None = MEDIUM_GPU,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if buffer_steps <= 0:
            raise ValueError("buffer_steps must be > 0")
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.data_parallel_rank = data_parallel_rank
        self.instance_id = instance_id
        self._topic = topic.encode("utf-8")
        self._medium = medium
        self._ctx = context or zmq.Context.instance()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._queue: queue.SimpleQueue[KvEventBatch | None] = queue.SimpleQueue()
        self._next_seq = 0
        self._accepted = 0
        self._closed = False
        self._lock = threading.Lock()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._replay: zmq.Socket[bytes] | None = None
        try:
            self._pub.bind(endpoint)
            if replay_endpoint is not None:
                self._replay = self._ctx.socket(zmq.ROUTER)
                self._replay.setsockopt(zmq.LINGER, 0)
                self._replay.bind(replay_endpoint)
        except zmq.ZMQError:
            self._pub.close(0)
            if self._replay is not None:
                self._replay.close(0)
            raise
        self._thread = threading.Thread(target=self._run, name="kv-event-publisher", daemon=True)
        self._thread.start()

    @property
    def next_seq(self) -> int:
        """The sequence number the next batch sent will get (= batches sent so far)."""
        return self._next_seq

    @property
    def next_accepted_seq(self) -> int:
        """The sequence number the next batch `publish`ed will get (= batches accepted so far,
        sent or still queued): the thread numbers them in the order they were accepted."""
        return self._accepted

    def publish(self, events: Sequence[KvEvent], ts: float | None = None) -> None:
        """Queue one batch (no-op for no events). Raises `RuntimeError` after `close()`."""
        if not events:
            return
        self.publish_batch(
            KvEventBatch(
                time.time() if ts is None else ts,
                tuple(events),
                self.data_parallel_rank,
                self.instance_id,
            )
        )

    def publish_batch(self, batch: KvEventBatch) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("publisher is closed")
            self._queue.put(batch)
            self._accepted += 1

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (bounded by `timeout`), stop the thread, close the sockets."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("KV event publisher thread did not stop within %.1fs", timeout)

    def __enter__(self) -> ZmqEventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread: the only code that touches the sockets after construction --

    def _run(self) -> None:
        # short waits only when replay requests must be noticed while idle
        wait = 0.005 if self._replay is not None else 0.5
        try:
            while True:
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    self._serve_replays()
                    continue
                if item is None:
                    break
                self._send(item)
                self._serve_replays()
        except Exception:  # pragma: no cover - a bug here must not pass silently
            log.exception("KV event publisher thread crashed")
        finally:
            self._pub.close(0)
            if self._replay is not None:
                self._replay.close(0)

    def _send(self, batch: KvEventBatch) -> None:
        payload = encode_batch(batch, self._medium)
        seq = self._next_seq
        self._pub.send_multipart((self._topic, seq.to_bytes(8, "big"), payload))
        self._buffer.append((seq, payload))
        self._next_seq = seq + 1

    def _serve_replays(self) -> None:
        sock = self._replay
        if sock is None:
            return
        while sock.poll(0):
            frames = sock.recv_multipart()
            # [identity, b"", start] from REQ/DEALER-with-delimiter (vLLM), [identity, start]
            # from a bare DEALER: answer in the same envelope
            if len(frames) == 3 and frames[1] == b"":
                envelope = [frames[0], b""]
            elif len(frames) == 2:
                envelope = [frames[0]]
            else:
                log.warning("invalid KV event replay request (%d frames)", len(frames))
                continue
            start = int.from_bytes(frames[-1], "big")
            for seq, payload in self._buffer:
                if seq >= start:
                    sock.send_multipart([*envelope, seq.to_bytes(8, "big"), payload])
            sock.send_multipart([*envelope, _END_SEQ_BYTES, b""])


# ---- subscribers -----------------------------------------------------------------------------


def _parse_frames(frames: Sequence[bytes]) -> tuple[int, bytes]:
    if len(frames) < 2:
        raise EventDecodeError(f"expected (topic, seq, payload) frames, got {len(frames)}")
    seq_b, payload = frames[-2], frames[-1]
    if len(seq_b) != 8:
        raise EventDecodeError("sequence frame is not 8 bytes")
    return int.from_bytes(seq_b, "big", signed=True), payload


class ZmqEventSubscriber:
    """Blocking consumer of one publisher: live stream (`recv`, iteration) and `replay`.

    A SUB socket drops what was published before it connected (ZMQ's slow joiner) and whatever
    overflows its high-water mark; a consumer detects that as a gap in `seq` and fills it with
    `replay(first_missing)`. Not thread-safe: use it from one thread.
    """

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: str = "",
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self._ctx = context or zmq.Context.instance()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, 100_000)
        self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        self._sub.connect(endpoint)

    def recv_raw(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next `(seq, payload)`, or None after `timeout` seconds (None: wait forever)."""
        ms = None if timeout is None else max(0, int(timeout * 1000))
        if not self._sub.poll(ms):
            return None
        return _parse_frames(self._sub.recv_multipart())

    def recv(self, timeout: float | None = None) -> tuple[int, KvEventBatch] | None:
        """The next `(seq, batch)`, or None after `timeout` seconds (None: wait forever)."""
        raw = self.recv_raw(timeout)
        return None if raw is None else (raw[0], decode_batch(raw[1]))

    def __iter__(self) -> Iterator[tuple[int, KvEventBatch]]:
        while True:
            item = self.recv()
            if item is not None:
                yield item

    def replay(self, from_seq: int, timeout: float = 5.0) -> list[tuple[int, KvEventBatch]]:
        """Every batch the publisher still buffers with `seq >= from_seq`, in order.

        Raises `TimeoutError` if the publisher does not finish answering within `timeout`
        seconds, `RuntimeError` if there is no replay endpoint."""
        if self.replay_endpoint is None:
            raise RuntimeError("no replay endpoint configured")
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.replay_endpoint)
            sock.send_multipart([b"", max(0, from_seq).to_bytes(8, "big")])
            out: list[tuple[int, KvEventBatch]] = []
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sock.poll(int(left * 1000) + 1):
                    raise TimeoutError(f"replay from {self.replay_endpoint} timed out")
                seq, payload = _parse_frames(sock.recv_multipart())
                if seq == END_SEQ:
                    return out
                out.append((seq, decode_batch(payload)))
        finally:
            sock.close(0)

    def close(self) -> None:
        self._sub.close(0)

    def __enter__(self) -> ZmqEventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncZmqEventSubscriber:
    """The asyncio twin of `ZmqEventSubscriber` (for a router's event loop)."""

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: str = "",
        *,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, 100_000)
        self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        self._sub.connect(endpoint)

    async def recv_raw(self) -> tuple[int, bytes]:
        return _parse_frames(await self._sub.recv_multipart())

    async def recv(self) -> tuple[int, KvEventBatch]:
        seq, payload = await self.recv_raw()
        return seq, decode_batch(payload)

    async def replay(self, from_seq: int, timeout: float = 5.0) -> list[tuple[int, KvEventBatch]]:
        """See `ZmqEventSubscriber.replay`."""
        if self.replay_endpoint is None:
            raise RuntimeError("no replay endpoint configured")
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.replay_endpoint)
            await sock.send_multipart([b"", max(0, from_seq).to_bytes(8, "big")])
            out: list[tuple[int, KvEventBatch]] = []
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not await sock.poll(int(left * 1000) + 1):
                    raise TimeoutError(f"replay from {self.replay_endpoint} timed out")
                seq, payload = _parse_frames(await sock.recv_multipart())
                if seq == END_SEQ:
                    return out
                out.append((seq, decode_batch(payload)))
        finally:
            sock.close(0)

    def close(self) -> None:
        self._sub.close(0)
