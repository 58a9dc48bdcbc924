"""Logins, sessions, roles, CSRF and the login rate limit of the web dashboard.

Passwords: argon2id through pwdlib (`PasswordHash.recommended()`); a login for an unknown or
disabled user still verifies a dummy hash, so response time does not reveal usernames.

Sessions live in Starlette's `SessionMiddleware` (an itsdangerous-signed cookie, HttpOnly,
Secure when served over TLS). SameSite is "lax", not "strict": with "strict" a link to a node
page from an alert mail or a chat arrives without the cookie and looks logged out; "lax" still
withholds the cookie from cross-site POSTs, every change is a POST carrying a CSRF token, and
GETs change nothing. The cookie holds the username, role, a CSRF token, a session id and the
login time: the user is re-read on every request (a removed, disabled or demoted user loses
access at once), the login time bounds a session's life however often the cookie is
re-signed, and a logged-out session id is refused until the cookie would have expired anyway.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError

from agentctl.collectors.store import ROLES, UserRecord

from .state import WebError, WebState, is_api, web_state

MAX_PASSWORD_CHARS = 1024
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (sha256 kept in the store). Browsers use the login session.",
)


@cache
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


@cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash (salted, with its parameters) for `Store.put_user`."""
    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"a password has 1 to {MAX_PASSWORD_CHARS} characters")
    return _hasher().hash(password)


#: marks a stored hash as a one-time password (`agentctl demo`): the first login consumes it
ONE_TIME = "one-time:"
#: what a consumed one-time password leaves: no hasher reads it, so nothing verifies against it
USED = "one-time-used"


def one_time_hash(password: str) -> str:
    """A hash for `Store.put_user` that `consume_one_time` turns unusable on first login."""
    return ONE_TIME + hash_password(password)


def is_one_time(hashed: str) -> bool:
    return hashed.startswith(ONE_TIME)


def verify_password(password: str, hashed: str | None) -> tuple[bool, str | None]:
    """(matches, new hash when the stored one uses outdated parameters). `hashed=None` (no
    such user) verifies a dummy hash anyway, so both cases take the same time."""
    candidate = password if 0 < len(password) <= MAX_PASSWORD_CHARS else "\x00"
    one_time = hashed is not None and is_one_time(hashed)
    if hashed is not None and one_time:
        hashed = hashed[len(ONE_TIME) :]
    try:
        if hashed is None:
            _hasher().verify(candidate, _dummy_hash())
            return False, None
        ok, updated = _hasher().verify_and_update(candidate, hashed)
    except UnknownHashError:
        _hasher().verify(candidate, _dummy_hash())
        return False, None
    return ok and candidate == password, updated if ok and not one_time else None


class LoginLimiter:
    """Failed logins, limited three ways; `retry_after` gives the longest wait of the three.

    - per (client IP, username) and per client IP: a sliding window, past `per_user` (or
      `per_ip`) failures within `window_s` logins are refused until the oldest one leaves it;
    - per account (username, from any address): past `per_account` failures each further one
      doubles the wait before the account's next login is evaluated (`backoff_s`, 2x, 4x...,
      at most `max_backoff_s`). The failure count decays (halves every `half_life_s` without
      failures), and refused attempts are not counted, so an attacker spreading guesses over
      many addresses gets about one evaluated guess per `max_backoff_s` and the owner of the
      account is never locked out for longer than that: a slowdown, not a lockout to hold.

    In memory: a restart forgets, which bounds lockouts too."""

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_ip: int = 30,
        window_s: float = 300.0,
        per_account: int = 10,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        half_life_s: float = 900.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user, self.per_ip, self.window_s = per_user, per_ip, window_s
        self.per_account, self.backoff_s, self.max_backoff_s = per_account, backoff_s, max_backoff_s
        self.half_life_s = half_life_s
        self._max_keys, self._clock = max_keys, clock
        self._fails: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        #: casefolded username -> (decayed failure count, time of the last failure)
        self._accounts: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _keys(ip: str, username: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return (ip, "u:" + username.casefold()), (ip, "*")

    def _account(self, username: str, now: float) -> tuple[float, float]:
        count, last = self._accounts.get(username.casefold(), (0.0, now))
        return count * math.pow(0.5, (now - last) / self.half_life_s), last

    def account_wait(self, username: str) -> float:
        """Seconds until the account's next login may be evaluated (0: now)."""
        now = self._clock()
        with self._lock:
            count, last = self._account(username, now)
        excess = count - self.per_account
        if excess < 0:
            return 0.0
        delay = min(self.max_backoff_s, self.backoff_s * math.pow(2.0, min(excess, 64.0)))
        return max(0.0, last + delay - now)

    def retry_after(self, ip: str, username: str) -> int | None:
        """Seconds until a login may be tried again, None when it may now."""
        now = self._clock()
        wait = self.account_wait(username) if username else 0.0
        with self._lock:
            for key, limit in zip(self._keys(ip, username), (self.per_user, self.per_ip),
                                  strict=True):  # fmt: skip
                q = self._fails.get(key)
                if q is None:
                    continue
                while q and q[0] <= now - self.window_s:
                    q.popleft()
                if len(q) >= limit:
                    wait = max(wait, q[-limit] + self.window_s - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, ip: str, username: str) -> None:
        now = self._clock()
        with self._lock:
            for key in self._keys(ip, username):
                self._fails.setdefault(key, deque()).append(now)
                self._fails.move_to_end(key)
            while len(self._fails) > self._max_keys:
                self._fails.popitem(last=False)
            if username:
                count, _ = self._account(username, now)
                self._accounts[username.casefold()] = (count + 1.0, now)
                self._accounts.move_to_end(username.casefold())
                while len(self._accounts) > self._max_keys:
                    self._accounts.popitem(last=False)

    def succeeded(self, ip: str, username: str) -> None:
        with self._lock:
            self._fails.pop(self._keys(ip, username)[0], None)
            self._accounts.pop(username.casefold(), None)


class RevokedSessions:
    """Session ids logged out before their cookie expired (bounded, pruned as it goes)."""

    def __init__(self, max_age_s: float, max_items: int = 100_000) -> None:
        self._until: OrderedDict[str, float] = OrderedDict()
        self._max_age_s, self._max_items = max_age_s, max_items
        self._lock = threading.Lock()

    def revoke(self, sid: str) -> None:
        now = time.time()
        with self._lock:
            self._until[sid] = now + self._max_age_s
            while self._until and (
                len(self._until) > self._max_items or next(iter(self._until.values())) < now
            ):
                self._until.popitem(last=False)

    def is_revoked(self, sid: str) -> bool:
        with self._lock:
            until = self._until.get(sid)
        return until is not None and until > time.time()


@dataclass(frozen=True)
class Principal:
    """Who is asking: from a session cookie (CSRF applies) or an API token (it does not)."""

    username: str
    role: str
    via: Literal["session", "token"]
    csrf: str | None = None


def has_role(role: str, min_role: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(min_role)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, else "/": no open redirect through ?next=."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 0x21 or c == "\\" for c in target):
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def _session_principal(request: Request, state: WebState) -> Principal | None:
    s: dict[str, Any] = request.session
    name, sid, iat, csrf = s.get("user"), s.get("sid"), s.get("iat"), s.get("csrf")
    if not (isinstance(name, str) and isinstance(sid, str) and isinstance(csrf, str)):
        return None
    now = time.time()
    if not isinstance(iat, int | float) or not (now - state.session_max_age_s < iat <= now + 60):
        return None
    if state.revoked.is_revoked(sid):
        return None
    user = state.model.store.get_user(name)
    if user is None or user.disabled:
        return None
    return Principal(user.username, user.role, "session", csrf)


def authenticate(request: Request) -> Principal | None:
    """The API takes `Authorization: Bearer <token>` (a bad one is refused, not ignored);
    pages and the API both take the session cookie."""
    state = web_state(request)
    header = request.headers.get("authorization")
    if header is not None and is_api(request):
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise WebError(401, "unauthenticated", "only 'Authorization: Bearer <token>' is "
                           "accepted", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        user = state.model.store.user_by_token(token)
        if user is None:
            raise WebError(401, "unauthenticated", "invalid or revoked API token",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return Principal(user.username, user.role, "token")
    return _session_principal(request, state)


def current_user(min_role: str = "viewer") -> Callable[..., Principal]:
    """A dependency: the principal, or 401 (pages turn it into a login redirect) / 403."""
    if min_role not in ROLES:
        raise ValueError(f"unknown role {min_role!r}")

    def dependency(
        request: Request,
        _token: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        who = authenticate(request)
        if who is None:
            raise WebError(401, "unauthenticated", "log in, or send an API token",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if not has_role(who.role, min_role):
            raise WebError(403, "forbidden", f"this needs the {min_role} role; you are "
                           f"{who.username} ({who.role})")  # fmt: skip
        return who

    return dependency


def check_csrf(who: Principal, token: str | None) -> None:
    """Session-authenticated changes must echo the session's CSRF token (a form field or the
    X-CSRF-Token header); token-authenticated API calls carry no ambient credentials."""
    if who.via == "token":
        return
    if not token or not who.csrf or not hmac.compare_digest(token.encode(), who.csrf.encode()):
        raise WebError(403, "csrf", "missing or invalid CSRF token: reload the page and retry")


def login_csrf(request: Request) -> str:
    """The CSRF token of the login form, kept in the (anonymous) session."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def start_session(request: Request, user: UserRecord) -> None:
    """A fresh session (new id, new CSRF token) for a successful login."""
    request.session.clear()
    request.session.update(
        user=user.username,
        role=user.role,
        csrf=secrets.token_urlsafe(32),
        sid=secrets.token_urlsafe(16),
        iat=int(time.time()),
    )


def end_session(request: Request) -> None:
    sid = request.session.get("sid")
    if isinstance(sid, str):
        web_state(request).revoked.revoke(sid)
    request.session.clear()
