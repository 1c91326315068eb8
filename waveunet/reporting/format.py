"""Numbers, tables and machines as text: the one formatter and the one markdown table writer.

The written reports (an evaluation's report.md and terminal summary, the comparison's
results.md, saturation.md), their figures' labels and the benchmark tables write their numbers
through :func:`number` and their tables through :func:`table`, so a value reads the same in all
of them ("-" where there is none) and a table has one layout. Log and status lines elsewhere
(a dataset's duration, a memory size, a separated song's clip report) format their own units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def number(value: float | int | None, digits: int = 2, *, kind: str = "f", scale: float = 1.0,
           sign: bool = False, grouping: bool = False, tiny: bool = False) -> str:
    """``value * scale`` as text; ``"-"`` for None, ``"nan"`` / ``"inf"`` for non-finite values.

    Args:
        digits: digits after the point (``kind="f"`` or ``"e"``) or significant digits
            (``kind="g"``).
        kind: ``"f"`` fixed point, ``"g"`` general, ``"e"`` exponent, ``"%"`` percent.
        sign: always write the sign (``+0.64``), for differences.
        grouping: thousands separators (``10,265,550``).
        tiny: a fixed-point value below 1e-3 in magnitude (but not 0) in exponent form with
            two digits, so that small fractions do not read as 0.00.
    """
    if value is None:
        return "-"
    v = float(value) * scale
    if not math.isfinite(v):
        return str(v)
    if tiny and kind == "f" and v != 0 and abs(v) < 1e-3:
        return f"{v:.2e}"
    return format(v, f"{'+' if sign else ''}{',' if grouping else ''}.{digits}{kind}")


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 track"``, ``"2 tracks"``: a count and its noun (``many``: an irregular plural)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def seed_spread(entry: dict[str, Any], digits: int = 2, scale: float = 1.0) -> str:
    """A value over seeds: ``mean ± SD [min, max]``, the mean alone for one seed, "-" for none.

    ``entry`` is what :func:`waveunet.experiments.compare.spread` returns.
    """
    if entry["mean"] is None:
        return "-"
    mean = number(entry["mean"], digits, scale=scale)
    if entry["n"] == 1:
        return mean
    return (f"{mean} ± {number(entry['std'], digits, scale=scale)} "
            f"[{number(entry['min'], digits, scale=scale)}, "
            f"{number(entry['max'], digits, scale=scale)}]")


def machine_text(machine: dict[str, Any]) -> str:
    """A machine stamp (:func:`waveunet.experiments.base.machine_stamp`) as one phrase."""
    gpu = f"GPU {machine['cuda']}" if machine.get("cuda") else "no GPU"
    return (f"{machine['platform']}, {plural(machine['cpu_count'], 'CPU core')} "
            f"({plural(machine['torch_threads'], 'torch thread')}), {gpu}, "
            f"torch {machine['torch']}")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table as lines: the header, the rule, one line per row (cells as ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
