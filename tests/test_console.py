"""What the body commands print: their own lines and nothing of NVIDIA Warp's (anny skins with Warp,
which by default prints a 6-line banner, a CUDA-driver warning on CPU machines and "Module ... took N ms"
per kernel load). Each command runs as a user would, in its own process, on a real clip."""
from __future__ import annotations

import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.dataset as ds
from conftest import EVAL, REPO
from gltf_check import check_strict_rules, khronos_report

from stages.io.decode import video_id_for

CLIP = EVAL / "videos" / "mmtracking_demo.mp4"  # 8 frames, 4 tracks, bodies fitted on 20 person-frames


def _posepipe(*args: str) -> tuple[str, str]:
    """(stdout, stderr) of `python -m pipeline.cli ARGS`, which must succeed."""
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=900, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout, run.stderr


def _warp_lines(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if "Warp" in line or "CUDA driver" in line or " took " in line]


def test_mesh_run_export_and_render_print_no_warp_lines(tmp_path):
    out = tmp_path / "out"
    # --verbose passes the Ray workers' output on: the mesh actors load anny in their own processes.
    stdout, stderr = _posepipe("run", str(CLIP), "--out", str(out), "--mesh", "--no-progress", "--verbose")
    assert _warp_lines(stdout + stderr) == [], stdout + stderr
    assert "1/1 videos ok" in stdout

    vid = video_id_for(CLIP)
    bodies = ds.dataset(out / "bodies", partitioning="hive").to_table(columns=["track_id"])
    counts = pc.value_counts(bodies["track_id"]).to_pylist()
    track = max(counts, key=lambda c: c["counts"])["values"]
    glb = tmp_path / "track.glb"
    stdout, stderr = _posepipe("export", str(out), "--video", vid, "--track", str(track), "--format", "glb",
                               "-o", str(glb))
    assert stderr == "" and len(stdout.splitlines()) == 1 and stdout.startswith(f"wrote {glb}: track {track}"), \
        stdout + stderr

    stdout, stderr = _posepipe("render", str(out), "--video", vid, "--png", "-o", str(tmp_path / "sheet.png"))
    assert stderr == "" and stdout.splitlines() == [f"wrote {tmp_path / 'sheet.png'}"], stdout + stderr

    # The exported file of a real run, to a strict reader (tests/test_export.py does a synthetic track).
    check_strict_rules(glb)
    report = khronos_report(glb)
    if report is not None:
        assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["codes"]
