"""Plain aligned text tables: what `sag eval`, `sag bench`, `sag paired`, `sag bench-ros` and the GPU check print."""

from __future__ import annotations


def format_table(rows: list[dict]) -> str:
    """A plain aligned text table; floats with 3 decimals."""
    cols = list(rows[0])
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])
