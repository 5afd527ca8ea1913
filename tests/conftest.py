"""Shared test fixtures: where the shared weights and evaluation data are.

Tests run against the real files in ../shared (POSEPIPE_WEIGHTS and POSEPIPE_EVAL override the
folders); a missing folder is an error, not a skip, so CI cannot pass without the real data.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path(os.environ.get("POSEPIPE_WEIGHTS", REPO.parent / "shared" / "weights")).resolve()
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval")).resolve()

# Stages resolve model files through POSEPIPE_WEIGHTS; point it at the shared folder for tests. Tests never
# download (subprocesses inherit this): a file that is not there is not installed, the same on every machine.
os.environ["POSEPIPE_WEIGHTS"] = str(WEIGHTS)
os.environ["POSEPIPE_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    assert WEIGHTS.is_dir(), f"weights folder {WEIGHTS} missing: set POSEPIPE_WEIGHTS"
    return WEIGHTS


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    assert EVAL.is_dir(), f"eval folder {EVAL} missing: set POSEPIPE_EVAL"
    return EVAL


@pytest.fixture(scope="session")
def real_out(tmp_path_factory, weights_dir) -> tuple[str, str]:
    """(OUT, video id): a real clip's people and its first frames' bodies (tests/outputs.py: fitted_output),
    shared by the render and dense tests. Tests that change it work on a copy."""
    from outputs import fitted_output

    return fitted_output(str(tmp_path_factory.mktemp("real") / "out"))


@pytest.fixture
def one_thread():
    """The body fit is small batches of small tensors: a second torch thread gains nothing on a shared machine
    (one spin-waiting took a 2-person fit from 3 to 19 s of CPU here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
