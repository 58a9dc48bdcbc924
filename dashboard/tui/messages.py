"""Messages screens post to the app: the app owns the actions and the operator's role, screens
only say what was asked for."""

from __future__ import annotations

from textual.message import Message


class L1Requested(Message):
    """The operator pressed `l` on a node: run the L1 posture check there."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node
