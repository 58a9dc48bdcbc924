"""Bring a keyed `DataTable` to a new list of rows in place.

Clearing and refilling a table on every refresh resets the cursor and the scroll position
under the operator's hands; this changes only the cells that differ, adds and removes rows by
key, reorders, and puts the cursor back on the row (node, GPU, worker) it was on.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

Row = tuple[str, Sequence[Text]]


def cursor_key(table: DataTable[Text]) -> str | None:
    """The key of the row under the cursor, None on an empty table."""
    if table.row_count == 0:
        return None
    key: RowKey = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    return key.value


def _same(a: object, b: Text) -> bool:
    return isinstance(a, Text) and a.plain == b.plain and a.style == b.style and a.spans == b.spans


def sync_rows(table: DataTable[Text], rows: Sequence[Row]) -> None:
    """Make `table` show `rows` (key, cells in column order) in that order, keeping the
    cursor on the same key when that row is still there."""
    keep = cursor_key(table)
    wanted = {key for key, _ in rows}
    for gone in [k for k in table.rows if k.value not in wanted]:
        table.remove_row(gone)
    columns = list(table.columns)
    for key, cells in rows:
        if key not in table.rows:
            table.add_row(*cells, key=key)
            continue
        for column, cell in zip(columns, cells, strict=True):
            if not _same(table.get_cell(key, column), cell):
                table.update_cell(key, column, cell)
    order = {key: i for i, (key, _) in enumerate(rows)}
    if [row.key.value for row in table.ordered_rows] != list(order):
        # sort() hands the key function cells, not row keys: the cell objects stored in the
        # first column are unique per row, so their identity says which row is which
        first = columns[0]
        position = {id(table.get_cell(key, first)): i for key, i in order.items()}
        table.sort(first, key=lambda cell: position[id(cell)])
    if keep is not None and keep in order:
        table.move_cursor(row=table.get_row_index(keep), animate=False)
