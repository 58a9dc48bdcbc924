"""Small pure helpers shared by the fact parsers, plus the one shell idiom they share.

Parsers see text produced by many tool versions, so every conversion here returns None for
anything it does not recognise instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterable

#: sets $T to "timeout 5" where coreutils/busybox timeout exists, so `$T tool` never hangs
#: the whole facts run (nvidia-smi can block in D state after some Xids).
TIMEOUT_PREFIX = 'if command -v timeout >/dev/null 2>&1; then T="timeout 5"; else T=; fi'


def to_int(text: str | None) -> int | None:
    """Decimal (or 0x-prefixed hex) integer, else None."""
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


def to_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def key_values(lines: Iterable[str], sep: str = "=") -> dict[str, str]:
    """`key<sep>value` lines into a dict; the last occurrence of a key wins."""
    out: dict[str, str] = {}
    for line in lines:
        key, found, value = line.partition(sep)
        if found and key.strip():
            out[key.strip()] = value.strip()
    return out


def sections(raw: str, prefix: str = "@@") -> dict[str, list[str]]:
    """Split a snippet's output on `@@name` lines; text before the first marker goes to ""."""
    out: dict[str, list[str]] = {"": []}
    current = ""
    for line in raw.splitlines():
        if line.startswith(prefix) and " " not in line:
            current = line[len(prefix) :]
            out.setdefault(current, [])
            continue
        out[current].append(line)
    return out
