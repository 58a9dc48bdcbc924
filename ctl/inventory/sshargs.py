"""ProxyJump from the places Ansible users already put it, so bastion setups carry over.

Ansible has no jump-host variable: people write `-o ProxyJump=X`, `-o 'ProxyJump X'` or `-J X`
into `ansible_ssh_common_args` / `ansible_ssh_extra_args`. We read those with ssh's own option
grammar (so `-i -J` is a key file named `-J`, not a jump) and ignore every other option.
"""

from __future__ import annotations

import re
import shlex

# ssh(1) short options that take an argument (from its getopt string).
_FLAGS_WITH_ARG = frozenset("BDEFIJLOPQRSWbceilmopw")
_OPTION = re.compile(r"\s*([A-Za-z]+)\s*(?:=|\s)\s*(.*?)\s*", re.DOTALL)
# A name that cannot start with "-", so it is never taken for an ssh option.
_NAME = r"[A-Za-z0-9_.][A-Za-z0-9_.-]*"
_HOP = re.compile(
    rf"(?:(?P<user>{_NAME})@)?(?P<host>{_NAME}|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9]+)?\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def find_proxy_jump(args: str) -> str | None:
    """The first ProxyJump in an ssh argument string (ssh keeps the first value), or None.

    Raises ValueError for a string shlex cannot split or an option missing its argument.
    """
    try:
        tokens = shlex.split(args)
    except ValueError as exc:
        raise ValueError(f"cannot split ssh arguments: {exc}") from None
    i = 0
    while i < len(tokens):
        word = tokens[i]
        i += 1
        if word == "--":
            break
        if not word.startswith("-") or word == "-":
            continue
        for pos in range(1, len(word)):
            flag = word[pos]
            if flag not in _FLAGS_WITH_ARG:
                continue
            if pos + 1 < len(word):
                arg = word[pos + 1 :]
            elif i < len(tokens):
                arg = tokens[i]
                i += 1
            else:
                raise ValueError(f"ssh option -{flag} needs an argument")
            if flag == "J":
                return arg
            if flag == "o":
                match = _OPTION.fullmatch(arg)
                if match and match.group(1).lower() == "proxyjump":
                    return match.group(2)
            break
    return None


def parse_jump(value: str) -> str | None:
    """Validate `[user@]host[:port]` (comma-separated chain); "none" means no jump host.

    Returns the value unchanged, or None for "none". Raises ValueError naming the bad hop.
    """
    if value.strip().lower() == "none":
        return None
    if not value:
        raise ValueError("ProxyJump must not be empty")
    for hop in value.split(","):
        match = _HOP.fullmatch(hop)
        if match is None:
            raise ValueError(f"ProxyJump hop {hop!r} is not [user@]host[:port]")
        port = match.group("port")
        if port is not None and not 1 <= int(port) <= 65535:
            raise ValueError(f"ProxyJump hop {hop!r} has port {port} outside 1..65535")
    return value
