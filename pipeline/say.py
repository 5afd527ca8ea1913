"""The lines a command prints on stderr while it starts (issue 21, item 7).

Before the first progress bar a job starts or joins Ray and starts its actors, which load their
models: 10-45 s on a laptop with nothing on the screen, which looks like a hang. So each step says
what it is doing, one short line each, as `git clone` says "Cloning into ...": always (piped too,
so logs and the Ray Jobs API's job logs carry them); `--no-progress` drops only the bars. The Python
API is quiet unless asked (posepipe.run(progress=True)).
"""
from __future__ import annotations

import sys
from collections.abc import Callable

Say = Callable[[str], None]  # what a step calls to tell the user what it is doing


def line(text: str) -> str:
    """How `to_stderr` writes text: `posepipe submit` looks for one of these in a job's logs."""
    return f"posepipe: {text}..."


def to_stderr(text: str) -> None:
    print(line(text), file=sys.stderr, flush=True)


def quiet(text: str) -> None:
    return None


def ray_line(address: str | None) -> str:
    """The first line of a run once its checks have passed: what it does to get a Ray."""
    return f"connecting to Ray at {address}" if address else "starting Ray"


def actors_line(count: int, what: str = "models") -> str:
    return f"loading {what} ({count} actor{'s' if count != 1 else ''})"
