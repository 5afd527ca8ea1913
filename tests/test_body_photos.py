"""Bodies fitted to real photos' 2D keypoints (COCO val2017 people, top-down mode) reproject onto
the ground truth nearly as well as the keypoints they were fitted to: a fit that drifted, mirrored
a person or collapsed limbs to rest would lose PCK against the labels, not only against its input."""
from __future__ import annotations

import numpy as np

from pipeline.config import load_config, mode_file
from pipeline.evaluate_body import evaluate_body

# The acceptance bound of the 3D body issue: PCK@0.1 of the reprojected bodies within 5 points of
# the 2D keypoints', counting the same keypoints.
MAX_PCK_LOSS = 0.05


def test_fitted_bodies_reproject_as_well_as_their_2d_keypoints(eval_dir, one_thread):
    from stages.body.anny_body import AnnyBody

    coco = eval_dir / "coco"
    out = evaluate_body(load_config(mode_file("topdown")), coco / "test_coco.json", coco, AnnyBody())
    pose, body = out["pose_2d"], out["body"]
    print(f"\nPCK@0.1: 2D {pose['pck']:.3f}, fitted bodies {body['pck']:.3f} (same keypoints), "
          f"{body['pck_all']:.3f} (all 17); fitted {out['fitted']}, skipped {out['skipped']}, "
          f"median reprojection {out['median_reproj_px']:.1f} px")
    assert out["fitted"] > 0 and out["fitted"] + out["skipped"] == pose["predictions"]
    assert np.isfinite(out["median_reproj_px"])
    assert abs(body["pck"] - pose["pck"]) <= MAX_PCK_LOSS, (body["pck"], pose["pck"])
