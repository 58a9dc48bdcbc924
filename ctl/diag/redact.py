"""Redact secrets (optionally pseudonymize addresses and hostnames) before evidence leaves a node.

Shipped as one source file to managed nodes and run there by the node runner with the node's
own ``python3`` (3.8 or newer), so it is standard library only, imports nothing of ours and keeps
Python 3.8 syntax. The control side imports the same file to redact SIEM/CMDB exports.

What is redacted (always), each replaced by a marker that names the kind, ``[REDACTED:<kind>]``:

- ``private-key``: PEM private-key blocks (``-----BEGIN ... PRIVATE KEY-----``: PKCS#8, RSA, EC,
  DSA, OpenSSH, encrypted, PGP), also a truncated block without its END line, also inside JSON
  strings with ``\\n`` escapes; PuTTY ``Private-Lines``.
- ``password``: values of password-named keys (``password``, ``passwd``, ``passphrase``, ``pwd``,
  ``*_PASS``...) in env, INI, YAML (also ``|`` blocks), JSON, TOML, XML, shell ``export`` and
  ``--password value`` flags; the password of a URL's userinfo (``scheme://user:PASS@host``,
  the user is kept); ``.pgpass`` lines; ``.netrc`` ``password``; ``curl -u user:PASS``;
  ``sshpass -p``, ``mysql -pPASS``; ``Authorization: Basic``.
- ``token``: values of token-named keys (``*_TOKEN``, ``api_key``, ``apikey``...);
  ``Authorization: Bearer/Token``, a bare ``Bearer <token>``; well-known token formats wherever
  they appear: AWS access key ids (``AKIA``...), GitHub (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``,
  ``ghr_``, ``github_pat_``), GitLab (``glpat-``), Slack (``xox?-`` and webhooks), Hugging Face
  (``hf_``), OpenAI-style ``sk-`` (mixed case and digits), Stripe, Google (``AIza``), npm, PyPI,
  NVIDIA NGC (``nvapi-``), JWTs (``eyJ...eyJ...``).
- ``secret``: values of secret-, credential- and auth-named keys (``*_SECRET*``,
  ``aws_secret_access_key``, ``client_secret``, ``access_key``, ``private_key``, ``auth``...).
- ``password-hash``: crypt(3) hashes (``$1$ $2b$ $5$ $6$ $y$ $7$ $argon2id$``...) and LDAP
  ``{SSHA}`` hashes, as in ``/etc/shadow``.
- ``known-secret``: the literal ``extra_secrets`` (e.g. the sudo password the session used):
  6 characters or more wherever they appear (also URL-quoted and JSON-escaped), 4 or 5 only as
  a whole token, shorter ones are not searched (they would wipe ordinary text).

What deliberately is not (it is evidence, not a secret): ordinary words (``token`` in prose,
``Failed to refresh token: connection refused`` keeps ``connection``), LLM tokenizer fields
(``max_tokens``, ``eos_token``, ``tokenizer``), key names that hold metadata about a secret
(``password_file``, ``token_path``, ``auth_method``, ``secret_name``, ``*_url``...), values that
are placeholders (``$VAR``, ``${VAR}``, ``{{ x }}``, ``<your-token>``, ``None``, ``true``,
``***``), files under well-known roots (``private_key: /etc/ssl/private/k.pem``), a spaced
comparison (``token == expected``), ``docker -u 1000:1000``, hex digests (a sha256 alone is not
a secret), GPU UUIDs, PCI addresses, kernel addresses, SSH ``IdentityFile`` paths and public
keys, versions and timestamps. A value of a secret-named key is redacted whatever it looks
like: entropy is not needed to be a password. Not recognised: secrets under neutral key names
(a Kubernetes Secret's ``data:``), ``mysql -p`` with a space (that prompts), raw ``/`` in a URL
password (it must be percent-encoded to be one).

How: literal-anchored patterns (markers, PEM, headers, URLs, vendor formats, hashes) run in
turn; then the structural rules (YAML blocks, ``key<sep>value``, ``--flag value``, .netrc,
``curl -u``, ``-p``) all read the same text and their spans are merged, so no rule eats a key
another one needs; a value never runs on into the next secret-named key.

Pseudonymization (only with ``pseudonymize=True``, sos ``--clean`` style): IPv4 and IPv6
addresses (not loopback, unspecified, multicast, netmasks, ``169.254.169.254``, nor 4-part
versions right after ``version``), MAC addresses (not all-zero or broadcast), the given
hostnames and their short forms, every name under a given FQDN's domain, and hostnames that embed
an IPv4 address (``ip-10-0-0-5``, ``10-0-0-5.ec2.internal``: sosreport/sos#3388). Pseudonyms
are stable within one mapping: IPv4 from ``198.18.0.0/15`` (RFC 2544, never routed), IPv6 from
``2001:db8::/32``, MACs ``02:00:00:xx:xx:xx``, hosts ``host-N``, domains ``domain-N.example``;
an address embedded in a hostname takes the pseudonym of the address. IB GUIDs, serial numbers
and user names are not pseudonymized.

The mapping (original -> pseudonym) is the key to undo pseudonymization: it goes back to the
control side only and is never written into a bundle. Pass it to the next `Redactor` of the same
host so all its captures map the same way.

Guarantees: no method raises (an internal error yields ``[REDACTED:unprocessable]``, never the
input); ``r.text(r.text(s)) == r.text(s)`` (text holding a marker is left as it is; with
pseudonyms the secret rules run once more, since ``-u 2001:db8::1`` reads like ``user:pass``);
linear-time patterns (bounded quantifiers, no nested ones over overlapping classes, hot patterns
start with a literal); thread-safe (the runner redacts in a pool).

CLI: ``python3 redact.py [--pseudonymize] [--hostname H ...] [--env] [--secrets-file F]
[--mapping-in F] [--mapping-out F]`` reads stdin and writes the redacted text to stdout.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = [
    "KNOWN_SECRET",
    "PASSWORD",
    "PASSWORD_HASH",
    "PRIVATE_KEY",
    "REDACTED",
    "SECRET",
    "TOKEN",
    "UNPROCESSABLE",
    "Redactor",
    "key_kind",
    "main",
    "marker",
]

REDACTED = "[REDACTED]"  # the prefix of every marker; `marker(kind)` says what was removed
PASSWORD = "password"  # noqa: S105 - the name of a kind, not a secret
TOKEN = "token"  # noqa: S105 - the name of a kind, not a secret
SECRET = "secret"  # noqa: S105 - the name of a kind, not a secret
PRIVATE_KEY = "private-key"
PASSWORD_HASH = "password-hash"  # noqa: S105 - the name of a kind, not a secret
KNOWN_SECRET = "known-secret"  # noqa: S105 - the name of a kind, not a secret
UNPROCESSABLE = "unprocessable"
_MARK = "[REDACTED"  # the start of every marker: a value holding one was redacted already


def marker(kind: str) -> str:
    """The text that replaces a secret of `kind`: it says what was there, never what it was."""
    return "[REDACTED:" + kind + "]"


# ---------------------------------------------------------------------------------------------
# Which key names hold secrets


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SEG_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# trailing segments that say how a secret is encoded, not that it is not one: client-key-data
_ENCODING_SUFFIX = _words(
    "data value material b64 base64 pem content contents str string raw hex enc encoded text "
    "bytes plain plaintext"
)
# a last segment that makes the key about a secret rather than the secret: password_file
_META_SUFFIX = _words(
    "file files path paths dir directory folder name names ref reference length len min max "
    "minlen maxlen policy policies type kind method methods mode enabled enable disabled disable "
    "required require env var variable count expiry expires expire expiration ttl timeout age "
    "prompt field fields endpoint url uri urls server servers host hosts port user username "
    "usernames login command cmd algorithm algorithms algo alg format size limit limits budget "
    "source provider location scope scopes retries retry lifetime interval version header "
    "rotation manager backend strategy hint help label labels changed reset validity complexity "
    "lock lockout warn mount volume class schema pattern regex check checks at time timestamp "
    "date created updated status state error errors message msg prefix suffix index idx "
    "number usage used ratio rate threshold flag option options opts config conf cfg settings "
    "module plugin enforce store type authentication"
)
# `<q>_key` is secret for these qualifiers (`api_key`, `access_key`, WireGuard `PresharedKey`)
_KEY_QUALIFIERS = _words(
    "api access private secret session signing encryption encrypt master account auth license "
    "client tls ssl storage subscription openai azure shared service app application consumer "
    "webhook hmac jwt admin root deploy write read sas primary secondary preshared cipher aes "
    "crypt wandb ngc anthropic mistral cohere groq together replicate pinecone"
)
# LLM tokenizer vocabulary: `eos_token`, `max_token` are not credentials
_NOT_A_CREDENTIAL_TOKEN = _words(
    "bos eos pad unk sep cls mask special additional start end stop image video audio think tool "
    "default vision max min num next prev first last total input output prompt completion draft "
    "per sample new generated context cached reasoning decoder encoder boi eoi boa eoa"
)


@functools.lru_cache(maxsize=4096)
def key_kind(key: str) -> str | None:
    """The kind of secret a key named `key` holds (`password`, `token`, `secret`), or None.

    Keys are split into words (``_ - .`` and camelCase) so that ``max_tokens`` and ``tokenizer``
    are not ``token`` while ``HF_TOKEN``, ``apiKey`` and ``PGPASSWORD`` are.
    """
    segs = [p.lower() for p in _SEG_SPLIT.split(key) if p]
    while len(segs) > 1 and segs[-1] in _ENCODING_SUFFIX:
        segs.pop()
    if not segs:
        return None
    last = segs[-1]
    if last in _META_SUFFIX:
        return None
    for seg in segs:
        if "password" in seg or "passwd" in seg or "passphrase" in seg or "passcode" in seg:
            return PASSWORD
    if last in ("pwd", "pass", "pw"):
        return PASSWORD
    for seg in segs:
        if "secret" in seg or seg in ("credential", "credentials", "creds", "cred"):
            return SECRET
    prev = segs[-2] if len(segs) > 1 else ""
    if last == "token":
        return None if prev in _NOT_A_CREDENTIAL_TOKEN else TOKEN
    if last.endswith("token"):  # authtoken, hftoken, identitytoken
        return None if last[:-5] in _NOT_A_CREDENTIAL_TOKEN else TOKEN
    if last.endswith("apikey"):
        return TOKEN
    if last == "key":
        if prev == "api":
            return TOKEN
        return SECRET if prev in _KEY_QUALIFIERS else None
    if last.endswith("key") and last[:-3] in _KEY_QUALIFIERS:  # privatekey, accesskey
        return SECRET
    if last in ("auth", "authorization") or (last.endswith("auth") and len(last) > 4):
        return SECRET
    if last == "sig" or (last == "signature" and "amz" in segs):  # Azure SAS, S3 presigned
        return SECRET
    return None


# values that are not secrets even under a secret-named key
_STOP_VALUES = _words(
    "true false yes no on off none null nil ~ n/a na - * ** *** **** ***** ****** ******** "
    "<redacted> redacted masked hidden xxx xxxx xxxxxx xxxxxxxx enabled disabled required "
    "optional undefined unset [] {} '' \"\" empty notset not_set | > |- >- |+ >+ 0 1 -1"
)
_PLACEHOLDER = re.compile(
    r"\$[A-Za-z_][A-Za-z0-9_]*|\$\{[^}\n]{1,200}\}|\$\([^)\n]{1,200}\)|\{\{[^}\n]{0,200}\}\}"
    r"|%\([A-Za-z_]{1,64}\)s|<[^<>\n]{0,200}>|%[A-Za-z_][A-Za-z0-9_]*%"
)
_MARKER = re.compile(r"\[REDACTED(?::[a-z-]{1,40})?\]")
_WORD_END = re.compile(r"[ \t\r\n\x00\x0b\x0c]|$")
_WORDS = re.compile(r"[A-Za-z0-9]+")
_BLANKS = frozenset(" \t\r\n\x00\x0b\x0c")
_MARKER_AT_END = re.compile(r"\[REDACTED(?::[a-z-]{1,40})?\]$")
_AUTH_SCHEMES = _words("bearer basic token digest negotiate ntlm apikey aws4-hmac-sha256")
# a file that holds the secret, under a well-known root: ``private_key: /etc/ssl/private/k.pem``
_PATH_VALUE = re.compile(
    r"/(?:etc|run|var|home|root|opt|usr|srv|tmp|mnt|data|secrets|vault|certs|keys|app|"
    r"workspace|media|snap|lib|Users)/[A-Za-z0-9_.@-]*(?:/[A-Za-z0-9_.@-]*)*"
)


def _keeps(value: str, kind: str) -> bool:
    """True when `value` under a key of `kind` is not a secret (placeholder, flag, path...).

    A value holding a marker is kept only when nothing but markers (and an auth scheme) is
    left: ``abc --token [REDACTED:token]`` still holds ``abc``."""
    v = value.strip(" \t\r\n\x00\x0b\x0c")
    if _MARK in v:
        v = _MARKER.sub("", v).strip(" \t\"'")
        if all(w.lower() in _AUTH_SCHEMES for w in _WORDS.findall(v)):
            return True  # `Bearer [REDACTED:token]:`, `[REDACTED:password]<`
    if not v.strip("\"'`()[]{}<>"):  # only quotes and brackets: structure, not a value
        return True
    if v.lower() in _STOP_VALUES or (kind != PASSWORD and v.lower() in _AUTH_SCHEMES):
        return True
    return bool(_PLACEHOLDER.fullmatch(v) or _PATH_VALUE.fullmatch(v))


def _looks_secret(value: str) -> bool:
    """For prose (``token: expired``): only a value with a digit or symbol counts, or a long one."""
    if len(value) >= 16:
        return True
    if len(value) < 6:
        return False
    return any(c.isdigit() for c in value) or any(not c.isalnum() for c in value)


# ---------------------------------------------------------------------------------------------
# Patterns. Every quantifier is bounded or runs over a class disjoint from what follows it, and
# the hot ones start with a literal (sre then skips ahead in C): a boundary that would need a
# leading lookbehind is checked in Python on the few hits instead.

_PEM_BEGIN = re.compile(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_SAME_LINE = re.compile(r"[A-Za-z0-9+/=\\]*")  # base64 with `\n` escapes (JSON strings)
_PEM_B64_LINE = re.compile(r"[A-Za-z0-9+/=]+")
_B64_OR_ESCAPE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\\")
_PEM_HEADER = re.compile(r"(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset):.*")
_EOL = re.compile(r"[\n\x00]")
_PUTTY = re.compile(
    r"(?m)^(Private-Lines:[ \t]*\d{1,4}[ \t]*\r?\n)((?:[A-Za-z0-9+/=]{1,200}(?:\r?\n|\Z))+)"
)

# matched where `str.find` on the lowercased text saw "authorization" / "bearer" (fast)
_AUTH_HEADER = re.compile(
    r"(?i)(authorization\b[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"((?:bearer|basic|token|digest|negotiate|ntlm|apikey|aws4-hmac-sha256)[ \t]+)?"
    r"([^\s\"',;\[\x00][^\r\n\"'\x00]{0,4096})"
)
_BEARER = re.compile(r"(?i)bearer[ \t]+([A-Za-z0-9._~+/=-]{8,4096})")
# the password runs to the last `@` before the path; a raw `/` cannot be in it (it would have to
# be percent-encoded), which keeps `registry:5000/v2/img@sha256:...` out
_URL_USERINFO = re.compile(r"://([^\s:/?#@'\"\[\]]{0,256}):([^\s/'\"]{1,256})@")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_VENDOR = tuple(
    re.compile(p)
    for p in (
        r"gh[pousr]_[A-Za-z0-9]{36,}",  # GitHub
        r"github_pat_[A-Za-z0-9_]{22,}",
        r"glpat-[A-Za-z0-9_-]{20,}",  # GitLab
        r"xox[abeoprs]-[A-Za-z0-9-]{10,}",  # Slack
        r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{10,}",
        r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
        r"nvapi-[A-Za-z0-9_-]{20,}",  # NVIDIA NGC
        r"sk_(?:live|test)_[A-Za-z0-9]{20,}",  # Stripe
        r"rk_(?:live|test)_[A-Za-z0-9]{20,}",
        r"AIza[0-9A-Za-z_-]{35}",  # Google
        r"npm_[A-Za-z0-9]{36}",
        r"pypi-AgE[A-Za-z0-9_-]{50,}",
        r"A(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])",  # AWS access key id
        r"sk-[A-Za-z0-9_-]{20,}",  # OpenAI-style; mixed case and digits checked on the hit
        r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",  # JWT
    )
)
_CRYPT_HASHES = (
    re.compile(
        r"\$(?:1|2[abxy]?|5|6|7|y|gy|apr1|md5|sha1|argon2(?:id|i|d)|pbkdf2(?:-sha(?:1|256|512))?"
        r"|scrypt)\$[A-Za-z0-9./=,+$-]{8,}"
    ),
    re.compile(
        r"\{(?:SSHA|SHA|SMD5|MD5|CRYPT|SSHA256|SSHA512|PBKDF2[-A-Z0-9]{0,20})\}[A-Za-z0-9+/=.$]{8,}"
    ),
)
_PGPASS_GATE = re.compile(r":(?:[1-9]\d{0,4}|\*):[^:\s]{1,255}:[^:\s]{1,255}:[^\n]")
# host:port:database:user:password (libpq takes the rest of the line as the password)
_PGPASS = re.compile(
    r"(?m)^(([^:\s#][^:\s]{0,255}):(?:[1-9]\d{0,4}|\*):([^:\s]{1,255}):([^:\s]{1,255}):)"
    r"((?:[^\s\\]|\\.){1,1024})[ \t\r]*$"
)
_HEX_GROUP = re.compile(r"[0-9A-Fa-f]{1,4}")
_NETRC = re.compile(r"password[ \t]+(\S{1,1024})")
_NETRC_LEAD = re.compile(r"(?:^|[ \t])(?:login|user)[ \t]+\S{1,256}[ \t]+$")
_CURL_USER = re.compile(
    r"-(?:u|-user)(?:[ \t]+|=)(?:\"[^\s:\"]{1,256}:([^\"\n]{1,1024})\""
    r"|'[^\s:']{1,256}:([^'\n]{1,1024})'|[^\s:\"']{1,256}:([^\s\"']{1,1024}))"
)
# one shell word: quoted and bare parts glued (`"a b"c`), an unclosed quote to the line's end
_ARG_VALUE = r"((?=[^\s-])(?:\"[^\"\n]{0,1024}\"?|'[^'\n]{0,1024}'?|[^\s\"']){1,1024})"
_ARG_WORD = re.compile(_ARG_VALUE)
# `-p` after these commands: sshpass takes `-p PASS` or `-pPASS`; mysql only `-pPASS` (its
# `-p db` prompts, and `db` is the database)
_DASH_P_COMMAND = re.compile(r"\b(sshpass|mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)\b")
_COMMAND_END = re.compile(r"[\n\x00;|&]")
_DASH_P_SPACED = re.compile(r"(?<![^ \t])-p[ \t]*" + _ARG_VALUE)
_DASH_P_GLUED = re.compile(r"(?<![^ \t])-p" + _ARG_VALUE)
_YAML_GATE = re.compile(r"[|>][-+0-9]{0,3}[ \t]*\r?\n")
_YAML_HEAD = re.compile(
    r"([ \t]*)(?:-[ \t]+)?[\"']?([A-Za-z_][A-Za-z0-9_.-]{0,80})[\"']?[ \t]*:[ \t]*"
)
# a keyword, the rest of its key, maybe a closing quote, then a separator (run on lowercase)
# (`(?=(x))\1` is an atomic group, so a failed hit never backtracks through the key: 3.8 has no
# possessive quantifiers)
_KEY_HIT = (
    r"(?:pass|pw|secret|token|key|auth|cred|sig)(?=([a-z0-9_.-]{0,100}))\1(?:\\?[\"'])?[ \t]*[:=>]"
)
_KEY_HIT_LOWER = re.compile(_KEY_HIT)
_KEY_HIT_ANYCASE = re.compile(_KEY_HIT, re.I)  # when lower() changes the length (rare Unicode)
_KEY_SEP_AT = re.compile(r"([A-Za-z0-9_.-]{1,100})[\"']?[ \t]*(?::=|=>|=|:(?!:))")
_FLAG_AT = re.compile(r"--([A-Za-z0-9_.-]{1,100})(?![A-Za-z0-9_.-])")
_FLAG_ANYWHERE = re.compile(r"(?<![A-Za-z0-9_.-])" + _FLAG_AT.pattern)
_FLAG = re.compile(r"--([A-Za-z0-9_.-]{1,100})[ \t]+")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_SEP = re.compile(r"[ \t]*(?::=|=>|=|:(?!:))[ \t]*")
_LINE_LEAD = re.compile(
    r"[ \t]*(?:-[ \t]+)?(?:(?:export|set|local|readonly|declare[ \t]+-x|setenv)[ \t]+)?\\?[\"']?"
)
_DQ_VALUE = re.compile(r"\"((?:[^\"\\\n]|\\.){0,8192})\"")
_ESC_DQ_VALUE = re.compile(r"\\\"([^\"\\\n]{0,8192})\\\"")
_SQ_VALUE = re.compile(r"'([^'\n]{0,8192})'")
_INLINE_VALUE = re.compile(r"[^\s\"'&,;<>(){}|\\\x00]{1,8192}")
_XML_VALUE = re.compile(r"[^<\n]{1,8192}")
_ENV_ENTRY = re.compile(r"([ \t]*(?:export[ \t]+)?)([A-Za-z_][A-Za-z0-9_.-]{0,200})=(.*)", re.S)

_OCT = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_TAIL = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![A-Za-z0-9_]|\.\d)")  # first octet: back
_IPV6 = re.compile(
    r"(?<![A-Za-z0-9:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    rf"(?:{_OCT}(?:\.{_OCT}){{3}}|[0-9A-Fa-f]{{0,4}})"
    r"(?![A-Za-z0-9:]|\.\d)"
)
_IPV6_FULL_GATE = re.compile(
    r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"
)
_MACS = tuple(
    re.compile(
        sep + r"(?<=[0-9A-Fa-f]{2}" + sep + r")(?:[0-9A-Fa-f]{2}" + sep + r"){4}[0-9A-Fa-f]{2}"
        r"(?![A-Za-z0-9]|[:-][0-9A-Fa-f])"
    )
    for sep in (":", "-")
)  # each match starts at the first separator: the first octet is the two characters before
_DASH_GATE = re.compile(r"-\d{1,3}-\d{1,3}-\d")
_IP_IN_NAME = re.compile(
    r"(?<![A-Za-z0-9.-])((?:[A-Za-z][A-Za-z0-9]{0,62}-){1,8})?"
    rf"({_OCT}-{_OCT}-{_OCT}-{_OCT})(?![0-9]|-[0-9])"
)
_VERSION_BEFORE = re.compile(r"(?i)\bver(?:sion)?s?[ \t]*[:=]?[ \t]*[\"']?$")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

_MAX_ROUNDS = 4
_V4_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
_V4_SPAN = 2**17  # 198.18.0.0/15
_V4_SPILL = int(ipaddress.IPv4Address("240.0.0.0"))
_V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))
_METADATA_V4 = "169.254.169.254"
_RESERVED_NAMES = _words(
    "localhost localdomain localhost.localdomain host domain example invalid ip redacted "
    "password token secret private key known hash unprocessable"
)
_NAME_SYNTAX = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,251}[a-z0-9])?")
_HOST_PSEUDO = re.compile(r"host-(\d+)")
_DOMAIN_PSEUDO = re.compile(r"domain-(\d+)\.example")


def _oct_ok(part: str) -> bool:
    return len(part) == 1 or (part[0] != "0" and int(part) <= 255)


class Redactor:
    """Redacts one host's captures; keeps the pseudonym mapping and per-kind counts.

    `extra_secrets`: literal values known to be secret (a sudo password, an admin token).
    `mapping`: a previous `Redactor.mapping` of the same host, to continue (consistent pseudonyms
    across captures). `hostnames`/`domains`: names to pseudonymize (FQDNs bring their short form
    and every name in their domain).
    """

    def __init__(
        self,
        pseudonymize: bool = False,
        extra_secrets: Sequence[str] = (),
        mapping: dict[str, str] | None = None,
        hostnames: Sequence[str] = (),
        domains: Sequence[str] = (),
    ) -> None:
        self._lock = threading.RLock()
        self._pseudonymize = bool(pseudonymize)
        self._counts: dict[str, int] = {}
        self._map: dict[str, str] = {}
        self._pseudo: set[str] = set()
        self._next = {"host": 1, "domain": 1, "ipv4": 1, "ipv6": 1, "mac": 1}
        self._known_re: re.Pattern[str] | None = None
        self._short_secrets: frozenset[str] = frozenset()
        self._names_lower: re.Pattern[str] | None = None
        self._names_anycase: re.Pattern[str] | None = None
        self._domain_list: list[str] = []
        self._originals: set[str] = set()
        for orig, pseudo in (mapping or {}).items():
            self._adopt(str(orig), str(pseudo))
        self._set_secrets(_listed(extra_secrets))
        self._set_names(_listed(hostnames), _listed(domains))

    # ----- public -----------------------------------------------------------------------------

    @property
    def mapping(self) -> dict[str, str]:
        """Original -> pseudonym. Control side only: it undoes the pseudonymization, so it is
        never written into a bundle or any other export."""
        with self._lock:
            return dict(self._map)

    @property
    def counts(self) -> dict[str, int]:
        """How many of each kind were redacted or pseudonymized, for the bundle's manifest."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    def text(self, s: str) -> str:
        """`s` with every secret redacted (and addresses/hostnames pseudonymized if asked)."""
        with self._lock:
            try:
                return self._text(s if isinstance(s, str) else _as_text(s))
            except Exception:  # never raise, never let the input through
                return self._failed()

    def env(self, s: str) -> str:
        """Environment text: ``KEY=VALUE`` lines (``env``, ``.env``, ``export``) or NUL-separated
        ``/proc/PID/environ``. The whole value of a secret-named key is redacted, spaces and
        all; other entries are redacted like `text`."""
        with self._lock:
            try:
                s = s if isinstance(s, str) else _as_text(s)
                sep = "\x00" if "\x00" in s else "\n"
                return sep.join(self._env_entry(part) for part in s.split(sep))
            except Exception:  # never raise, never let the input through
                return self._failed()

    # ----- setup ------------------------------------------------------------------------------

    def _adopt(self, orig: str, pseudo: str) -> None:
        """Take one entry of a previous mapping, so its counters and name lists continue."""
        self._map[orig] = pseudo
        self._pseudo.add(pseudo)
        m = _HOST_PSEUDO.fullmatch(pseudo)
        if m:
            self._next["host"] = max(self._next["host"], int(m.group(1)) + 1)
            self._originals.add(orig)
            return
        m = _DOMAIN_PSEUDO.fullmatch(pseudo)
        if m:
            self._next["domain"] = max(self._next["domain"], int(m.group(1)) + 1)
            self._originals.add(orig)
            return
        # addresses: `_alloc` skips the pseudonyms taken, so their counters need no restoring

    def _set_secrets(self, secrets: Iterable[str]) -> None:
        longs: set[str] = set()
        shorts: set[str] = set()
        for raw in secrets:
            v = str(raw).strip("\r\n")
            if len(v) >= 6:
                longs.add(v)
                longs.add(json.dumps(v)[1:-1])
                longs.add(json.dumps(v)[1:-1].replace("/", "\\/"))  # PHP-style `\/`
                longs.add(urllib.parse.quote(v, safe=""))
            elif len(v) >= 4:
                shorts.add(v)
        longs = {v for v in longs if len(v) >= 6 and v not in _MARK and _MARK not in v}
        if not longs and not shorts:
            return
        self._short_secrets = frozenset(shorts)  # whole tokens only: checked on the hit
        alts = [re.escape(v) for v in sorted(longs | shorts, key=len, reverse=True)]
        self._known_re = re.compile(r"(\[REDACTED:[a-z-]{1,40}\])|" + "|".join(alts))

    def _set_names(self, hostnames: Sequence[str], domains: Iterable[str]) -> None:
        names: set[str] = set()
        doms: set[str] = set()
        for raw in hostnames:
            h = str(raw).strip().strip(".").lower()
            if h in _RESERVED_NAMES or not _NAME_SYNTAX.fullmatch(h):
                continue
            short, _, dom = h.partition(".")
            if dom.count(".") >= 1 and dom not in _RESERVED_NAMES:
                doms.add(dom)
            elif dom:
                names.add(h)
            names.add(short)
        for raw in domains:
            d = str(raw).strip().strip(".").lower()
            if d.count(".") >= 1 and _NAME_SYNTAX.fullmatch(d):
                doms.add(d)
        for orig in self._originals:  # names from a continued mapping
            if _DOMAIN_PSEUDO.fullmatch(self._map[orig]):
                doms.add(orig)
            elif re.search(r"[0-9-]", orig):  # `gpu-17`, not a word like `www` seen in an FQDN
                names.add(orig)
        names = {n for n in names if len(n) >= 3 and n not in _RESERVED_NAMES}
        names = {n for n in names if not re.fullmatch(r"(?:host|domain)-\d+", n)}
        self._originals |= names | doms
        for raw in hostnames if self._pseudonymize else ():  # numbered in the order given
            h = str(raw).strip().strip(".").lower()
            short, _, dom = h.partition(".")
            if short in names:
                pshort = self._host(short)
                if dom in doms:
                    full = pshort + "." + self._domain(dom)
                    self._map.setdefault(h, full)
                    self._pseudo.add(full)
        if names:
            alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
            self._names_lower = re.compile(alts)
            self._names_anycase = re.compile(alts, re.I)
        self._domain_list = sorted(doms, key=len, reverse=True)

    # ----- the passes -------------------------------------------------------------------------

    def _count(self, kind: str, n: int = 1) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + n

    def _failed(self) -> str:
        self._count(UNPROCESSABLE)
        return marker(UNPROCESSABLE)

    def _text(self, s: str) -> str:
        if not s:
            return s
        s = self._settled(s)
        for _ in range(_MAX_ROUNDS if self._pseudonymize else 0):
            pseudonymized = self._pseudonymize_text(s)
            if pseudonymized == s:
                break
            # a pseudonym can spell what a rule reads as a secret (`-u 2001:db8::1`), and a
            # marker can free an address: settle both now, so a second `text` changes nothing
            s = self._settled(pseudonymized)
        return s

    def _settled(self, s: str) -> str:
        """The secret rules run until nothing changes, so a second `text` finds nothing to do:
        one rule's marker can end the stretch where another rule stopped (`x -p... --password`).
        Text without secrets takes one run; text with some, usually two."""
        for _ in range(_MAX_ROUNDS):
            out = self._secrets(s)
            if out == s:
                break
            s = out
        return s

    def _secrets(self, s: str) -> str:
        if self._known_re is not None:
            s = self._known_re.sub(self._known_sub, s)
        if "PRIVATE KEY" in s:
            s = self._pem(s)
            if "-----END" in s:
                s = _splice(s, self._pem_tails(s))
        if "Private-Lines" in s:
            s = _PUTTY.sub(self._replacer(PRIVATE_KEY, 2), s)
        low = _lower_same_length(s)
        if "bearer" in low:
            s = _splice(s, self._bearers(s, low))
        if "://" in s:
            s = _URL_USERINFO.sub(self._replacer(PASSWORD, 2), s)
        for pattern in _VENDOR:
            s = pattern.sub(self._vendor_sub, s)
        for pattern in _CRYPT_HASHES:
            s = pattern.sub(self._hash_sub, s)
        if _PGPASS_GATE.search(s):
            s = _PGPASS.sub(self._pgpass_sub, s)
        # The structural rules all read the same text and their spans are merged, so no rule can
        # eat a key or a command word that another one needs (`sshpass -p password: "x"`).
        spans: list[tuple[int, int, str, str]] = list(self._yaml_blocks(s))
        if "authorization" in low:
            spans.extend(self._auth_headers(s))
        spans.extend(self._key_values(s))
        if "--" in s:
            spans.extend(self._flags(s))
        if "password" in s:
            spans.extend(self._netrc(s))
        if "-u" in s:
            spans.extend(self._curl(s))
        if "sshpass" in s or "mysql" in s or "mariadb" in s:
            spans.extend(self._dash_p(s))
        return self._apply(s, spans)

    def _apply(self, s: str, spans: list[tuple[int, int, str, str]]) -> str:
        """`s` with the union of `spans` (start, end, kind, replacement) redacted: each merged
        stretch is counted once and keeps its first span's kind."""
        merged: list[tuple[int, int, str, str]] = []
        for a0, b0, kind, rep in sorted(spans):
            a, b = a0, b0
            if rep == marker(kind):  # a value never takes the blanks around it (word boundaries)
                while a < b and s[a] in _BLANKS:
                    a += 1
                while b > a and s[b - 1] in _BLANKS:
                    b -= 1
                if a == b:
                    continue
            if merged and a < merged[-1][1]:
                pa, pb, pkind, _ = merged[-1]
                if b > pb:  # overlapping, not inside: one marker to the end of the word
                    end = _WORD_END.search(s, b, min(len(s), b + 1024))
                    merged[-1] = (pa, b if end is None else end.start(), pkind, marker(pkind))
                continue
            merged.append((a, b, kind, rep))
        for _, _, kind, _ in merged:
            self._count(kind)
        return _splice(s, ((a, b, rep) for a, b, _, rep in merged))

    def _replacer(self, kind: str, group: int) -> Callable[[re.Match[str]], str]:
        """A `re.sub` callback that redacts `group` (unless it is a placeholder or marker)."""

        def sub(m: re.Match[str]) -> str:
            value = m.group(group)
            start, end = m.start(group) - m.start(0), m.end(group) - m.start(0)
            whole = m.group(0)
            if _keeps(value, PASSWORD) or _cuts_a_marker(m.string, m.start(group), m.end(group)):
                return whole
            self._count(kind)
            return whole[:start] + marker(kind) + whole[end:]

        return sub

    def _known_sub(self, m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(0)  # a marker: leave it, even if a known secret is inside its text
        if m.group(0) in self._short_secrets:
            a, b, s = m.start(), m.end(), m.string
            if (a > 0 and s[a - 1] in _ALNUM) or (b < len(s) and s[b] in _ALNUM):
                return m.group(0)
        self._count(KNOWN_SECRET)
        return marker(KNOWN_SECRET)

    def _pem(self, s: str) -> str:
        """Private-key blocks, END line or not (a cut capture may lack it)."""
        out: list[str] = []
        pos = 0
        n = len(s)
        for m in _PEM_BEGIN.finditer(s):
            if m.start() < pos:
                continue
            same = _PEM_SAME_LINE.match(s, m.end())
            end = m.end() if same is None else same.end()
            endm = _PEM_END.match(s, end)
            if endm:
                end = endm.end()
            elif not s[end : _eol(s, end)].strip():
                end = self._pem_lines(s, end, n)
            out.append(s[pos : m.start()])
            out.append(marker(PRIVATE_KEY))
            self._count(PRIVATE_KEY)
            pos = end
        out.append(s[pos:])
        return "".join(out)

    def _pem_tails(self, s: str) -> Iterator[tuple[int, int, str]]:
        """A key's body and END line without its BEGIN (a capture that starts mid-key)."""
        done = 0
        for m in _PEM_END.finditer(s):
            if m.start() < done:
                continue
            bol = _bol(s, m.start())
            start = m.start()
            if not s[bol:start].strip():  # END on its own line: take the base64 lines above
                cur = bol
                while cur > done:
                    prev = _bol(s, cur - 1)
                    line = s[prev : cur - 1].strip()
                    if not (line and _PEM_B64_LINE.fullmatch(line)):
                        break
                    if cur < bol and len(line) < 16 and not line.endswith("="):
                        break  # only the last body line (right above END) may be short
                    cur = prev
                start = cur if cur < bol else start
            else:  # `...\nMIIE...\n-----END PRIVATE KEY-----` inside a JSON string
                while start > bol and s[start - 1] in _B64_OR_ESCAPE:
                    start -= 1
                if m.start() - start < 16:
                    start = m.start()  # too short for a key body
            if start < m.start():
                self._count(PRIVATE_KEY)
                yield start, m.end(), marker(PRIVATE_KEY)
                done = m.end()

    @staticmethod
    def _pem_lines(s: str, end: int, n: int) -> int:
        """Where the base64 body that starts on the line after `end` stops (its END included)."""
        seen_b64 = False
        pos = _eol(s, end) + 1
        while pos < n:
            eol = _eol(s, pos)
            line = s[pos:eol].strip()
            if line.startswith("-----END"):
                endm = _PEM_END.match(line)
                if endm:
                    return pos + s[pos:eol].index("-----END") + endm.end()
                return end
            if line and _PEM_B64_LINE.fullmatch(line):
                if len(line) < 16 and not line.endswith("="):
                    nxt = s[eol + 1 : _eol(s, eol + 1)].strip() if eol < n else ""
                    if not nxt.startswith("-----END"):
                        return end
                seen_b64 = True
            elif seen_b64 or not (not line or _PEM_HEADER.fullmatch(line)):
                return end
            end = eol
            pos = eol + 1
        return end

    def _auth_headers(self, s: str) -> Iterator[tuple[int, int, str, str]]:
        """``Authorization: <scheme> CREDENTIALS`` (and Proxy-), the scheme kept. A value cut
        short by a later key, or not credential-shaped, is searched again from inside."""
        low = _lower_same_length(s)
        pos = 0
        while True:
            i = low.find("authorization", pos)
            if i < 0:
                return
            m = _AUTH_HEADER.match(s, i)
            if m is None or (i > 0 and (s[i - 1] in _ALNUM or s[i - 1] == "_")):
                pos = i + 1
                continue
            scheme = (m.group(2) or "").strip().lower()
            vs = m.start(3)
            ve = _next_secret_key(s, vs, m.end(3))  # `x password: y` leaves the key to its rule
            while ve > vs and s[ve - 1] in _BLANKS:
                ve -= 1
            value = s[vs:ve]
            if _keeps(value, PASSWORD) or (
                not scheme and (len(value) < 8 or value[0] in "{[\\")  # no scheme: credentials
            ):
                pos = vs
                continue
            if scheme == "basic":
                kind = PASSWORD
            else:
                kind = TOKEN if scheme in ("bearer", "token") else SECRET
            yield vs, ve, kind, marker(kind)
            pos = ve

    def _bearers(self, s: str, low: str) -> Iterator[tuple[int, int, str]]:
        """A bare ``Bearer <token>`` (a token has a digit, or is long and mixed-case)."""
        i = low.find("bearer")
        while i >= 0:
            m = _BEARER.match(s, i)
            if m is not None and (i == 0 or not (s[i - 1] in _ALNUM or s[i - 1] == "_")):
                tok = m.group(1)
                mixed = tok != tok.lower() and tok != tok.upper()
                if any(c.isdigit() for c in tok) or (len(tok) >= 20 and mixed):
                    self._count(TOKEN)
                    yield m.start(1), m.end(1), marker(TOKEN)
                    i = low.find("bearer", m.end())
                    continue
            i = low.find("bearer", i + 1)

    def _vendor_sub(self, m: re.Match[str]) -> str:
        st = m.start()
        if st > 0 and m.string[st - 1] in _TOKEN_CHARS:
            return m.group(0)  # inside a longer word: `disk-...`
        text = m.group(0)
        if text.startswith("sk-"):
            body = text[3:]
            if not (
                any(c.isdigit() for c in body)
                and any(c.isupper() for c in body)
                and any(c.islower() for c in body)
            ):
                return text
        self._count(TOKEN)
        return marker(TOKEN)

    def _hash_sub(self, m: re.Match[str]) -> str:
        st = m.start()
        if st > 0 and (m.string[st - 1] in _ALNUM or m.string[st - 1] == "$"):
            return m.group(0)
        self._count(PASSWORD_HASH)
        return marker(PASSWORD_HASH)

    def _pgpass_sub(self, m: re.Match[str]) -> str:
        if _keeps(m.group(5), PASSWORD) or all(_HEX_GROUP.fullmatch(m.group(g)) for g in (2, 3, 4)):
            return m.group(0)  # (`2001:0:0:1:2:3:4:5 host` in /etc/hosts is no .pgpass)
        self._count(PASSWORD)
        return m.group(1) + marker(PASSWORD)

    def _netrc(self, s: str) -> Iterator[tuple[int, int, str, str]]:
        """``machine h login u password SECRET`` or a ``password SECRET`` line (.netrc)."""
        for m in _NETRC.finditer(s):
            st = m.start()
            bol = _bol(s, st)
            lead = s[bol:st] if st - bol <= 600 else "\x00" + s[st - 600 : st]  # no `^` at a cut
            alone = not lead.strip() and not s[m.end() : _eol(s, m.end())].strip()
            if (alone or _NETRC_LEAD.search(lead)) and not _keeps(m.group(1), PASSWORD):
                yield m.start(1), m.end(1), PASSWORD, marker(PASSWORD)

    def _curl(self, s: str) -> Iterator[tuple[int, int, str, str]]:
        """``curl -u user:PASS`` (also ``--user``, quoted); not a ``-u 1000:1000`` uid:gid."""
        for m in _CURL_USER.finditer(s):
            st = m.start()
            if st > 0 and s[st - 1] in _KEY_CHARS:
                continue
            group = 1 if m.group(1) is not None else 2 if m.group(2) is not None else 3
            user = re.split(r"[ \t=]", s[st : m.start(group) - 1])[-1].strip("\"'")
            value = m.group(group)
            if (value.isdigit() and user.isdigit()) or _keeps(value, PASSWORD):
                continue
            if _cuts_a_marker(s, m.start(group), m.end(group)):
                continue
            yield m.start(group), m.end(group), PASSWORD, marker(PASSWORD)

    def _dash_p(self, s: str) -> Iterator[tuple[int, int, str, str]]:
        """Every ``-p`` option of an ``sshpass``/``mysql`` command (to its `;`, `|`, `&`)."""
        spans: dict[int, int] = {}
        for cmd in _DASH_P_COMMAND.finditer(s):
            end = _COMMAND_END.search(s, cmd.end())
            stop = len(s) if end is None else end.start()
            pattern = _DASH_P_SPACED if cmd.group(1) == "sshpass" else _DASH_P_GLUED
            for m in pattern.finditer(s, cmd.end(), stop):
                if not _keeps(m.group(1), PASSWORD):
                    spans[m.start(1)] = m.end(1)
        for start in sorted(spans):
            yield start, spans[start], PASSWORD, marker(PASSWORD)

    def _yaml_blocks(self, s: str) -> Iterator[tuple[int, int, str, str]]:
        """``password: |`` followed by a more indented block: the whole block is the value."""
        n = len(s)
        for m in _YAML_GATE.finditer(s):
            bol = _bol(s, m.start())
            head = _YAML_HEAD.fullmatch(s, bol, m.start())
            if head is None:
                continue
            kind = key_kind(head.group(2))
            if kind is None:
                continue
            indent = head.group(1)
            start = end = pos = m.end()
            while pos < n:
                eol = _eol(s, pos)
                line = s[pos:eol]
                if line.strip() and not (
                    line.startswith(indent) and line[len(indent) : len(indent) + 1] in (" ", "\t")
                ):
                    break
                if line.strip():
                    end = eol
                pos = eol + 1
            if end > start and not _keeps(s[start:end], kind):
                yield start, end, kind, indent + "  " + marker(kind)

    def _key_values(self, s: str) -> Iterator[tuple[int, int, str, str]]:
        """``key<sep>value`` wherever a secret-named key is followed by a separator: found by
        keyword on a lowercase copy, then the key, quoting and value are read around it."""
        low = s.lower()
        hits = _KEY_HIT_LOWER.finditer(low) if len(low) == len(s) else _KEY_HIT_ANYCASE.finditer(s)
        done = 0
        n = len(s)
        for m in hits:
            if m.start() < done:
                continue
            ks = ke = m.start()
            while ks > 0 and s[ks - 1] in _KEY_CHARS and m.start() - ks < 100:
                ks -= 1
            while ke < n and s[ke] in _KEY_CHARS and ke - m.start() < 200:
                ke += 1
            done = ke
            if ks > 0 and s[ks - 1] in _KEY_CHARS:
                continue  # longer than any key
            got = self._key_value_at(s, ks, ke)
            if got is not None:
                vs, ve, kind = got
                done = ve
                yield vs, ve, kind, marker(kind)

    def _flags(self, s: str) -> Iterator[tuple[int, int, str, str]]:
        """``--password VALUE`` (``--password=VALUE`` is a key-value above)."""
        for m in _FLAG.finditer(s):
            if m.start() > 0 and s[m.start() - 1] in _KEY_CHARS:
                continue
            kind = key_kind(m.group(1))
            if kind is None:
                continue
            vm = _ARG_WORD.match(s, m.end())
            if vm and not _keeps(vm.group(0), kind):
                yield vm.start(), vm.end(), kind, marker(kind)

    def _key_value_at(self, s: str, ks: int, ke: int) -> tuple[int, int, str] | None:
        """The value span and kind of the secret assigned to key ``s[ks:ke]``, or None."""
        kind = key_kind(s[ks:ke].lstrip("-."))
        if kind is None or s[ks:ke].lower().endswith("authorization"):
            return None  # (`Authorization:` has its own rule, which keeps the scheme)
        n = len(s)
        bol = _bol(s, ks)
        line_start = _LINE_LEAD.fullmatch(s, bol, ks) is not None
        quote = ""
        if ks > 0 and s[ks - 1] in "\"'":
            quote = s[ks - 1]
            if ks > 1 and s[ks - 2] == "\\":
                quote = "\\" + quote
        pos = ke
        outer = ""  # `"HF_TOKEN=a b"`: the quotes wrap the whole assignment (systemd, docker -e)
        if quote and s.startswith(quote, pos):
            pos += len(quote)
        elif ks > 0 and s[ks - 1] == "<" and s.startswith(">", ke):  # <password>x</password>
            xm = _XML_VALUE.match(s, ke + 1)
            if xm is None:
                return None
            xe = _next_secret_key(s, xm.start(), xm.end())
            if _keeps(s[xm.start() : xe], kind) or _only_punctuation_left(
                s, xm.start(), xe, xm.end()
            ):
                return None
            return xm.start(), xe, kind
        else:
            outer, quote = quote[-1:], ""
        sep = _SEP.match(s, pos)
        if sep is None or sep.end() >= n:
            return None
        if sep.group(0)[0] in " \t" and s.startswith("==", sep.end() - 1):
            return None  # `token == expected` compares; `TOKEN==abc` assigns "=abc"
        vpos = sep.end()
        nxt = _KEY_SEP_AT.match(s, vpos)
        if nxt is not None and key_kind(nxt.group(1).lstrip("-.")) is not None:
            return None  # `password= token: x` has no value: the next key follows
        c = s[vpos]
        vm = None
        if c == '"':
            vm = _DQ_VALUE.match(s, vpos)
        elif c == "\\" and s.startswith('\\"', vpos):
            vm = _ESC_DQ_VALUE.match(s, vpos)
        elif c == "'":
            vm = _SQ_VALUE.match(s, vpos)
        if vm is not None:
            vs, ve = vm.start(1), vm.end(1)
        elif outer and s.find(outer, vpos, _eol(s, vpos)) >= 0:
            vs, ve = vpos, s.find(outer, vpos, _eol(s, vpos))
        elif line_start:
            vs, ve = vpos, _eol(s, vpos)
            while ve > vs and s[ve - 1] in " \t\r":
                ve -= 1
        else:
            im = _INLINE_VALUE.match(s, vpos)
            if im is None:
                return None
            vs, ve = im.start(), im.end()
        cut = _next_secret_key(s, vs, ve)  # a later secret-named key is not part of this value
        if _only_punctuation_left(s, vs, cut, ve):
            return None
        ve = cut
        value = s[vs:ve]
        if ve <= vs or _keeps(value, kind):
            return None
        if (
            not line_start
            and not quote
            and vm is None
            and "=" not in sep.group(0)
            and _prose_before(s, bol, ks)
            and not _looks_secret(value)
        ):
            return None  # `Failed to refresh token: connection refused`
        return vs, ve, kind

    def _env_entry(self, entry: str) -> str:
        m = _ENV_ENTRY.fullmatch(entry)
        if m:
            kind = key_kind(m.group(2))
            if kind is not None and not _keeps(m.group(3), kind):
                self._count(kind)
                return m.group(1) + m.group(2) + "=" + marker(kind)
        return self._text(entry)

    # ----- pseudonymization -------------------------------------------------------------------

    def _pseudonymize_text(self, s: str) -> str:
        if self._domain_list:
            s = _splice(s, self._domain_spans(s))
        if self._names_lower is not None:
            s = _splice(s, self._name_spans(s))
        if "-" in s and _DASH_GATE.search(s):
            s = _IP_IN_NAME.sub(self._ip_in_name_sub, s)
        for pattern in _MACS:
            s = _splice(s, self._mac_spans(s, pattern))
        if ":" in s:
            s = _splice(s, self._ipv6_spans(s))
        if "." in s:
            s = _splice(s, self._ipv4_spans(s))
        return s

    def _domain_spans(self, s: str) -> Iterator[tuple[int, int, str]]:
        """Every name in a known domain, and the bare domain: ``db.dc1.example.com`` ->
        ``host-2.domain-1.example``. Found by the domain's text, the labels read backwards
        (never into the previous match)."""
        low = _lower_same_length(s)
        n = len(s)
        found: list[tuple[int, int]] = []
        for dom in self._domain_list:
            i = low.find(dom)
            while i >= 0:
                j = i + len(dom)
                after_ok = j >= n or not (
                    s[j] in _HOST_CHARS or (s[j] == "." and j + 1 < n and s[j + 1] in _ALNUM)
                )
                if after_ok and (i == 0 or s[i - 1] not in _HOST_CHARS):
                    found.append((i, -j))  # by start, the longest domain first
                i = low.find(dom, i + 1)
        found.sort()
        prev = 0
        for i, neg_j in found:
            j = -neg_j
            if i < prev:
                continue
            p = i
            if i > prev and s[i - 1] == ".":
                p = i - 1
                while p > prev and (s[p - 1] in _HOST_CHARS or s[p - 1] == ".") and i - p < 253:
                    p -= 1
                empty_label = s.rfind("..", p, i)
                if empty_label >= 0:
                    p = empty_label + 2
                while p < i and s[p] == ".":
                    p += 1
            if p == i or p < i - 1:
                yield p, j, self._domain_name(s[p:i], s[i:j])
                prev = j

    def _domain_name(self, prefix: str, dom: str) -> str:
        self._count("hostname")
        pdom = self._domain(dom)
        if not prefix:
            return pdom
        pseudo = self._host(prefix[:-1]) + "." + pdom
        self._map.setdefault((prefix + dom).lower(), pseudo)
        self._pseudo.add(pseudo)
        return pseudo

    def _name_spans(self, s: str) -> Iterator[tuple[int, int, str]]:
        low = s.lower()
        if len(low) == len(s) and self._names_lower is not None:
            hits = self._names_lower.finditer(low)
        elif self._names_anycase is not None:
            hits = self._names_anycase.finditer(s)
        else:
            return
        n = len(s)
        for m in hits:
            a, b = m.start(), m.end()
            if (a > 0 and s[a - 1] in _ALNUM) or (b < n and s[b] in _ALNUM):
                continue
            self._count("hostname")
            yield a, b, self._host(s[a:b])

    def _ip_in_name_sub(self, m: re.Match[str]) -> str:
        prefix = m.group(1) or ""
        s = m.string
        if not prefix and not (
            s.startswith(".", m.end()) and m.end() + 1 < len(s) and s[m.end() + 1].isalpha()
        ):
            return m.group(0)  # a bare `10-0-0-5` is not known to be an address
        got = self._ipv4(m.group(2).replace("-", "."))
        return m.group(0) if got is None else prefix + got.replace(".", "-")

    def _mac_spans(self, s: str, pattern: re.Pattern[str]) -> Iterator[tuple[int, int, str]]:
        for m in pattern.finditer(s):
            a = m.start() - 2
            if a > 0 and (s[a - 1] in _ALNUM or s[a - 1] in ":-"):
                continue
            key = s[a : m.end()].lower().replace("-", ":")
            if key in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff") or key in self._pseudo:
                continue
            self._count("mac")
            yield a, m.end(), self._alloc("mac", key, _mac_pseudo)

    def _ipv6_spans(self, s: str) -> Iterator[tuple[int, int, str]]:
        """IPv6 near each ``::`` or run of five colon groups (times like ``12:00:01``, MACs and
        PCI addresses are never near one): the full pattern runs only on those stretches."""
        anchors = []
        i = s.find("::")
        while i >= 0:
            anchors.append(i)
            i = s.find("::", i + 2)
        anchors.extend(m.start() for m in _IPV6_FULL_GATE.finditer(s))
        if not anchors:
            return
        anchors.sort()
        n = len(s)
        stretches: list[list[int]] = []
        for p in anchors:  # an address holding `p` lies within 46 characters of it
            lo, hi = max(0, p - 46), min(n, p + 48)
            if stretches and lo <= stretches[-1][1]:
                stretches[-1][1] = hi
            else:
                stretches.append([lo, hi])
        for lo, hi in stretches:
            for m in _IPV6.finditer(s, lo, hi):  # the lookbehind still sees before `lo`
                if m.end() == hi < n and (s[hi] in _ALNUM or s[hi] == ":"):
                    continue  # cut by the stretch: the whole run is no address
                got = self._ipv6(m.group(0))
                if got is not None:
                    yield m.start(), m.end(), got

    def _ipv6(self, text: str) -> str | None:
        if "::" not in text and all(len(g) == 2 for g in text.split(":")):
            return None  # EUI-64 / WWN notation, not an address
        try:
            addr = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
            return None
        key = addr.compressed
        if key in self._pseudo:
            return None
        self._count("ipv6")
        return self._alloc("ipv6", key, lambda n: str(ipaddress.IPv6Address(_V6_BASE + n)))

    def _ipv4_spans(self, s: str) -> Iterator[tuple[int, int, str]]:
        for m in _IPV4_TAIL.finditer(s):
            a = st = m.start()
            while a > 0 and st - a < 3 and "0" <= s[a - 1] <= "9":
                a -= 1
            if a == st or (a > 0 and (s[a - 1] in _ALNUM or s[a - 1] in "_.")):
                continue
            if _VERSION_BEFORE.search(s, max(0, a - 24), a):
                continue
            if s.startswith(("+", "~"), m.end()):  # 8.9.7.29+cuda12.2 is a package version
                continue
            got = self._ipv4(s[a : m.end()])
            if got is not None:
                yield a, m.end(), got

    def _alloc(self, kind: str, orig: str, make: Callable[[int], str]) -> str:
        got = self._map.get(orig)
        if got is not None:
            return got
        while True:  # skip pseudonyms taken, or equal to another original (ambiguous)
            n = self._next[kind]
            self._next[kind] = n + 1
            pseudo = make(n)
            if pseudo in self._pseudo:
                continue
            if pseudo != orig and (pseudo in self._map or pseudo in self._originals):
                continue
            break
        self._map[orig] = pseudo
        self._pseudo.add(pseudo)
        return pseudo

    def _host(self, name: str) -> str:
        return self._alloc("host", name.lower(), lambda n: f"host-{n}")

    def _domain(self, name: str) -> str:
        return self._alloc("domain", name.lower(), lambda n: f"domain-{n}.example")

    def _v4_pseudo(self, n: int) -> str:
        idx = n % 254 + 1 + (n // 254) * 256  # skip .0 and .255
        if idx < _V4_SPAN:
            return str(ipaddress.IPv4Address(_V4_BASE + idx))
        return str(ipaddress.IPv4Address(_V4_SPILL + idx - _V4_SPAN))

    def _ipv4(self, addr: str) -> str | None:
        """The pseudonym of dotted `addr`, or None to leave it (special, or one of ours)."""
        parts = addr.split(".")
        if len(parts) != 4 or not all(_oct_ok(p) for p in parts):
            return None
        first = int(parts[0])
        if first in (0, 127) or first >= 224 or addr == _METADATA_V4 or addr in self._pseudo:
            return None
        self._count("ipv4")
        return self._alloc("ipv4", addr, lambda n: self._v4_pseudo(n - 1))


def _splice(s: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """`s` with each ``(start, end, replacement)`` applied; spans come in order, overlaps lose."""
    out: list[str] = []
    pos = 0
    for a, b, rep in spans:
        if a < pos:
            continue
        out.append(s[pos:a])
        out.append(rep)
        pos = b
    if not out:
        return s
    out.append(s[pos:])
    return "".join(out)


def _lower_same_length(s: str) -> str:
    """`s.lower()` with indices kept (a few characters lower to two: those stay as they are)."""
    low = s.lower()
    if len(low) == len(s):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in s)


def _mac_pseudo(n: int) -> str:
    return "02:00:00:" + ":".join(f"{(n >> sh) & 255:02x}" for sh in (16, 8, 0))


def _bol(s: str, pos: int) -> int:
    """Where the line holding `pos` starts (NUL separates environ entries), looking back at
    most 4 KiB: a longer line is taken to start there."""
    lo = max(0, pos - 4096)
    return max(s.rfind("\n", lo, pos), s.rfind("\x00", lo, pos), lo - 1) + 1


def _eol(s: str, pos: int) -> int:
    m = _EOL.search(s, pos)
    return len(s) if m is None else m.start()


def _next_secret_key(s: str, start: int = 0, end: int | None = None) -> int:
    """Where the first secret-named key followed by a separator (or a ``--password`` flag, or
    an XML ``<password>``) starts in ``s[start:end]``, or `end`."""
    stop = len(s) if end is None else end
    if "--" in s[start:stop]:
        first = _FLAG_AT.match(s, start, stop)
        if first is not None and key_kind(first.group(1)) is not None:
            return start
        for flag in _FLAG_ANYWHERE.finditer(s, start, stop):
            if key_kind(flag.group(1)) is not None:
                stop = flag.start()
                break
    for hit in _KEY_HIT_ANYCASE.finditer(s, start, stop):
        ks = hit.start()
        while ks > start and s[ks - 1] in _KEY_CHARS:
            ks -= 1
        ke = hit.start()
        while ke < stop and s[ke] in _KEY_CHARS:
            ke += 1
        if key_kind(s[ks:ke].lstrip("-.")) is None:
            continue
        before = s[ks - 1] if ks > start else ""
        if before == "<" and s.startswith(">", ke):
            return ks - 1  # <password>
        after = ke + 1 if before in ("'", '"') and s.startswith(before, ke) else ke
        if _SEP.match(s, after) is not None and not s.startswith(">", after):
            return ks - 1 if before in ("'", '"') else ks
    return stop


def _only_punctuation_left(s: str, start: int, cut: int, end: int) -> bool:
    """A value cut short before the next key with nothing alphanumeric left (``=--password``)
    is punctuation between two keys, not a value."""
    return cut < end and not any(c.isalnum() for c in s[start:cut])


def _cuts_a_marker(s: str, start: int, end: int) -> bool:
    """Whether ``s[start:end]`` holds part of a marker but not all of it (a marker is at most 51
    characters, so a window that wide around the span is enough)."""
    for m in _MARKER.finditer(s, max(0, start - 64), min(len(s), end + 64)):
        if m.start() < end and start < m.end() and not (start <= m.start() and m.end() <= end):
            return True
    return False


def _prose_before(s: str, bol: int, ks: int) -> bool:
    """Whether the key follows a word (a sentence), not a `{`, `,` or the line start. A marker
    counts as the word it replaced, so a second run decides the same way."""
    i = ks - 1
    while i >= bol and s[i] in " \t":
        i -= 1
    if i < bol or i == ks - 1:
        return False
    if s[i] in _ALNUM:
        return True
    return s[i] == "]" and _MARKER_AT_END.search(s, max(bol, i - 48), i + 1) is not None


def _listed(values: Iterable[str]) -> list[str]:
    """A lone string is one value, not its characters (`hostnames="gpu-17"`)."""
    if isinstance(values, (str, bytes)):
        return [_as_text(values)]
    return [_as_text(v) for v in values or ()]


def _as_text(s: object) -> str:
    if isinstance(s, (bytes, bytearray)):
        return bytes(s).decode("utf-8", "replace")
    return "" if s is None else str(s)


def main(argv: Sequence[str] | None = None) -> int:
    """Operators' filter: redact stdin to stdout (the node runner imports the module instead)."""
    p = argparse.ArgumentParser(prog="redact.py", description="Redact secrets from stdin.")
    p.add_argument("--pseudonymize", action="store_true", help="also IPs, MACs, hostnames")
    p.add_argument("--hostname", action="append", default=[], help="a name to pseudonymize")
    p.add_argument("--domain", action="append", default=[], help="a domain to pseudonymize")
    p.add_argument("--env", action="store_true", help="input is KEY=VALUE lines or environ")
    p.add_argument(
        "--secrets-file", help="literal secrets, one a line (never on the command line: ps)"
    )
    p.add_argument("--mapping-in", help="a mapping JSON to continue")
    p.add_argument("--mapping-out", help="write the mapping JSON here (keep it private)")
    p.add_argument("--counts", action="store_true", help="print the counts JSON on stderr")
    args = p.parse_args(argv)
    secrets: list[str] = []
    if args.secrets_file:
        with open(args.secrets_file, encoding="utf-8") as fh:
            secrets = [line.rstrip("\r\n") for line in fh if line.strip()]
    previous: dict[str, str] | None = None
    if args.mapping_in:
        with open(args.mapping_in, encoding="utf-8") as fh:
            previous = {str(k): str(v) for k, v in dict(json.load(fh)).items()}
    r = Redactor(
        pseudonymize=args.pseudonymize,
        extra_secrets=secrets,
        mapping=previous,
        hostnames=args.hostname,
        domains=args.domain,
    )
    data = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    out = r.env(data) if args.env else r.text(data)
    sys.stdout.buffer.write(out.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()
    if args.mapping_out:
        fd = os.open(args.mapping_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(r.mapping, fh, indent=1, sort_keys=True)
    if args.counts:
        sys.stderr.write(json.dumps(r.counts, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
