"""The documentation works as written: its runnable blocks run, its relative links lead to files.

A fenced block in README.md or docs/*.md whose fence follows a line `<!-- runnable -->` is run as a
new user runs it after set-up command (a): bash (stopping at the first failing line) or python, in a
folder beside `../shared` as a clone is, with POSEPIPE_WEIGHTS=../shared/weights and the venv's
`posepipe` on PATH; README's blocks first, then docs/ by file name, all in one folder and in order,
since later blocks read what earlier ones wrote (the tour's summary, render, export and Python read
its run). Set-up commands (they make venvs) and cluster blocks (they need a cluster) are not marked.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import pytest
from conftest import EVAL, REPO, WEIGHTS

from stages.io.sink import read_video_rows

RUNNABLE = "<!-- runnable -->"
COMMANDS = {"bash": ["bash", "-e", "-o", "pipefail"], "python": [sys.executable, "-"]}  # the block on stdin
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The clone's own files, so that a block may name configs/, benchmarks/, ... as a user's would.
SOURCES = ("benchmarks", "configs", "docs", "pipeline", "posepipe", "stages", "tests", "pyproject.toml", "README.md")


def runnable_blocks() -> list[tuple[str, str, str]]:
    """(file:line of the marker, language, code) of every block marked runnable, in running order."""
    blocks = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != RUNNABLE:
                continue
            where, fence = f"{doc.relative_to(REPO)}:{i + 1}", lines[i + 1] if i + 1 < len(lines) else ""
            language = fence.removeprefix("```")
            assert fence.startswith("```") and language in COMMANDS, f"{where}: {RUNNABLE} must precede a " \
                f"```{' or ```'.join(COMMANDS)} fence, not {fence!r}"
            end = lines.index("```", i + 2)
            blocks.append((where, language, "\n".join(lines[i + 2:end]) + "\n"))
    return blocks


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, list[tuple[str, str, subprocess.CompletedProcess]]]:
    """Every runnable block run in a fresh clone-like folder: (the folder, (where, language, result) each)."""
    root = tmp_path_factory.mktemp("docs")
    clone, shared = root / "clone", root / "shared"
    clone.mkdir()
    shared.mkdir()
    (shared / "weights").symlink_to(WEIGHTS)  # the folders conftest found (POSEPIPE_WEIGHTS/_EVAL honoured)
    (shared / "eval").symlink_to(EVAL)
    for name in SOURCES:
        (clone / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a run starts its own Ray, as in (a)
    env["POSEPIPE_WEIGHTS"] = "../shared/weights"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout's code
    results = []
    for where, language, code in runnable_blocks():
        done = subprocess.run(COMMANDS[language], input=code, cwd=clone, env=env, capture_output=True, text=True,
                              timeout=600)
        results.append((where, language, done))
    return clone, results


def test_every_runnable_block_runs_in_order(ran):
    _, results = ran
    for where, _, done in results:
        output = done.stdout + done.stderr
        assert done.returncode == 0 and "Traceback" not in output, f"{where}: exit {done.returncode}\n{output[-4000:]}"
    readme = [language for where, language, _ in results if where.startswith("README.md:")]
    assert "bash" in readme and "python" in readme  # the tour is marked: this test is not vacuous


def test_the_tour_writes_what_it_says_and_python_reuses_the_cli_job(ran):
    """The Python example repeats the tour's `posepipe run`: it is skipped, so the API built the CLI's
    config (same hash), and it returns the CLI's row; summary, render and export read that run."""
    clone, results = ran
    out = clone / "out"
    [row] = read_video_rows(str(out))
    assert row["status"] == "ok" and row["frames"] == 8 and row["people_rows"] > 0, row
    assert [v["status"] for v in json.loads((out / "job.json").read_text())["videos"].values()] == ["skipped"]
    python = _first_readme_output(results, "python")
    assert python.splitlines()[0] == f"ok 8 {row['people_rows']}", python
    tour = _first_readme_output(results, "bash")
    assert row["video_id"] in tour and "8 frames" in tour, tour  # run's line names the id; summary counts frames
    with av.open(str(clone / "overlay.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 8
    assert len((clone / "people.csv").read_text().splitlines()) == 1 + row["people_rows"]  # a header, a row a person


def _first_readme_output(results: list[tuple[str, str, subprocess.CompletedProcess]], language: str) -> str:
    return next(done.stdout for where, lang, done in results if where.startswith("README.md:") and lang == language)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target); text may span lines
FENCED = re.compile(r"^```.*?^```", re.S | re.M)  # code, where [x](y) is not a link


def test_every_relative_link_leads_to_a_file():
    checked = 0
    for doc in DOCS:
        for target in LINK.findall(FENCED.sub("", doc.read_text())):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):  # http(s), mailto; anchors in the page
                continue
            assert (doc.parent / target.split("#")[0]).exists(), f"{doc.relative_to(REPO)}: {target} does not exist"
            checked += 1
    assert checked >= len(DOCS)  # README links every page, every page links back


def test_ci_runs_readme_set_up_command_b():
    """.ci/run is README's command (b) verbatim, so what CI proves is what a user types."""
    command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.endswith("python -m pytest -q") and command in (REPO / "README.md").read_text().splitlines()
