"""`posepipe` command line: run videos through the Ray graph (here or on a cluster), follow and
summarise a job's output, draw it, export it, refit its bodies or render them densely, or score it
against ground truth.

Exit status: 0 every video ok; 1 some video failed or was truncated (see OUT/videos), or
`status` of an unfinished job; 2 bad usage, inputs, config or weights, or an output (or file)
a command cannot read or write: one line on stderr, no traceback; 130 after Ctrl-C (one line too).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_config, mode_file
from pipeline.inputs import InputError
from pipeline.submit import SubmitError
from stages.body.errors import BodyModelError
from stages.io.errors import OutputError
from stages.io.lock import LockedError
from stages.pose.mode_table import MODES
from stages.weights import WeightsError


def _config(args: argparse.Namespace):
    files = [mode_file(args.mode or "bottomup")] + ([args.config] if args.config else [])
    config = load_config(*files)
    if args.mode and config.run.mode != args.mode:  # --mode wins over a --config file's [run] mode
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, mode=args.mode))
    if getattr(args, "mesh", False) or getattr(args, "body_model", None):
        mesh = config.mesh
        mesh = dataclasses.replace(mesh, enabled=mesh.enabled or args.mesh,
                                   body_model=args.body_model or mesh.body_model,
                                   body_model_path=args.body_model_path or mesh.body_model_path)
        config = dataclasses.replace(config, mesh=mesh)  # a new frozen config, built before the run starts
    if getattr(args, "dense", False):
        config = dataclasses.replace(config, dense=dataclasses.replace(config.dense, enabled=True))
    return config


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.api import run_job
    from pipeline.jobfile import video_line
    from pipeline.say import to_stderr

    rows, out = run_job(_config(args), args.videos, args.out, address=args.address, num_cpus=args.num_cpus,
                        progress=not args.no_progress, verbose=args.verbose, say=to_stderr)
    bad = [r for r in rows if r["status"] != "ok"]
    skipped = sum(1 for r in rows if r.get("skipped"))
    for r in rows:
        print(video_line(r["status"], r["video_id"], r.get("path"), f"frames={r['frames']}",
                         f"people_rows={r['people_rows']}", error=r["error"],
                         note="(done earlier)" if r.get("skipped") else ""))
    print(f"{len(rows) - len(bad)}/{len(rows)} videos ok ({skipped} done earlier); output in {out}")
    return 1 if bad else 0


def _cmd_submit(args: argparse.Namespace) -> int:
    """ray:// (Ray Client): this process drives the graph on the cluster; http(s):// (Ray Jobs API):
    the job runs on the cluster with this project as its working_dir, and this returns once it has
    started (or failed) (pipeline/submit.py)."""
    if not args.address.startswith(("http://", "https://")):
        return _cmd_run(args)
    from pipeline.say import to_stderr
    from pipeline.submit import job_argv, report, runtime_env, submit, wait_started

    argv = job_argv(args.videos, args.out, mode=args.mode, config=args.config, mesh=args.mesh,
                    body_model=args.body_model, body_model_path=args.body_model_path, verbose=args.verbose)
    client, job_id = submit(args.address, argv, runtime_env(args.weights, args.install), args.verbose)
    return report(wait_started(client, job_id, say=to_stderr), args.address, args.out)


def _cmd_status(args: argparse.Namespace) -> int:
    from pipeline.jobfile import status_lines

    try:
        lines, finished = status_lines(args.out)
    except FileNotFoundError as exc:
        print(f"posepipe: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if finished and not any(line.startswith(("failed", "truncated")) for line in lines) else 1


def _cmd_mocap(args: argparse.Namespace) -> int:
    """Refit the tracks of a finished output with whole-track smoothing, on mesh actors."""
    from pipeline.api import start_ray
    from pipeline.mocap import plan, run_mocap
    from pipeline.say import to_stderr
    from stages.io.lock import OutputLock

    config = _config(args)
    try:
        plan(args.out, args.video, args.all)  # a bad OUT or video id, or one with no bodies, fails before Ray
        with OutputLock(args.out):  # it rewrites bodies: no other job may be writing OUT
            start_ray(config, args.address, args.num_cpus, args.verbose, to_stderr)
            rows = run_mocap(config, args.out, args.video, args.track, args.all, progress=not args.no_progress,
                             say=to_stderr)
    except OutputError as exc:
        print(f"posepipe mocap: {exc}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"refit     {r['video_id']}  body_rows={r['body_rows']}  body_tracks={r['body_tracks']}"
              + (f"  body_skipped={r['body_skipped']} ({r['body_skipped_reasons']})" if r["body_skipped"] else ""))
    return 0


def _cmd_dense(args: argparse.Namespace) -> int:
    """Render the fitted bodies of a finished output into its dense table, in this process."""
    import torch
    from tqdm import tqdm

    from pipeline.say import to_stderr
    from pipeline.models import choose_segment_model, segment_note
    from stages.dense.video import DenseRenderer, dense_plan, dense_video
    from stages.io.lock import OutputLock
    from stages.io.sink_fs import read_json
    from stages.io.summary import JOB_FILE

    config = _config(args)
    # nothing to render: one line, before the silhouettes' model is resolved (maybe downloaded) or anny loads
    plan = dense_plan(args.out, args.video, args.redo)
    segment = choose_segment_model(config) if plan.todo else None  # "on" and not installed: one line
    if segment is not None:  # the silhouettes read the input videos again: one gone is one line
        plan = dense_plan(args.out, args.video, args.redo, need_video=True)
    torch.set_num_threads(1)  # posing is small tensor work beside the raster's threads (stages/dense/bodies.py)
    # The silhouettes read the frames at the run's decode size, as the graph's dense stage did (job.json).
    run_decode = ((read_json(args.out, JOB_FILE) or {}).get("config") or {}).get("decode") or {}
    max_side = run_decode.get("max_side", config.decode.max_side)
    with OutputLock(args.out) as lock:
        if plan.todo:
            if note := segment_note(config, segment):
                to_stderr(note)
            to_stderr("loading the body model")  # seconds before the first bar (pipeline/say.py)
        renderer = DenseRenderer.load(config.dense.raster, config.dense.grow_cm / 100, segment,
                                      config.dense.threads) if plan.todo else None
        try:
            for vid, person_frames in plan.todo.items():
                with tqdm(total=person_frames, desc=vid[:32], unit="person-frame", disable=args.no_progress) as bar:
                    def step(rows: int, bar=bar) -> None:
                        bar.update(rows)
                        lock.refresh()  # the heartbeat that tells a job on another host this one is alive
                    row = dense_video(args.out, vid, renderer, step, max_side)
                print(f"dense     {vid}  dense_rows={row['dense_rows']}  masks={row['dense_masks']}")
        finally:
            if renderer is not None:
                renderer.release()
    for vid in plan.done:
        print(f"dense     {vid}  (done earlier; --redo renders it again)")
    for vid in plan.bare:
        print(f"no bodies {vid}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from stages.io.summary import print_summary, summary, summary_json

    rows = summary(args.out)
    if args.json:
        print(summary_json(rows))
    else:
        print_summary(rows, args.out)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _frames_arg(text: str | None) -> tuple[int | None, int | None] | None:
    """--frames A:B (either side may be empty) -> (A, B); B is exclusive, as in Python slices."""
    if text is None:
        return None
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return (int(start) if start else None, int(stop) if stop else None)
    except ValueError:
        raise OutputError(f"--frames {text!r}: expected A:B (frame indices, B exclusive; A: or :B for open ends)") \
            from None


def _cmd_render(args: argparse.Namespace) -> int:
    from stages.io.render import contact_sheet, render

    frames = _frames_arg(args.frames)
    # A video cannot be written to a .png: the name says what is wanted, so it gets the contact sheet.
    implied = not args.png and args.output.lower().endswith(".png")
    if args.png or implied:
        contact_sheet(args.out, args.video, args.output, frames=frames, boxes=args.boxes, dense=args.dense)
        print(f"wrote {args.output}" + (" (a contact sheet: the name ends in .png)" if implied else ""))
        return 0
    counts = render(args.out, args.video, args.output, frames=frames, boxes=args.boxes, dense=args.dense)
    print(f"wrote {args.output}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """The people of OUT as COCO results / CSV, or one fitted track as BVH / GLB (animation) / OBJ (a frame's mesh)."""
    if args.format in ("coco", "csv"):
        from stages.io.export_table import export_coco, export_csv

        n = (export_coco if args.format == "coco" else export_csv)(args.out, args.output, args.video)
        print(f"wrote {args.output}: {n} people rows")
        return 0
    if args.video is None or args.track is None:
        raise OutputError(f"--format {args.format} exports one track: give --video ID and --track ID")
    from stages.io.output import check_file_target

    check_file_target(args.output)  # before the track is read and the body model loaded (seconds)
    from stages.body.export import write_bvh, write_obj
    from stages.body.export_gltf import write_glb
    from stages.body.load import load_body_model
    from stages.io.read_bodies import read_track

    try:
        motion = read_track(args.out, args.video, args.track)
        model = load_body_model(motion.body_model, args.body_model_path or "")
        if args.format == "bvh":
            write_bvh(model, motion, args.output)
        elif args.format == "glb":
            write_glb(model, motion, args.output)
        else:
            frame = int(motion.frame_index[0]) if args.frame is None else args.frame
            write_obj(model, motion, frame, args.output)
    except ValueError as exc:  # a track the writers cannot export (no rows, a frame not in it)
        print(f"posepipe export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: track {args.track} of {args.video}, {len(motion.frame_index)} fitted frames "
          f"({int(motion.frame_index[0])}..{int(motion.frame_index[-1])})")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pipeline.evaluate import decoder_lines, evaluate

    config, gt, images = _config(args), Path(args.gt), Path(args.images or Path(args.gt).parent)
    report = evaluate(config, gt, images)
    print("\n".join([*report.lines(), *decoder_lines(config, gt, images)]))
    return 0


def _cmd_eval_track(args: argparse.Namespace) -> int:
    from pipeline.evaluate import mot_rows_from_output
    from stages.eval.mot import clear_mot, load_mot

    if (args.hyp is None) == (args.out is None):
        print("posepipe eval-track: give exactly one of --hyp or --out", file=sys.stderr)
        return 2
    gt = load_mot(args.gt)  # first: a wrong --gt path is the likelier mistake, and the cheaper read
    hyp = load_mot(args.hyp) if args.hyp else mot_rows_from_output(Path(args.out), args.video)
    m = clear_mot(gt, hyp, iou_threshold=args.iou)
    print(f"MOTA {m['MOTA']:.3f}  IDF1 {m['IDF1']:.3f}  ID switches {int(m['IDs'])}  "
          f"recall {m['Rcll']:.3f}  precision {m['Prcn']:.3f}  FP {int(m['FP'])}  FN {int(m['FN'])}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong and where to look), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    about, _, exits = __doc__.partition("\n\n")
    p = _Parser(prog="posepipe", description=" ".join(about.split()), epilog=" ".join(exits.split()))
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML file overriding configs/default.toml and the mode preset")
    common.add_argument("--mode", default=None, choices=list(MODES),
                        help="pose mode: loads configs/MODE.toml and wins over a --config file's [run] mode "
                             "(default: the --config file's, else bottomup)")

    run_args = argparse.ArgumentParser(add_help=False, parents=[common])
    run_args.add_argument("videos", nargs="+",
                          help="video files, folders (every video under them, recursively), globs "
                               "('clips/**/*.mp4') or lists of paths (@list.txt or a .txt file)")
    run_args.add_argument("--out", required=True, help="output folder or pyarrow.fs URI (s3://bucket/prefix, ...)")
    run_args.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    run_args.add_argument("--no-progress", action="store_true", help="no progress bars")
    run_args.add_argument("--verbose", action="store_true", help="show Ray worker logs")
    run_args.add_argument("--mesh", action="store_true", help="fit a 3D body to every tracked person ([mesh])")
    run_args.add_argument("--dense", action="store_true",
                          help="with --mesh: per-pixel parts, UV, depth and normals of every fitted body ([dense])")
    run_args.add_argument("--body-model", choices=["anny", "smpl"], default=None,
                          help="body model for --mesh (default anny; smpl needs --body-model-path)")
    run_args.add_argument("--body-model-path", default=None, help="folder with the user's SMPL_NEUTRAL.npz")

    run = sub.add_parser("run", parents=[run_args], help="videos -> keypoints in Parquet")
    run.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    run.set_defaults(func=_cmd_run)

    submit = sub.add_parser("submit", parents=[run_args], help="run a batch on a Ray cluster")
    submit.add_argument("--address", required=True,
                        help="ray://HOST:10001 (Ray Client; progress here) or http://HOST:8265 (Ray Jobs API)")
    submit.add_argument("--weights", help="Jobs API: POSEPIPE_WEIGHTS folder on the cluster")
    submit.add_argument("--install", action="store_true",
                        help="Jobs API: pip-install posepipe's dependencies in the job's runtime_env")
    submit.set_defaults(func=_cmd_submit)

    status = sub.add_parser("status", help="per-video progress of a job's output")
    status.add_argument("out", help="the job's output folder or URI")
    status.set_defaults(func=_cmd_status)

    mc = sub.add_parser("mocap", parents=[common],
                        help="refit the tracks of a finished output with whole-track smoothing (offline job)")
    mc.add_argument("out", help="the job's output folder or URI")
    mc.add_argument("--video", default=None, help="only this video id")
    mc.add_argument("--track", type=int, default=None, help="only this track (the other tracks' bodies are kept)")
    mc.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    mc.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    mc.add_argument("--no-progress", action="store_true", help="no progress bar")
    mc.add_argument("--verbose", action="store_true", help="show Ray worker logs")
    mc.add_argument("--body-model", choices=["anny", "smpl"], default=None, help="body model (default anny)")
    mc.add_argument("--body-model-path", default=None, help="folder with the user's SMPL_NEUTRAL.npz")
    mc.add_argument("--all", action="store_true",
                    help="also fit videos that have no bodies yet (run without --mesh): every track from scratch")
    mc.set_defaults(func=_cmd_mocap, mesh=True)

    dn = sub.add_parser("dense", parents=[common],
                        help="per-pixel parts, UV, depth and normals of the fitted bodies of a finished output "
                             "(its dense table; README 'Dense people')")
    dn.add_argument("out", help="the job's output folder or URI (run with --mesh)")
    dn.add_argument("--video", default=None, help="only this video id")
    dn.add_argument("--redo", action="store_true", help="also videos that have a dense table already")
    dn.add_argument("--no-progress", action="store_true", help="no progress bars")
    dn.set_defaults(func=_cmd_dense)

    sm = sub.add_parser("summary", help="per-video status, counts, people per frame, tracks, speed")
    sm.add_argument("out", help="the job's output folder or URI")
    sm.add_argument("--json", action="store_true", help="JSON instead of a table")
    sm.set_defaults(func=_cmd_summary)

    rd = sub.add_parser("render", help="the result drawn over the input video (or --png: a contact sheet)")
    rd.add_argument("out", help="the job's output folder or URI")
    rd.add_argument("--video", required=True, help="video id (see posepipe summary OUT)")
    rd.add_argument("-o", "--output", required=True,
                    help="video file to write (.mp4, .mkv, .mov); a name ending in .png gets the contact sheet")
    rd.add_argument("--frames", default=None, help="A:B, only frames A (inclusive) to B (exclusive)")
    rd.add_argument("--boxes", action="store_true", help="also draw the detector boxes")
    rd.add_argument("--png", action="store_true", help="a PNG contact sheet of a few frames instead of a video")
    rd.add_argument("--dense", nargs="?", const="iuv", choices=["iuv", "parts"], default=None,
                    help="also the dense table (run --mesh --dense, or posepipe dense): iuv (the default) colours "
                         "parts by hue and U, V by saturation and brightness; parts, one colour per body part")
    rd.set_defaults(func=_cmd_render)

    ex = sub.add_parser("export", help="people as COCO results or CSV; a fitted track (--mesh) as BVH, GLB or OBJ")
    ex.add_argument("out", help="the job's output folder or URI")
    ex.add_argument("--video", default=None, help="video id (see posepipe summary OUT); coco/csv: default all")
    ex.add_argument("--track", default=None, type=int, help="bvh/glb/obj: the track id")
    ex.add_argument("--format", required=True, choices=["coco", "csv", "bvh", "glb", "obj"],
                    help="coco: keypoint results JSON for pycocotools (image_id = frame_index + 1 for one video)")
    ex.add_argument("-o", "--output", required=True, help="file to write")
    ex.add_argument("--frame", type=int, default=None, help="obj: the video frame (default the track's first)")
    ex.add_argument("--body-model-path", default=None, help="smpl: the folder the run used")
    ex.set_defaults(func=_cmd_export)

    ev = sub.add_parser("eval", parents=[common], help="COCO keypoint AP/AR and PCK on an image set")
    ev.add_argument("--gt", required=True, help="COCO keypoints json")
    ev.add_argument("--images", help="image folder (default: the json's folder)")
    ev.set_defaults(func=_cmd_eval)

    et = sub.add_parser("eval-track", help="MOTA, IDF1 and ID switches against MOTChallenge ground truth")
    et.add_argument("--gt", required=True, help="MOTChallenge gt.txt (frame, id, x, y, w, h, ...)")
    et.add_argument("--hyp", help="tracker results in MOTChallenge txt")
    et.add_argument("--out", help="a posepipe output folder (its people table is the hypothesis)")
    et.add_argument("--video", help="video id in --out when it holds several")
    et.add_argument("--iou", type=float, default=0.5, help="match IoU (default 0.5)")
    et.set_defaults(func=_cmd_eval_track)
    return p


def main(argv: list[str] | None = None) -> int:
    from pipeline.api import Interrupted  # light: Ray is imported by the commands that need it

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, WeightsError, InputError, BodyModelError, LockedError, OutputError, SubmitError) as exc:
        print(f"posepipe: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"posepipe: {exc}", file=sys.stderr)
        return 130  # the shell's code for a command stopped by Ctrl-C (128 + SIGINT)
    except KeyboardInterrupt:  # Ctrl-C in any other command (submit's upload, render, eval...): no traceback
        print("posepipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
