"""Text to token ids, for workers and a router that must agree on block hashes.

Prefix caching works on token ids, so a router that predicts cache hits from text must tokenize
exactly as the worker does. Two tokenizers:

- `BuiltinTokenizer` (the default; no files, no dependencies): text is cut into pieces like a BPE
  pre-tokenizer would (an optional leading space plus up to 6 word characters, one punctuation
  character, or a run of other whitespace), and each piece's id is the first 4 bytes of its
  BLAKE2b digest, little-endian, masked to 31 bits. Same text, same ids, in any process, on any
  machine (unlike the salted builtin `hash()`); appending text changes at most the last piece, as
  with a real tokenizer, so a resent conversation prefix keeps its token ids. About 4 characters
  a token on English and code, close to real tokenizers, so token counts are realistic.
- `TokenizersTokenizer`: a HuggingFace `tokenizer.json` through the optional `tokenizers`
  package (`pip install 'agentctl[tokenizers]'`), for exact token counts of a real model.

Chat messages become one string through `render_chat`, a fixed ChatML-like template: the exact
template matters less than its stability, since a prefix hit needs identical rendered prefixes.
"""

from __future__ import annotations

import json
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from hashlib import blake2b
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BuiltinTokenizer",
    "Tokenizer",
    "TokenizerUnavailable",
    "TokenizersTokenizer",
    "encode_chat",
    "load_tokenizer",
    "render_chat",
    "render_chat_parts",
    "split_text",
]

_PIECE = re.compile(r" ?[^\W_]{1,6}| ?_{1,6}| ?[^\w\s]|\s+")
_ID_MASK = (1 << 31) - 1
#: a piece always ends between a non-whitespace character and a non-word one (whitespace or
#: punctuation): only a whitespace run holds whitespace and it starts after non-whitespace, a
#: word or underscore run stops at a non-word character, punctuation is one character; and
#: `_PIECE` looks neither behind nor ahead, so cutting the text there keeps every piece
_CUT = re.compile(r"\S(?=\W)")
#: characters per `findall` call: one call holds the GIL throughout (about 25 ms here), so a
#: long text tokenized in a thread still lets the event loop's thread run between chunks
CHUNK_CHARS = 1 << 16


class TokenizerUnavailable(RuntimeError):
    """A configured tokenizer cannot be loaded (package missing, file missing or invalid)."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the serving stack needs from a tokenizer: stable text -> ids (each in [0, 2**32))."""

    @property
    def name(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...


@lru_cache(maxsize=1 << 18)
def _piece_id(piece: str) -> int:
    digest = blake2b(piece.encode("utf-8"), digest_size=4, person=b"agentctl-tok").digest()
    return int.from_bytes(digest, "little") & _ID_MASK


class _PartCache:
    """LRU of text part -> ids, bounded by the total length of the parts it holds."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._od: OrderedDict[str, array[int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()  # large bodies are prepared on worker threads

    def get(self, part: str) -> array[int] | None:
        with self._lock:
            ids = self._od.get(part)
            if ids is not None:
                self._od.move_to_end(part)
            return ids

    def put(self, part: str, ids: array[int]) -> None:
        if len(part) > self.max_chars // 4:
            return  # one huge part would evict everything else
        with self._lock:
            if part in self._od:
                return
            self._od[part] = ids
            self._chars += len(part)
            while self._chars > self.max_chars:
                old, _ = self._od.popitem(last=False)
                self._chars -= len(old)


class BuiltinTokenizer:
    """Deterministic hash-of-pieces tokenizer (see the module docstring)."""

    name = "builtin"

    def __init__(self, cache_chars: int = 64 * 1024 * 1024) -> None:
        self._parts = _PartCache(cache_chars)

    def encode(self, text: str) -> list[int]:
        return [_piece_id(p) for p in self.pieces(text)]

    def encode_parts(self, parts: Sequence[str]) -> list[int]:
        """`encode("".join(parts))` for parts whose boundaries are piece boundaries (see
        `render_chat_parts`), each part's ids from a bounded LRU cache."""
        out: list[int] = []
        cache = self._parts
        for part in parts:
            ids = cache.get(part)
            if ids is None:
                ids = array("I", self.encode(part))
                cache.put(part, ids)
            out.extend(ids)
        return out

    def pieces(self, text: str) -> list[str]:
        """The text pieces `encode` maps to ids (joined, they give back `text`)."""
        out: list[str] = []
        for chunk in split_text(text):
            if len(chunk) <= 2 * CHUNK_CHARS:
                out += _PIECE.findall(chunk)
            else:  # no cut for a long stretch: match by match, never one long C call
                out += [m.group() for m in _PIECE.finditer(chunk)]
        return out


def split_text(text: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """`text` cut into pieces of about `chunk_chars` characters at places where tokenizing
    each piece alone gives the same pieces as tokenizing the whole (see `_CUT`)."""
    if len(text) <= chunk_chars:
        return [text]
    step = max(1, chunk_chars - 1)
    out: list[str] = []
    start = 0
    while len(text) - start > chunk_chars:
        pos = start + chunk_chars - 1
        m = None
        while m is None and pos < len(text):  # bounded searches: no long C call either
            m = _CUT.search(text, pos, pos + step + 1)
            pos += step
        if m is None:
            break
        out.append(text[start : m.end()])
        start = m.end()
    out.append(text[start:])
    return out


class TokenizersTokenizer:
    """A HuggingFace `tokenizer.json` through the `tokenizers` package (no special tokens
    added: the chat template already spells out the turn markers)."""

    def __init__(self, path: str | Path) -> None:
        try:
            from tokenizers import Tokenizer as HfTokenizer
        except ImportError as exc:
            raise TokenizerUnavailable(
                "the 'tokenizers' package is not installed: pip install 'agentctl[tokenizers]' "
                "(or leave the tokenizer unset to use the built-in one)"
            ) from exc
        p = Path(path)
        if not p.is_file():
            raise TokenizerUnavailable(f"tokenizer file not found: {p}")
        try:
            self._tok = HfTokenizer.from_file(str(p))
        except Exception as exc:  # the Rust side raises plain Exception
            raise TokenizerUnavailable(f"cannot load tokenizer {p}: {exc}") from exc
        self.name = f"tokenizers:{p.name}"
        self._chunks = _PartCache(64 * 1024 * 1024)
        #: whether a long text may be encoded chunk by chunk (see `_encode_chunked`)
        self.chunkable = _splits_before_spaced_words(self._encode_whole)

    def _encode_whole(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode(self, text: str) -> list[int]:
        if self.chunkable and len(text) > 2 * TOKENIZERS_CHUNK_CHARS:
            return self._encode_chunked(text)
        return self._encode_whole(text)

    def _encode_chunked(self, text: str) -> list[int]:
        """A long prompt, cut at word starts every `TOKENIZERS_CHUNK_CHARS` counted from its
        beginning, each chunk's ids from a bounded cache: the next prompt of a session starts
        with the same text, so only its new end is tokenized (14 ms for a 23k-token prompt with
        a BPE tokenizer was the router's largest per-request cost)."""
        cache = self._chunks
        chunks = cut_at_word_starts(text, TOKENIZERS_CHUNK_CHARS)
        found = [cache.get(c) for c in chunks]
        missing = [c for c, ids in zip(chunks, found, strict=True) if ids is None]
        if missing:
            # one batch call: the Rust side encodes the chunks in parallel, without the GIL
            encoded = iter(self._tok.encode_batch(missing, add_special_tokens=False))
            for i, ids in enumerate(found):
                if ids is None:
                    ids = found[i] = array("I", next(encoded).ids)
                    cache.put(chunks[i], ids)
        out: list[int] = []
        for ids in found:
            assert ids is not None
            out.extend(ids)
        return out


#: chunk length for `TokenizersTokenizer`'s chunked encoding
TOKENIZERS_CHUNK_CHARS = 4096


def cut_at_word_starts(text: str, every: int) -> list[str]:
    """`text` cut just before a space that follows a non-space and precedes a letter or digit,
    at the first such place at or after every `every` characters from the start (so two texts
    sharing a prefix are cut identically within it)."""
    out: list[str] = []
    start = 0
    pos = every
    n = len(text)
    while pos < n - 1:
        i = text.find(" ", pos, min(n - 1, pos + every))
        while i != -1 and not (not text[i - 1].isspace() and text[i + 1].isalnum()):
            i = text.find(" ", i + 1, min(n - 1, pos + every))
        if i == -1:
            pos += every
            continue
        out.append(text[start:i])
        start = i
        pos = i + every
    out.append(text[start:])
    return out


def _splits_before_spaced_words(encode: Callable[[str], list[int]]) -> bool:
    """Whether `encode` of a text equals the concatenation of `encode` of its pieces cut by
    `cut_at_word_starts`: true of byte-level BPE tokenizers whose pre-tokenizer starts a new
    piece at " word" (GPT-2, Llama 3, Qwen), false of those that add a prefix to every text
    (SentencePiece's metaspace). Checked on a mixed sample rather than assumed from the file."""
    sample = (
        "def main(argv): return 0  # ok\n\tx = [1, 2, 3] if y else {'a': b}\n"
        "Hello, world! The quick brown fox jumps over 13 lazy dogs; élan vital, naïve café. "
        "日本語のテキスト 和 emoji 😀 mixed_with_snake_case and CamelCase words   spaced out.\n"
        "SELECT * FROM t WHERE id = 42;  -- done\r\n"
    ) * 8
    try:
        whole = encode(sample)
        pieces = cut_at_word_starts(sample, 97)
        parts = [t for piece in pieces for t in encode(piece)]
    except Exception:
        return False
    return len(pieces) > 4 and parts == whole


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    """The built-in tokenizer for None / "" / "builtin", else a `tokenizer.json` file."""
    if path is None or str(path) in ("", "builtin"):
        return BuiltinTokenizer()
    return TokenizersTokenizer(path)


def _content_text(content: object) -> str:
    """OpenAI message content: a string, or a list of parts of which text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                else:  # images, audio...: a stable stand-in so they still count
                    parts.append(_canonical(part))
        return "".join(parts)
    return _canonical(content)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def render_chat_parts(
    messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
) -> list[str]:
    """`render_chat`'s output, one string per message (and the generation prompt): each part
    starts with `<` and ends with `>` + newline, so the built-in tokenizer's pieces never cross
    from one part to the next and a conversation's ids are the concatenation of its parts'."""
    out: list[str] = []
    for m in messages:
        role = str(m.get("role", "user"))
        name = m.get("name")
        head = f"{role} {name}" if isinstance(name, str) and name else role
        body = _content_text(m.get("content"))
        tool_calls = m.get("tool_calls")
        if tool_calls:
            body += "\n<tool_calls>" + _canonical(tool_calls) + "</tool_calls>"
        call_id = m.get("tool_call_id")
        if isinstance(call_id, str) and call_id:
            body = f"<tool_call_id>{call_id}</tool_call_id>\n" + body
        out.append(f"<|im_start|>{head}\n{body}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return out


def render_chat(
    messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
) -> str:
    """One string for a conversation: `<|im_start|>{role}[ name]\\n{content}<|im_end|>\\n` per
    message (tool calls appended as canonical JSON), then `<|im_start|>assistant\\n`."""
    return "".join(render_chat_parts(messages, add_generation_prompt=add_generation_prompt))


def encode_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
) -> list[int]:
    """The ids of `render_chat(messages)`. A tokenizer with `encode_parts` (the built-in one)
    encodes message by message from a cache: an agent resends its whole conversation on every
    turn, so only the new messages are tokenized (the router's largest per-request cost)."""
    parts = render_chat_parts(messages, add_generation_prompt=add_generation_prompt)
    encode_parts = getattr(tokenizer, "encode_parts", None)
    if encode_parts is not None:
        ids: list[int] = encode_parts(parts)
        return ids
    return tokenizer.encode("".join(parts))
