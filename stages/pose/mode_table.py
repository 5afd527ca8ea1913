"""The pose modes, in one table: which branches a mode runs, which networks it loads, how its rows
are stamped.

    mode      branches run per batch             rows stamped   networks loaded
    bottomup  bottom-up                          bottomup       bottomup
    topdown   detector + keypoint model          topdown        detector (+ fine detector), keypoint model
    hybrid    both, merged (modes.merge_hybrid)  hybrid         all
    auto      one of bottomup / topdown per      that branch    all (either branch may run next)
              batch, picked by modes.AutoSwitch

A batch is always run as a *branch mode* (bottomup, topdown or hybrid): `auto` only decides which
one. The branch mode is the `mode` column of its people rows; the run's mode (auto included) is the
videos table's. The model label (the files that produced a row) is chosen with the branch mode and
travels on the batch from the pose actor to the sink (`PoseBatch.model`).

Plain data, no imports beyond the standard library: the config checks its `[run] mode` against it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    bottomup: bool  # runs the bottom-up network (grouped by PAFs)
    topdown: bool  # runs the detector and the keypoint model on its crops
    switches: bool = False  # auto: each batch runs one branch, chosen from the people counts so far

    @property
    def roles(self) -> tuple[str, ...]:
        """The networks a run in this mode loads (pipeline/models.py resolves one file per role).
        fine_detector is loaded only when the detector config asks for its second pass."""
        return (("bottomup",) if self.bottomup else ()) + (
            ("detector", "fine_detector", "topdown") if self.topdown else ())

    @property
    def branch(self) -> bool:
        """Whether a batch can be run in this mode as it is (every mode but auto)."""
        return not self.switches


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("bottomup", bottomup=True, topdown=False),
    Mode("topdown", bottomup=False, topdown=True),
    Mode("hybrid", bottomup=True, topdown=True),
    Mode("auto", bottomup=True, topdown=True, switches=True),
)}


def branch_mode(name: str) -> Mode:
    """The Mode a batch runs in; `auto` is not one (its switch picks bottomup or topdown first)."""
    mode = MODES[name]
    if not mode.branch:
        raise ValueError(f"a batch runs in bottomup, topdown or hybrid mode, not {name!r}")
    return mode
