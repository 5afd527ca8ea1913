"""posepipe for notebooks and scripts: run a batch of videos, read the tables back.

    import posepipe
    rows = posepipe.run(["clip.mp4"], "out", mode="topdown")     # one summary row per video
    people = posepipe.read("out", "people")                       # a pyarrow Table (pandas=True: a DataFrame)
    dense = posepipe.read("out", "dense", video="clip-1a2b3c4d")   # --dense: DensePerson rows, images decoded

A thin facade over `pipeline/` (the Ray side) and `stages/` (the compute), which keep their places;
`run` is what `posepipe run` does (pipeline/api.py): the same checks, the same lock on OUT, the same
output. It starts a local Ray on first use and leaves it running for the next call (ray.shutdown()
ends it), or joins a cluster with address= (or the RAY_ADDRESS environment variable's).

Model files are found as for the CLI (stages/weights.py): in the folder the POSEPIPE_WEIGHTS
environment variable names, else in ~/.cache/posepipe, else downloaded there from their upstream
address (the converted files have none: they need POSEPIPE_WEIGHTS). One that cannot be found raises
WeightsError, whose message names the file and POSEPIPE_WEIGHTS, before OUT is made or Ray starts.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from stages.weights import WeightsError

__all__ = ["TABLES", "WeightsError", "read", "run"]

TABLES = ("people", "frames", "videos", "bodies", "body_tracks", "dense")


def run(videos: str | list[str], out: str | Path, mode: str = "bottomup", config: str | Path | None = None,
        mesh: bool = False, dense: bool = False, address: str | None = None, num_cpus: int | None = None,
        progress: bool = False) -> list[dict]:
    """Process videos (paths, globs, folders or list files) into OUT; returns the videos-table row of each
    input (status, error, frames, people_rows, tracks, ...), in input order. Errors in the arguments are
    raised as ValueError subclasses with one-line messages, a model file not found as WeightsError and
    another job on OUT as stages.io.lock.LockedError, all before Ray starts. progress: progress bars, and
    a line on stderr for each start-up step (Ray's start, the model loads). dense=True (with mesh=True)
    adds the dense stage (README "Dense people")."""
    from pipeline.api import run_job
    from pipeline.config import load_config, mode_file
    from pipeline.say import quiet, to_stderr

    cfg = load_config(mode_file(mode), *([config] if config else []))
    if mesh:
        cfg = dataclasses.replace(cfg, mesh=dataclasses.replace(cfg.mesh, enabled=True))
    if dense:
        cfg = dataclasses.replace(cfg, dense=dataclasses.replace(cfg.dense, enabled=True))
    rows, _ = run_job(cfg, [videos] if isinstance(videos, (str, Path)) else [str(v) for v in videos], str(out),
                      address=address, num_cpus=num_cpus, progress=progress, say=to_stderr if progress else quiet)
    return rows


def read(out: str | Path, table: str = "people", video: str | None = None, pandas: bool = False):
    """One table of OUT (people, frames, videos, bodies, body_tracks, dense) as a pyarrow Table, rows of one
    video when given; pandas=True returns a pandas DataFrame.

    dense is decoded: a list of stages.io.dense_table.DensePerson, one per person-frame in (video, frame,
    track) order, with the box, plausibility flags and the crops as numpy arrays (mask bool, part uint8,
    u, v float32, depth float32 metres, normal float32[h, w, 3]); pandas=True puts the same in a DataFrame,
    one column per field. Its raw rows (PNG bytes) are for any Parquet reader: OUT/dense/*/*.parquet."""
    import pyarrow.dataset as ds

    from stages.io.sink import read_video_rows, resolve_output
    from stages.io.sink_fs import join

    if table not in TABLES:
        raise ValueError(f"unknown table {table!r} (one of {', '.join(TABLES)})")
    if table == "videos":
        import pyarrow as pa

        from stages.io.sink import VIDEOS_SCHEMA

        rows = [r for r in read_video_rows(str(out)) if video is None or r["video_id"] == video]
        result = pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)
    else:
        fs, root = resolve_output(str(out))
        path = join(root, table)
        if fs.get_file_info(path).type.name != "Directory":
            hint = {"bodies": "run with mesh=True", "body_tracks": "run with mesh=True",
                    "dense": "run with mesh=True, dense=True, or posepipe dense OUT"}.get(table)
            raise ValueError(f"{out}: no {table} table" + (f" ({hint})" if hint else ""))
        data = ds.dataset(path, format="parquet", partitioning="hive", filesystem=fs)
        result = data.to_table(filter=ds.field("video_id") == video if video else None)
    if table == "dense":
        return _decoded(result, pandas)
    return result.to_pandas() if pandas else result


def _decoded(table, pandas: bool):
    """The dense rows of a pyarrow Table decoded (read's docstring): DensePerson list or DataFrame."""
    from stages.io.dense_table import DensePerson, decode_rows

    people = decode_rows(table.sort_by([(k, "ascending") for k in ("video_id", "frame_index", "track_id")]))
    if not pandas:
        return people
    import pandas as pd

    names = [f.name for f in dataclasses.fields(DensePerson)]
    # Not dataclasses.asdict: it deep-copies every array.
    return pd.DataFrame({name: [getattr(p, name) for p in people] for name in names}, columns=names)
