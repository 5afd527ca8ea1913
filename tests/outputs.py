"""Reading a run's output back for tests: people rows in a canonical order, and equality of two runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from pipeline.config import load_config, mode_file

ROW_KEY = ["video_id", "frame_index", "person_index"]
COMPARED = ["track_id", "kp_x", "kp_y", "kp_score", "bbox", "score", "mode"]


def config_with(tmp: Path, mode: str, toml: str = ""):
    """The mode's config overlaid with extra TOML text."""
    extra = tmp / f"extra_{abs(hash(toml))}.toml"
    extra.write_text(toml)
    return load_config(mode_file(mode), extra)


def people(out: Path, video_id: str | None = None) -> dict[str, list]:
    """The people table (of one video, or all) as columns, sorted by video, frame, person."""
    data = ds.dataset(Path(out) / "people", partitioning="hive")
    table = data.to_table(filter=ds.field("video_id") == video_id if video_id else None)
    return table.sort_by([(k, "ascending") for k in ROW_KEY]).to_pydict()


def assert_same_people(a: dict, b: dict, same_ids: bool = True) -> None:
    """Same rows, same keypoints (NaN where NaN), same boxes and scores."""
    assert len(a["frame_index"]) == len(b["frame_index"]) > 0
    for key in ROW_KEY[1:] + COMPARED:
        if key == "track_id" and not same_ids:
            continue
        x, y = a[key], b[key]
        if key in ("mode", "video_id"):
            assert x == y, key
        else:
            np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64), err_msg=key)
