"""`posepipe submit --address http://HEAD:8265`: a job handed to the Ray Jobs API.

The job runs `python -m pipeline.cli run ... --address auto` on the cluster, in a copy of this project
(the runtime_env's working_dir), so a relative path there would name a file inside that copy. Every
local path (the inputs, OUT, --weights, --body-model-path, a --config outside the project) is made
absolute here first, against this shell's folder; URIs are left as they are. They must name files the
cluster's nodes see (shared storage). The job checks them as `run` does, before it starts Ray, and
refuses with one line and exit status 2; `submit` waits until the job has passed those checks (the
"connecting to Ray" line it prints next) or has ended, and says which: a refused job's line and exit
status come back to the submitter.
"""
from __future__ import annotations

import logging
import shlex
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline.inputs import absolute
from pipeline.say import Say, line, quiet, ray_line

REPO = Path(__file__).resolve().parents[1]
EXCLUDES = [".git", ".venv", "benchmarks", "tests", "*.parquet", "*.mp4"]  # not needed to run a job
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(ValueError):
    """The Jobs API could not be reached or refused the job: one line."""


@dataclass(frozen=True)
class Outcome:
    """Where a submitted job stood when `wait_started` returned."""

    job_id: str
    status: str  # "started" (checks passed, running), "waiting" (Ctrl-C while waiting), or one of ENDED
    exit_code: int | None  # the job's, once it has ended
    last_line: str  # once ended, the last line of its logs: its one-line refusal, or its closing count


def job_argv(videos: list[str], out: str, *, mode: str | None = None, config: str | None = None,
             mesh: bool = False, body_model: str | None = None, body_model_path: str | None = None,
             verbose: bool = False) -> list[str]:
    """The job's `run` command, every local path absolute. A --config inside this project travels with
    it (the working_dir), so it stays relative to the project; one outside it is made absolute."""
    argv = ["python", "-m", "pipeline.cli", "run", *map(absolute, videos), "--out", absolute(out),
            "--address", "auto", "--no-progress"]
    if mode:
        argv += ["--mode", mode]
    if config:
        path = Path(config).absolute()
        argv += ["--config", str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)]
    if mesh:
        argv.append("--mesh")
    if body_model:
        argv += ["--body-model", body_model]
    if body_model_path:
        argv += ["--body-model-path", absolute(body_model_path)]
    return argv + (["--verbose"] if verbose else [])


def runtime_env(weights: str | None = None, install: bool = False) -> dict:
    """This project as the job's working_dir; weights: POSEPIPE_WEIGHTS on the cluster; install: the
    project's pip dependencies, for a cluster image without them."""
    env: dict = {"working_dir": str(REPO), "excludes": EXCLUDES}
    if weights:
        env["env_vars"] = {"POSEPIPE_WEIGHTS": absolute(weights)}
    if install:
        env["pip"] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return env


def submit(address: str, argv: list[str], env: dict, verbose: bool = False):
    """(the Jobs API client, the job id). Ray's lines about packaging the working_dir (INFO, and a WARNING
    that .git is left out) are held back unless verbose: nothing in them is for a user of posepipe."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    logging.disable(logging.NOTSET if verbose else logging.WARNING)
    try:
        client = JobSubmissionClient(address)
        return client, client.submit_job(entrypoint=shlex.join(argv), runtime_env=env)
    except AuthenticationError:
        raise SubmitError(f"the cluster at {address} wants its token: export RAY_AUTH_MODE=token "
                          "RAY_AUTH_TOKEN=... (on the head: ray get-auth-token)") from None
    except ConnectionError as exc:  # nothing answers there
        raise SubmitError(f"no Ray Jobs API at {address}: {str(exc).splitlines()[0]}") from None
    except RuntimeError as exc:  # the client's error for an HTTP error status (a bad runtime_env, say)
        raise SubmitError(f"the Ray Jobs API at {address} refused the job: {str(exc).splitlines()[0]}") from None
    finally:
        logging.disable(logging.NOTSET)


def wait_started(client, job_id: str, poll_s: float = 0.5, say: Say = quiet) -> Outcome:
    """Poll until the job has passed its checks (its logs hold the line `run` prints before it connects to
    Ray) or has ended; Ctrl-C stops the waiting, not the job."""
    started = line(ray_line("auto"))
    say(f"submitted {job_id}; waiting for it to start")
    try:
        while True:
            info = client.get_job_info(job_id)
            status = str(getattr(info.status, "value", info.status))
            logs = client.get_job_logs(job_id)
            if status in ENDED:
                code = info.driver_exit_code
                last = next((s.strip() for s in reversed(logs.splitlines()) if s.strip()), None) \
                    or (info.message or "").strip().split("\n")[0]
                return Outcome(job_id, status, code if code is not None else int(status != "SUCCEEDED"), last)
            if started in logs.splitlines():
                return Outcome(job_id, "started", None, started)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return Outcome(job_id, "waiting", None, "")


def report(outcome: Outcome, address: str, out: str) -> int:
    """Say where the job stands and return submit's exit status: 0 once started, the job's own once it
    has ended (2: refused by its checks; the job's line, on stderr), 130 after Ctrl-C."""
    job, logs = outcome.job_id, f"ray job logs --address {address} --follow {outcome.job_id}"
    if outcome.status == "started":
        print(f"started {job} on {address}; output: {absolute(out)}\n"
              f"follow it: {logs}\nprogress:  posepipe status {absolute(out)}")
        return 0
    if outcome.status == "waiting":
        print(f"posepipe submit: stopped waiting; {job} goes on (follow it: {logs})", file=sys.stderr)
        return 130
    said = outcome.last_line
    for prefix in ("posepipe: ", "posepipe run: "):  # the job's own one-line error, relayed
        said = said.removeprefix(prefix)
    if outcome.exit_code == 0:
        print(f"{job} finished: {said}")
        return 0
    print(f"posepipe submit: {job} {outcome.status.lower()} on the cluster (exit {outcome.exit_code}): {said}",
          file=sys.stderr)
    return outcome.exit_code or 1
