"""Tables that fit the terminal: when the columns do not fit its width, the least important ones are
dropped (and said so in the caption) rather than any number or header being cut to ``…``. The full
tables are in the files each command writes."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

#: what rich spends per column on borders and padding, and once per table
_PER_COLUMN, _PER_TABLE = 3, 1


@dataclass(frozen=True)
class Column:
    header: str
    #: 0 is never dropped; higher numbers go first when the terminal is narrow
    drop_order: int = 0
    justify: str = "right"
    #: free text (flags, problems) that may wrap onto further lines instead of widening the table
    wraps: bool = False


def fitted_table(columns: list[Column], rows: list[list[str]], width: int, **table_kw) -> Table:
    """A rich Table of ``rows`` holding the columns that fit in ``width``; dropped columns are named
    in the caption."""
    def need(i: int) -> int:
        cells = [_visible(r[i]) for r in rows]
        natural = max([len(columns[i].header), *map(len, cells)])
        return min(natural, max(12, len(columns[i].header))) if columns[i].wraps else natural

    keep = list(range(len(columns)))
    for i in sorted(keep, key=lambda i: -columns[i].drop_order):
        if sum(need(k) + _PER_COLUMN for k in keep) + _PER_TABLE <= width or columns[i].drop_order == 0:
            break
        keep.remove(i)
    table = Table(**table_kw)
    for k in keep:
        c = columns[k]
        table.add_column(c.header, justify=c.justify, no_wrap=not c.wraps, min_width=need(k),
                         overflow="fold")
    for r in rows:
        table.add_row(*(r[k] for k in keep))
    dropped = [columns[i].header for i in range(len(columns)) if i not in keep and columns[i].header]
    if dropped:
        note = f"not shown at {width} columns: {', '.join(dropped)}"
        table.caption = f"{table.caption}; {note}" if table.caption else note
    return table


def _visible(cell: str) -> str:
    """A cell without rich markup ([bold]...[/])."""
    from rich.text import Text

    return Text.from_markup(cell).plain
