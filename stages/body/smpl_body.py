"""SMPL (24 joints, 6890 vertices) as a `rig.BodyModel`, from model files the user supplies.

SMPL's licence does not let posepipe ship the model: users pass `--body-model smpl
--body-model-path DIR` with DIR holding `SMPL_NEUTRAL.npz` (or `SMPL_MALE.npz` / `SMPL_FEMALE.npz`,
`gender=`). Only plain-array .npz files are read, with `allow_pickle=False`: SMPL's official .pkl
files (and smplx given an .npz path alone, which still unpickles) run arbitrary code when loaded, so
a folder holding only a .pkl is refused with a message saying to convert it once to .npz. Every
problem with the files is one `BodyModelError` line naming the file.

Model space: metres, y up, +z forward (the person faces +z), +x the person's left. Rest frames have
identity rotation at the joints (SMPL's convention), so a bone's local rotation in
skeleton.forward_kinematics is exactly SMPL's axis-angle for that joint. Pose corrective blend
shapes (posedirs) are not applied: fitting and the exported mesh use plain LBS of the shaped template.
"""
from __future__ import annotations

import contextlib
import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from stages.body.errors import BodyModelError
from stages.body.rig import Rig, fold_to_fitted, folded_coeffs

JOINT_NAMES = ("pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
               "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
               "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
               "left_wrist", "right_wrist", "left_hand", "right_hand")
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
NUM_VERTICES = 6890
NUM_BETAS = 10
# Same order as anny_body's Mixamo list, so fitted indices mean the same bones for both models.
_FITTED = ("pelvis", "spine1", "spine2", "spine3", "neck", "head",
           "left_collar", "left_shoulder", "left_elbow", "right_collar", "right_shoulder", "right_elbow",
           "left_hip", "left_knee", "right_hip", "right_knee")
_FLEXION = {"left_elbow": ("left_wrist", "front"), "right_elbow": ("right_wrist", "front"),
            "left_knee": ("left_ankle", "back"), "right_knee": ("right_ankle", "back")}
# COCO-17 from SMPL: the face points are the vertices smplx itself uses as extra joints
# (smplx.vertex_ids['smplh']: nose, leye, reye, lear, rear); the body points are SMPL joint heads.
COCO_SOURCES = (("vertex", 332), ("vertex", 2800), ("vertex", 6260), ("vertex", 583), ("vertex", 4071),
                ("joint", 16), ("joint", 17), ("joint", 18), ("joint", 19), ("joint", 20), ("joint", 21),
                ("joint", 1), ("joint", 2), ("joint", 4), ("joint", 5), ("joint", 7), ("joint", 8))
# Arrays smplx.SMPL reads and their shapes (None: any size, ">=10": at least 10 betas).
REQUIRED = {"v_template": (NUM_VERTICES, 3), "shapedirs": (NUM_VERTICES, 3, ">=10"),
            "posedirs": (NUM_VERTICES, 3, 207), "J_regressor": (24, NUM_VERTICES),
            "weights": (NUM_VERTICES, 24), "kintree_table": (2, 24), "f": (None, 3)}
_INTEGER = ("kintree_table", "f")


def _fail(path: Path, why: str) -> BodyModelError:
    return BodyModelError(f"{path}: {' '.join(why.split())}")  # one line, whatever numpy said


def _shape_ok(shape: tuple[int, ...], want: tuple) -> bool:
    if len(shape) != len(want):
        return False
    return all(w is None or (w == ">=10" and n >= NUM_BETAS) or n == w for n, w in zip(shape, want))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The REQUIRED arrays of a model file, checked; BodyModelError otherwise."""
    arrays = {}
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a lone .npy renamed
            raise _fail(path, "not an .npz archive")
        with data:
            missing = [k for k in REQUIRED if k not in data.files]
            if missing:
                raise _fail(path, f"missing array{'s' if len(missing) > 1 else ''} "
                                  + ", ".join(repr(k) for k in missing))
            for k in REQUIRED:  # only these: extra entries are never read, so never unpickled
                arrays[k] = data[k]
    except BodyModelError:
        raise
    except ValueError as e:  # numpy refuses object arrays / pickled data under allow_pickle=False
        raise _fail(path, "holds pickled data (object arrays), which can run code when loaded, or is no .npz at "
                          "all: save it with plain numeric arrays only") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise _fail(path, f"cannot be read as .npz ({e})") from None
    for k, want in REQUIRED.items():
        a = arrays[k]
        if not _shape_ok(a.shape, want):
            shown = "(" + ", ".join("N" if w is None else str(w) for w in want) + ")"
            raise _fail(path, f"array {k!r} has shape {a.shape}, expected {shown}")
        kind = "iu" if k in _INTEGER else "fiu"
        if a.dtype.kind not in kind:
            raise _fail(path, f"array {k!r} has dtype {a.dtype}, expected {'integers' if k in _INTEGER else 'numbers'}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise _fail(path, f"array {k!r} has non-finite values")
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # SMPL files store the root's parent as 2^32-1
    if tuple(parents) != SMPL_PARENTS:
        raise _fail(path, f"kintree_table is not SMPL's 24-joint tree (parents {parents.tolist()})")
    f = arrays["f"]
    if f.size and (f.min() < 0 or f.max() >= NUM_VERTICES):
        raise _fail(path, f"array 'f' indexes vertices outside 0..{NUM_VERTICES - 1}")
    return arrays


def model_file(folder: str | Path, gender: str = "neutral") -> Path:
    """The .npz to load from a --body-model-path folder; BodyModelError when it is not there."""
    folder = Path(folder)
    if gender not in ("neutral", "male", "female"):
        raise BodyModelError(f"{folder}: SMPL gender must be neutral, male or female, not {gender!r}")
    if not folder.is_dir():
        raise _fail(folder, "body model folder not found" if not folder.exists() else "not a folder")
    path = folder / f"SMPL_{gender.upper()}.npz"
    if path.is_file():
        return path
    pickled = sorted(p.name for p in folder.glob("*.pkl"))
    if pickled:
        raise _fail(path, f"not found; the folder has {', '.join(pickled)}, and .pkl model files run code when "
                          f"loaded, so posepipe does not read them: convert one once, where you trust it, to "
                          f"{path.name} holding plain arrays {', '.join(REQUIRED)} (J_regressor dense)")
    raise _fail(path, "not found (posepipe reads SMPL models as SMPL_NEUTRAL/MALE/FEMALE.npz)")


class SmplBody:
    """SMPL behind the BodyModel interface (see rig.py), from DIR/SMPL_<GENDER>.npz."""

    name = "smpl"

    def __init__(self, model_path: str | Path, gender: str = "neutral", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        import smplx
        from smplx.utils import Struct

        self.path = model_file(model_path, gender)
        arrays = _read_npz(self.path)
        # smplx prints a warning to stdout for files with only 10 betas (most SMPL files): not ours to show.
        with contextlib.redirect_stdout(io.StringIO()):
            model = smplx.SMPL(model_path=str(self.path.parent), data_struct=Struct(**arrays), gender=gender,
                               num_betas=NUM_BETAS, dtype=dtype)
        self.model = model.to(device)
        self.device = torch.device(device)
        self.dtype = dtype
        self.bone_names = list(JOINT_NAMES)
        self.parents = list(SMPL_PARENTS)
        index = {b: i for i, b in enumerate(self.bone_names)}
        self.fitted = [index[b] for b in _FITTED]
        self.flexion = {_FITTED.index(b): (index[c], side) for b, (c, side) in _FLEXION.items()}
        self.shape_names = [f"beta{i}" for i in range(NUM_BETAS)]
        self.shape_default = torch.zeros(NUM_BETAS, dtype=dtype, device=device)
        self.shape_low = torch.full((NUM_BETAS,), -3.0, dtype=dtype, device=device)
        self.shape_high = torch.full((NUM_BETAS,), 3.0, dtype=dtype, device=device)
        # Model (x left, y up, z forward) -> camera (x right, y down, z forward) for a person facing it.
        self.facing = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype, device=device))
        self.front = torch.tensor([0.0, 0, 1], dtype=dtype, device=device)
        self.faces = np.asarray(arrays["f"], dtype=np.int32)
        self._owner = fold_to_fitted(self.parents, self.fitted)

        # smplx's buffers, so this is the data smplx itself would skin.
        self._template = self.model.v_template  # [V, 3]
        self._shapedirs = self.model.shapedirs  # [V, 3, 10]
        self._skin = self.model.lbs_weights  # [V, 24]
        regressor = self.model.J_regressor  # [24, V]
        self._j_template = regressor @ self._template  # [24, 3]
        self._j_dirs = torch.einsum("jv,vds->jds", regressor, self._shapedirs)  # [24, 3, 10]

        # Keypoint coefficients (skeleton.py), linear in the betas: c = c0 + sum_s beta_s cb[s].
        # A vertex point: c[k, j] = skin[v, j] [x_v; 1]; a joint head: c[k, j] = [J_j; 1] on bone j only.
        num_j = len(self.parents)
        c0 = torch.zeros(17, num_j, 4, dtype=dtype, device=device)
        cb = torch.zeros(NUM_BETAS, 17, num_j, 3, dtype=dtype, device=device)
        for k, (kind, i) in enumerate(COCO_SOURCES):
            if kind == "vertex":
                c0[k, :, :3] = self._skin[i, :, None] * self._template[i]
                c0[k, :, 3] = self._skin[i]
                cb[:, k] = torch.einsum("j,ds->sjd", self._skin[i], self._shapedirs[i])
            else:
                c0[k, i, :3] = self._j_template[i]
                c0[k, i, 3] = 1.0
                cb[:, k, i] = self._j_dirs[i].T
        self._c0 = folded_coeffs(c0, self._owner, len(self.fitted))  # [17, F, 4]
        self._cb = folded_coeffs(cb, self._owner, len(self.fitted))  # [10, 17, F, 3]

    def joints(self, shape: torch.Tensor) -> torch.Tensor:
        """shape: float[T, 10] betas -> float[T, 24, 3] rest joints, J_regressor @ shaped template."""
        return self._j_template + torch.einsum("ts,jds->tjd", shape, self._j_dirs)

    def full_rest(self, shape: torch.Tensor) -> torch.Tensor:
        """shape: float[T, 10] -> float[T, 24, 4, 4]: identity rotation at each joint (no pose blend shapes)."""
        j = self.joints(shape)
        rest = torch.eye(4, dtype=j.dtype, device=j.device).repeat(*j.shape[:2], 1, 1)
        rest[..., :3, 3] = j
        return rest

    def rig(self, shape: torch.Tensor) -> Rig:
        """shape: float[T, 10] -> Rig(rest float[T, 16, 4, 4], kp_coeffs float[T, 17, 16, 4])."""
        rest = self.full_rest(shape)[:, self.fitted]
        kp = self._c0.expand(shape.shape[0], -1, -1, -1).clone()
        kp[..., :3] = kp[..., :3] + torch.einsum("ts,skfd->tkfd", shape, self._cb)
        return Rig(rest=rest, kp_coeffs=kp)

    def rest_vertices(self, shape: torch.Tensor) -> torch.Tensor:
        """shape: float[B, 10] -> float[B, 6890, 3] shaped template (smplx's v_shaped)."""
        return self._template + torch.einsum("bs,vds->bvd", shape, self._shapedirs)

    def vertices(self, shape: torch.Tensor, a_full: torch.Tensor) -> torch.Tensor:
        """shape: float[B, 10], a_full: float[B, 24, 4, 4] -> float[B, 6890, 3] LBS vertices (no pose
        correctives), in a_full's frame."""
        return self.skinned_vertices(self.rest_vertices(shape), a_full)

    def skinned_vertices(self, rest_v: torch.Tensor, a_full: torch.Tensor) -> torch.Tensor:
        """rest_v: float[B, 6890, 3] (rest_vertices), a_full: float[B, 24, 4, 4] -> float[B, 6890, 3] LBS."""
        t = torch.einsum("vj,bjrc->bvrc", self._skin, a_full[:, :, :3, :])  # [B, V, 3, 4]
        return (t[..., :3] @ rest_v[..., None])[..., 0] + t[..., 3]
