"""Alembic environment, driven only programmatically by `agentctl.collectors.store.engine`.

The caller hands over an open connection (and the models' metadata, for autogenerate) via
`config.attributes`, so no alembic.ini and no URL (with its password) ever reach this file.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

config = context.config
connection = config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "agentctl migrations run only through agentctl.collectors.store "
        "(config.attributes['connection'] must be an open SQLAlchemy Connection)"
    )


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Autogenerate writes a TypeDecorator as its plain SQL type, keeping revisions frozen."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata"),
    # SQLite cannot ALTER most things; batch mode copies the table instead. Harmless elsewhere.
    render_as_batch=True,
    compare_type=True,
    render_item=render_item,
)

with context.begin_transaction():
    context.run_migrations()
