"""Which body model a config names, loaded on a device: the one place that maps the name to a class."""
from __future__ import annotations

from typing import TYPE_CHECKING

from stages.body.errors import BodyModelError

if TYPE_CHECKING:
    from stages.body.rig import BodyModel


def load_body_model(name: str, path: str = "", device: str = "cpu") -> "BodyModel":
    """name: "anny" (built in) or "smpl" (path: the user's folder with SMPL_NEUTRAL.npz)."""
    if name == "anny":
        from stages.body.anny_body import AnnyBody

        return AnnyBody(device=device)
    if name == "smpl":
        from stages.body.smpl_body import SmplBody

        if not path:
            raise BodyModelError("--body-model smpl needs --body-model-path DIR (a folder with SMPL_NEUTRAL.npz)")
        return SmplBody(path, device=device)
    raise BodyModelError(f"unknown body model {name!r} (anny or smpl)")


def check_body_model(name: str, path: str = "") -> None:
    """Fail fast in the driver, before Ray starts: SMPL files are checked, Anny's cache is built once
    per machine (with a message) so actors and later runs load it in seconds."""
    if name == "smpl":
        load_body_model(name, path)
    elif name == "anny":
        from stages.body.anny_body import ensure_cache

        ensure_cache()
