"""Occlusion order of the dense render on real data (issue 22): where two crowd_synth people overlap, the
ground truth's visible masks say who is in front; bodies fitted to the two people's keypoints, on the floor
the clip's people give, and rendered together must give the front one those pixels. The same bodies with the
front one pushed back (a wrong depth order) must lose them, so the check can tell the two apart.

The overlap needs each person's whole extent, which crowd_synth gives only as a box: it is rebuilt from the
person's visible masks (stages/eval/dense_score.whole_references), checked here against those masks.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from stages.body.anny_body import AnnyBody
from stages.body.fit import BodyFitter
from stages.body.ground import estimate_ground
from stages.body.params import FitParams
from stages.dense.raster import GlRaster
from stages.eval.dense_masks import moved_mask
from stages.eval.dense_score import Bodies, DenseScorer, Scene, labelled_keypoints, whole_references

SIZE = (960, 540)
# p10 frame 17: track 10 stands in front of track 7, its feet 55 px (35% of its height) lower in the image, a
# depth order no fit can be unsure of; their whole extents overlap in ~2500 px, nearly all of it 10's.
FRAME, FRONT, BACK = 17, 10, 7


@pytest.fixture(scope="module")
def model():
    return AnnyBody()


@pytest.fixture(scope="module")
def gl():
    raster = GlRaster()
    yield raster
    raster.release()


def test_whole_extent_from_visible_masks(eval_dir):
    """A crowd_synth person is a rigid cut-out: its whole extent, moved into any frame by the whole-body box,
    holds every pixel the person shows there, and is that mask where the person shows whole (the union of
    frames sampled at other scales is ~1 px fat). Moved by a box 10 px off, it is not."""
    anns = json.loads((eval_dir / "crowd_synth" / "p10" / "gt_coco.json").read_text())["annotations"]
    some = [a for a in anns if a["frame_index"] % 5 == 0]
    whole = whole_references([a for a in anns if a["track_id"] in (FRONT, BACK)])
    assert sorted(whole) == [BACK, FRONT]
    for a in some:
        if a["track_id"] not in whole:
            continue
        seen = mask_utils.decode(a["segmentation"]).astype(bool)
        moved = moved_mask(*whole[a["track_id"]], a["bbox_full"], SIZE)
        assert (seen & moved).sum() >= 0.995 * seen.sum()
        if a["visible_fraction"] >= 1.0:
            assert (seen & moved).sum() / (seen | moved).sum() > 0.9
        off = moved_mask(*whole[a["track_id"]], np.add(a["bbox_full"], [10, 0, 0, 0]), SIZE)
        assert (seen & off).sum() < 0.95 * seen.sum()


def test_front_person_owns_the_overlap(eval_dir, model, gl, one_thread):
    """Bodies fitted to the pair's ground-truth keypoints on the clip's floor: the front one holds >= 90% of the
    overlap pixels either body holds, and most of the overlap; pushed back, it loses them."""
    anns = json.loads((eval_dir / "crowd_synth" / "p10" / "gt_coco.json").read_text())["annotations"]
    pair = [next(a for a in anns if a["frame_index"] == FRAME and a["track_id"] == t) for t in (FRONT, BACK)]
    params = FitParams()
    # The floor from every person of the clip, as the mesh stage estimates it from a video's rows.
    ground = estimate_ground(labelled_keypoints(anns), np.array([a["track_id"] for a in anns]),
                             np.array([a["frame_index"] for a in anns]), SIZE, focal_factor=params.focal_factor)
    assert ground.ok, ground.reason
    fitter = BodyFitter(model, params)
    tracks = np.array([FRONT, BACK], np.int64)
    kp = labelled_keypoints(pair)
    fit = fitter.fit("p10", kp.astype(np.float32), tracks, np.full(2, FRAME, np.int64), SIZE, ground)
    assert list(fit.rows) == [0, 1]
    shapes = fitter.shapes("p10")
    bodies = Bodies(tracks, np.stack([shapes[int(t)] for t in tracks]), fit.bone_rotvec, fit.root_rotvec,
                    fit.translation, fit.focal, np.ones(2, bool))
    scene = Scene(FRAME, SIZE, [a["segmentation"] for a in pair],
                  np.array([a["keypoints"] for a in pair], np.float64).reshape(2, 17, 3),
                  np.array([a["area"] for a in pair], np.float64), np.array([a["bbox_full"][3] for a in pair]),
                  np.array([a["visible_fraction"] for a in pair]), tracks,
                  np.array([a["bbox_full"] for a in pair], np.float64), kp, np.zeros((2, 4)), tracks, bodies,
                  pairs=[(0, 0), (1, 1)])
    whole = whole_references([a for a in anns if a["track_id"] in (FRONT, BACK)])

    def overlap(scene: Scene) -> dict:
        scorer = DenseScorer(model, None, gl, whole)
        scorer.add(scene)
        (rec,) = scorer.tally.pairs
        return rec

    rec = overlap(scene)
    assert (rec["front"], rec["back"]) == (FRONT, BACK)  # the ground truth's masks agree with the feet
    assert rec["pixels"] >= 2000 and rec["agreement"] > 0.9
    assert rec["front_won"] >= 0.9 * (rec["front_won"] + rec["back_won"]), rec
    assert rec["front_won"] >= 0.5 * rec["pixels"], rec  # held by the front body, not merely by nobody else

    # The control: the front body 1.5x as far along its own ray (same place in the image, smaller, now behind).
    pushed = replace(bodies, translation=bodies.translation * np.array([[1.5], [1.0]]))
    rec = overlap(replace(scene, bodies=pushed))
    assert rec["back_won"] > rec["front_won"], rec
