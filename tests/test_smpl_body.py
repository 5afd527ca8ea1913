"""SmplBody against smplx's own SMPL forward, on the fake model of smpl_fixture.py.

Our forward kinematics is local-bone with identity rest rotations, so a bone's local rotation is
SMPL's axis-angle for that joint; the one difference is the root: smplx rotates the body about the
pelvis joint and then adds transl, we place the model origin (skeleton.placement), so
transl_smplx = t + R0 J0 - J0.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import smplx
import torch
from smplx.utils import Struct
from smpl_fixture import build_fake_smpl, write_fake_smpl

from stages.body.rig import fitted_parents, flexion_axes
from stages.body.skeleton import (forward_kinematics, placement, posed_frames, rest_folded, rest_relations,
                                  rotvec_to_rotmat, skinned_keypoints)
from stages.body.smpl_body import COCO_SOURCES, BodyModelError, SmplBody

TOL = 1e-4  # metres


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = write_fake_smpl(tmp_path_factory.mktemp("smpl"))
    return path.parent


@pytest.fixture(scope="module")
def body(folder) -> SmplBody:
    return SmplBody(folder)


@pytest.fixture(scope="module")
def reference(folder):
    """smplx's SMPL on the same file, loaded independently of SmplBody."""
    with np.load(folder / "SMPL_NEUTRAL.npz") as data:
        return smplx.SMPL(model_path=str(folder), data_struct=Struct(**dict(data)), num_betas=10)


def _random_pose(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    betas = torch.rand(n, 10, generator=g) * 4 - 2
    pose = torch.randn(n, 24, 3, generator=g) * 0.4
    t = torch.randn(n, 3, generator=g)
    return betas, pose, t


def _smplx_forward(reference, betas, pose, t, rest_joints):
    """smplx's vertices float[B, 6890, 3] and joints float[B, 45, 3] for our (pose, t) placement."""
    r0 = rotvec_to_rotmat(pose[:, 0])
    j0 = rest_joints[:, 0]
    transl = t + (r0 @ j0[:, :, None])[..., 0] - j0
    out = reference(betas=betas, global_orient=pose[:, 0], body_pose=pose[:, 1:].reshape(-1, 69), transl=transl)
    return out.vertices, out.joints


def _ours(body, betas, pose, t):
    rest = body.full_rest(betas)
    frames, a = forward_kinematics(body.parents, rest, rotvec_to_rotmat(pose), placement(pose[:, 0], t))
    return frames, a


def test_model_attributes(body):
    assert body.name == "smpl"
    assert len(body.bone_names) == len(body.parents) == 24
    assert [body.bone_names[i] for i in (0, 16, 19, 23)] == ["pelvis", "left_shoulder", "right_elbow", "right_hand"]
    assert body.fitted[0] == 0 and len(body.fitted) == 16
    fitted_parents(body.parents, body.fitted)  # raises unless root first and parents before children
    assert body.faces.dtype == np.int32 and body.faces.shape[1] == 3
    assert body.shape_default.shape == body.shape_low.shape == body.shape_high.shape == (10,)
    assert torch.equal(body.facing, torch.diag(torch.tensor([1.0, -1.0, -1.0])))
    # An upright model facing +z with +x its left: the camera sees its head up (-y) and its left on the right.
    rest = body.full_rest(body.shape_default[None])[0]
    head, pelvis, lsh = (rest[i, :3, 3] for i in (15, 0, 16))
    assert (body.facing @ (head - pelvis))[1] < 0 and (body.facing @ (lsh - pelvis))[0] > 0


@pytest.mark.parametrize("posed", [False, True])
def test_vertices_and_joints_match_smplx(body, reference, posed):
    betas, pose, t = _random_pose(3, seed=1)
    if not posed:
        pose, t = torch.zeros_like(pose), torch.zeros_like(t)
    frames, a = _ours(body, betas, pose, t)
    ref_v, ref_j = _smplx_forward(reference, betas, pose, t, body.joints(betas))
    with torch.no_grad():
        v = body.vertices(betas, a)
    assert (v - ref_v).abs().max() < TOL
    assert (frames[..., :3, 3] - ref_j[:, :24]).abs().max() < TOL
    if not posed:
        assert (v - body.rest_vertices(betas)).abs().max() < 1e-6


def test_keypoints_match_smplx(body, reference):
    betas, pose, t = _random_pose(4, seed=2)
    still = torch.ones(24, dtype=torch.bool)
    still[body.fitted] = False
    pose[:, still] = 0.0  # bones outside the fitted sub-skeleton stay at rest
    rig = body.rig(betas)
    # The fitted sub-skeleton alone, as fitting runs it.
    _, a_fit = forward_kinematics(fitted_parents(body.parents, body.fitted), rig.rest,
                                  rotvec_to_rotmat(pose[:, body.fitted]), placement(pose[:, 0], t))
    kp = skinned_keypoints(a_fit, rig.kp_coeffs)
    ref_v, ref_j = _smplx_forward(reference, betas, pose, t, body.joints(betas))
    want = torch.stack([ref_v[:, i] if kind == "vertex" else ref_j[:, i] for kind, i in COCO_SOURCES], 1)
    assert (kp - want).abs().max() < TOL
    # The face points are smplx's own extra joints (nose, reye, leye, rear, lear after the 24).
    assert (kp[:, :5] - ref_j[:, [24, 26, 25, 28, 27]]).abs().max() < TOL


def test_fit_route_matches_smplx(body, reference):
    """The fit's own route (fit.py): keypoint coefficients per track folded through the rest pose
    (rest_folded), bones posed without A = posed @ rest^-1 (posed_frames), one product per track
    (skinned_keypoints with track), on rows out of track order, against smplx's forward."""
    betas, pose, t = _random_pose(5, seed=3)
    track = torch.tensor([2, 0, 2, 1, 0])
    shapes = betas[:3]
    pose[:, [j for j in range(24) if j not in body.fitted]] = 0.0
    parents = fitted_parents(body.parents, body.fitted)
    rig = body.rig(shapes)
    rest_inv, rel = rest_relations(parents, rig.rest)
    frames = posed_frames(parents, rel[track], rotvec_to_rotmat(pose[:, body.fitted]), placement(pose[:, 0], t))
    kp = skinned_keypoints(frames, rest_folded(rest_inv, rig.kp_coeffs), track)
    ref_v, ref_j = _smplx_forward(reference, shapes[track], pose, t, body.joints(shapes[track]))
    want = torch.stack([ref_v[:, i] if kind == "vertex" else ref_j[:, i] for kind, i in COCO_SOURCES], 1)
    assert (kp - want).abs().max() < TOL


def test_face_landmarks_on_the_head(body):
    rig = body.rig(body.shape_default[None])
    a = torch.eye(4).expand(1, len(body.fitted), 4, 4)
    kp = skinned_keypoints(a, rig.kp_coeffs)[0]
    head, shoulder_l, shoulder_r = body.full_rest(body.shape_default[None])[0, [15, 16, 17], :3, 3]
    nose, leye, reye, lear, rear = kp[:5]
    assert nose[1] > shoulder_l[1] + 0.1 and nose[2] > head[2] + 0.05  # above the shoulders, in front
    assert leye[0] > nose[0] > reye[0] and lear[0] > leye[0] and rear[0] < reye[0]  # +x is the left
    assert torch.allclose(kp[5], shoulder_l) and torch.allclose(kp[6], shoulder_r)


def test_flexion_bends_forward(body):
    """A positive rotation about the elbow's flexion axis brings the wrist in front of the body (+z)."""
    rest = body.full_rest(body.shape_default[None])
    axes = flexion_axes(body, rest[0], body.front)
    fi = body.fitted.index(18)  # left elbow
    local = torch.eye(3).repeat(1, 24, 1, 1)
    local[0, 18] = rotvec_to_rotmat(axes[fi] * 1.0)
    frames, _ = forward_kinematics(body.parents, rest, local, torch.eye(4)[None])
    assert frames[0, 20, 2, 3] - rest[0, 20, 2, 3] > 0.1


def _save(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "SMPL_NEUTRAL.npz", **arrays)


def _missing_array(folder):
    arrays = build_fake_smpl()
    del arrays["J_regressor"]
    _save(folder, arrays)


def _wrong_shape(folder):
    arrays = build_fake_smpl()
    arrays["weights"] = arrays["weights"][:, :23]
    _save(folder, arrays)


def _object_array(folder):
    arrays = build_fake_smpl()
    arrays["weights"] = np.array([arrays["weights"], None], dtype=object)  # np.savez pickles this one
    _save(folder, arrays)


class _Trap:
    """Unpickling this creates the file `marker`: shows whether anything loaded the .pkl."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _pkl_only(folder):
    folder.mkdir()
    (folder / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps({"v_template": _Trap(folder / "unpickled")}))


@pytest.mark.parametrize("make, file, words", [
    (lambda d: None, "", "folder not found"),
    (lambda d: d.mkdir(), "SMPL_NEUTRAL.npz", "not found"),
    (_pkl_only, "SMPL_NEUTRAL.npz", "convert"),
    (_object_array, "SMPL_NEUTRAL.npz", "pickled"),
    (_missing_array, "SMPL_NEUTRAL.npz", "missing array 'J_regressor'"),
    (_wrong_shape, "SMPL_NEUTRAL.npz", "array 'weights' has shape (6890, 23), expected (6890, 24)"),
])
def test_errors_are_one_line_naming_the_file(tmp_path, make, file, words):
    folder = tmp_path / "model"
    make(folder)
    with pytest.raises(BodyModelError) as err:
        SmplBody(folder)
    msg = str(err.value)
    assert "\n" not in msg and words in msg
    assert not (folder / "unpickled").exists()
    assert msg.startswith(str(folder / file) + ":") if file else msg.startswith(str(folder) + ":")


def test_gender_file(folder, tmp_path):
    with pytest.raises(BodyModelError, match="SMPL_FEMALE.npz: not found"):
        SmplBody(folder, gender="female")
    write_fake_smpl(tmp_path, name="SMPL_MALE.npz")
    assert SmplBody(tmp_path, gender="male").path.name == "SMPL_MALE.npz"
