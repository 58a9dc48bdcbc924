"""Dashboard users and API tokens: the session-level SQL behind `Store`'s methods."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ApiToken, User
from .records import ROLES, UserRecord


def user_record(u: User) -> UserRecord:
    return UserRecord(
        id=u.id,
        username=u.username,
        role=u.role,
        created_at=u.created_at,
        last_login_at=u.last_login_at,
        disabled=u.disabled,
        password_hash=u.password_hash,
    )


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    return role


def put_user(
    session: Session, username: str, password_hash: str, role: str, now: datetime
) -> tuple[UserRecord, bool]:
    """Create the user, or replace its hash and role; returns (user, created)."""
    check_role(role)
    row = session.scalars(select(User).where(User.username == username)).first()
    created = row is None
    if row is None:
        row = User(username=username, created_at=now, disabled=False)
        session.add(row)
    row.password_hash, row.role = password_hash, role
    session.flush()
    return user_record(row), created


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_by_token(session: Session, token: str, now: datetime) -> UserRecord | None:
    row = session.scalars(
        select(ApiToken).where(ApiToken.token_sha256 == token_digest(token))
    ).first()
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    row.last_used_at = now
    return user_record(user)
