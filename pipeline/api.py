"""One job from start to end, the same for the CLI and the Python API (posepipe/__init__.py):
inputs and OUT checked, OUT locked, Ray joined or started, the graph run, the lock released.

Everything that can be wrong with the arguments (no input exists, an OUT that is a file or not
writable, another job on OUT, a bad config, missing weights or body model) is raised before Ray
starts, as one-line errors the CLI prints with exit status 2.
"""
from __future__ import annotations

import logging
import os

from pipeline.config import Config
from pipeline.inputs import check_output, expand_inputs
from pipeline.say import Say, quiet, ray_line
from pipeline.sizing import local_cpus
from stages.io.lock import OutputLock


class Interrupted(Exception):
    """Ctrl-C stopped the job (pipeline/runner.py): what finished is published, job.json says
    interrupted, the lock is released, and a re-run resumes with the rest."""

    def __init__(self, done: int, total: int):
        super().__init__(f"interrupted; {done} of {total} videos done, re-run to resume")
        self.done, self.total = done, total


def start_ray(config: Config, address: str | None = None, num_cpus: int | None = None, verbose: bool = False,
              say: Say = quiet) -> None:
    """Join a cluster (address: "auto", "HOST:PORT", "ray://HOST:PORT"; none given: the RAY_ADDRESS
    environment variable's, as ray.init does) or start a Ray of this job's own (even where a `ray start`
    cluster is up on this machine), unless one is already initialised. A Ray kept running (`ray start
    --head`, then `--address auto`) saves each job the start of its own (docs/cluster.md).
    Quiet unless verbose: Ray's own lines are nothing a user of posepipe can act on."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    say(ray_line(address))
    ray.init(address=address or "local", log_to_driver=verbose,
             logging_level=logging.INFO if verbose else logging.ERROR,
             include_dashboard=False if not address else None,
             num_cpus=None if address else num_cpus or local_cpus(config, os.cpu_count() or 1))


def run_job(config: Config, videos: list[str], out: str, *, address: str | None = None, num_cpus: int | None = None,
            progress: bool = True, verbose: bool = False, say: Say = quiet) -> tuple[list[dict], str]:
    """Process the videos into OUT; returns (one videos row per input, in input order; OUT as written).
    say: told each start-up step once the checks have passed (pipeline/say.py)."""
    from pipeline.models import segment_note
    from pipeline.runner import Runner, prepare

    paths = expand_inputs(videos)
    check_output(out)  # creates nothing: a refused job leaves no empty OUT behind
    prepared = prepare(config, out)  # weights resolved, body model checked
    if config.dense.enabled and (note := segment_note(config, prepared.segment)):
        say(note)
    with OutputLock(out) as lock:  # OUT is made here, once everything above has passed
        runner = Runner(prepared, progress=progress, heartbeat=lock.refresh, say=say,
                        before_graph=lambda: start_ray(config, address, num_cpus, verbose, say))
        return runner.run(paths), prepared.out
