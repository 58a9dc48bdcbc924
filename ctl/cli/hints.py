"""What to say when a read command finds the store empty: which store it read, and how to fill
it or point at one that is not (a demo's), instead of an empty table with nothing else."""

from __future__ import annotations

from agentctl.ctl.cli.state import State


def empty_store(st: State, what: str, fill: str) -> None:
    """On stderr (never in --json): `what` is missing from this store; `fill` fills it."""
    from agentctl.ctl.settings import mask_url

    settings = st.settings()
    st.output.info(f"no {what} in {mask_url(settings.effective_database_url())}: {fill}")
    demo_db = settings.state_dir / "demo" / "agentctl.db"
    if demo_db.is_file() and f"sqlite:///{demo_db}" != settings.effective_database_url():
        st.output.copyable(
            [f"export AGENTCTL_DATABASE_URL=sqlite:///{demo_db}"],
            title="a demo's store is here; to read it:",
        )
