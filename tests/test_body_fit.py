"""Fitting recovers bodies it can know: poses and shapes sampled from the body model itself,
projected with a known camera, 2 px noise, 20% of the keypoints dropped (tests/body_synth.py)."""
from __future__ import annotations

import numpy as np
import pytest

from stages.body.fit import BodyFitter, FitParams
from tests.body_synth import pa_mpjpe, sample_track

# Monocular fitting cannot tell a bone tilted towards the camera from one tilted away when its 2D
# image is the same, so even a perfect model leaves an error: SMPLify reports 82 mm PA-MPJPE on
# Human3.6M with a real-vs-model mismatch; here the model is exact and we measure ~40 mm (Anny),
# so 60 mm leaves room for seeds and still fails a fit that gets limbs wrong (rest pose: ~150 mm).
PA_MPJPE_BOUND_M = 0.060


def _batch(tracks):
    kps = np.concatenate([t.keypoints for t in tracks])
    joints = np.concatenate([t.joints for t in tracks])
    track_id = np.concatenate([np.full(len(t.keypoints), i, np.int64) for i, t in enumerate(tracks)])
    frame_index = np.concatenate([np.arange(len(t.keypoints), dtype=np.int64) for t in tracks])
    return kps, joints, track_id, frame_index


def _errors(result, joints):
    return np.array([pa_mpjpe(result.joints[i], joints[r]) for i, r in enumerate(result.rows)])


@pytest.fixture(scope="module")
def anny():
    from stages.body.anny_body import AnnyBody

    return AnnyBody()


def test_anny_round_trip_adults_and_children(anny):
    rng = np.random.default_rng(1)
    ages = [0.33, 0.67, 0.4, 0.9]  # child, young adult, older child, old
    tracks = [sample_track(anny, np.array([rng.uniform(0.2, 0.8), a, 0.5, 0.5, 0.5, 0.5]), 12, rng) for a in ages]
    kps, joints, track_id, frame_index = _batch(tracks)
    fitter = BodyFitter(anny)
    result = fitter.fit("v", kps, track_id, frame_index, (1280, 720))
    err = _errors(result, joints)
    assert len(result.rows) >= 0.9 * len(kps)
    assert np.median(err) < PA_MPJPE_BOUND_M, np.median(err)
    assert np.isfinite(result.joints).all() and np.isfinite(result.translation).all()
    assert np.median(result.reproj_px) < 4.0  # 2 px noise per axis: ~2.5 px expected
    # One shape per track, and the fitted joints keep the input's low-confidence flags.
    assert sorted(fitter.shapes("v")) == [0, 1, 2, 3]
    assert (result.low_conf == (kps[result.rows, :, 2] < 0.3)).all()


def test_without_a_floor_the_same_image_size_is_an_adult(anny):
    """A child (age 1/3) near and an adult (2/3) far, the same size in the image, no floor: nothing
    measures their size, and 17 keypoints' proportions are weak evidence (the fit once told them apart by
    a mean age margin of ~0.1 over three pairs, and fitted adults at 1.0-1.2 m on real video). The
    population prior makes both adults of a typical stature; the floor is what tells a child
    (tests/test_body_scene.py)."""
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        child = sample_track(anny, np.array([0.5, 1 / 3, 0.5, 0.5, 0.5, 0.5]), 16, rng, depth=(2.5, 2.6))
        adult = sample_track(anny, np.array([0.5, 2 / 3, 0.5, 0.5, 0.5, 0.5]), 16, rng, depth=(3.3, 3.4))
        kps, _, track_id, frame_index = _batch([child, adult])
        fitter = BodyFitter(anny)
        fitter.fit("v", kps, track_id, frame_index, (1280, 720))
        statures = fitter.statures("v")
        age = anny.shape_names.index("age")
        assert all(1.55 < s < 1.85 for s in statures.values()), statures
        assert all(fitter.shapes("v")[t][age] > 0.5 for t in (0, 1))


def test_smpl_format_round_trip(tmp_path):
    """The SMPL path end to end on the test's own SMPL-format model (tests/smpl_fixture.py: tube limbs,
    a cylinder head, so its face points say little about the head's turn). Measured there: 118 mm median
    PA-MPJPE (87 mm without the upright prior, which assumes a level camera where no floor is known and
    so pulls these synthetic people, whose torsos lean at random, toward vertical), against 131 mm for
    the root-only fit with the limbs at rest; the bound asks for under 120 mm and at least 8% better than
    the limbs at rest. Weaker than Anny's (~40 mm): the fake model, not the path, is the open question."""
    from stages.body.smpl_body import SmplBody
    from tests.smpl_fixture import write_fake_smpl

    write_fake_smpl(tmp_path)
    smpl = SmplBody(tmp_path)
    rng = np.random.default_rng(3)
    tracks = [sample_track(smpl, rng.normal(0, 0.7, 10).astype(np.float32), 12, rng) for _ in range(2)]
    kps, joints, track_id, frame_index = _batch(tracks)
    result = BodyFitter(smpl).fit("v", kps, track_id, frame_index, (1280, 720))
    rest = BodyFitter(smpl, FitParams(iters_full=0)).fit("v", kps, track_id, frame_index, (1280, 720))
    err, rest_err = np.median(_errors(result, joints)), np.median(_errors(rest, joints))
    assert err < 0.120 and err < 0.92 * rest_err, (err, rest_err)
    assert result.bone_rotvec.shape[1:] == (24, 3)
    assert np.median(result.reproj_px) < 4.0


def test_too_few_confident_joints_are_skipped_and_counted(anny):
    rng = np.random.default_rng(5)
    track = sample_track(anny, anny.shape_default.numpy(), 6, rng)
    kps = track.keypoints.copy()
    face = track.keypoints[2, :3].copy()  # frame 2's nose and eyes, all seen
    face[:, 2] = 0.9
    kps[2:4] = np.array([np.nan, np.nan, 0.0], np.float32)
    kps[2:4, :2] = face[:2]  # two frames keep only the nose and an eye: too few even for a tracked person
    result = BodyFitter(anny).fit("v", kps, np.zeros(6, np.int64), np.arange(6, dtype=np.int64), (1280, 720))
    assert list(result.rows) == [0, 1, 4, 5]
    assert result.skipped == {"few_confident_joints": 2}
    kps[2:4, :3] = face  # the nose and both eyes: enough for a person with a body, but this track has none
    nothing = BodyFitter(anny).fit("v", kps[2:4], np.zeros(2, np.int64), np.arange(2, dtype=np.int64), (1280, 720))
    assert len(nothing.rows) == 0 and nothing.skipped == {"few_confident_joints": 2}


def test_a_half_hidden_frame_of_a_tracked_person_gets_its_body_from_the_track(anny):
    """Torso and legs hidden for two frames (behind someone): too few joints to pose a body alone, so the
    frames start from the nearest fitted frame of the track, moved to the head and arms they show."""
    rng = np.random.default_rng(5)
    track = sample_track(anny, anny.shape_default.numpy(), 8, rng)
    kps = track.keypoints.copy()
    hidden = [5, 6, 11, 12, 13, 14, 15, 16]
    kps[3:5, hidden, :2], kps[3:5, hidden, 2] = np.nan, 0.0
    result = BodyFitter(anny).fit("v", kps, np.zeros(8, np.int64), np.arange(8, dtype=np.int64), (1280, 720))
    assert list(result.rows) == list(range(8)) and result.skipped == {}
    assert result.low_conf[3:5][:, hidden].all()  # what the frames did not show is flagged, not measured
    err = _errors(result, track.joints)
    seen = np.r_[err[:3], err[5:]]
    assert err[3:5].max() < 1.2 * seen.max(), err  # as good as the frames seen whole (rest pose: ~150 mm)
    assert (result.reproj_px[3:5] < 4.0).all(), result.reproj_px  # on the keypoints they show
    depth = result.translation[:, 2]
    assert np.abs(depth[3:5] - depth[[2, 5]].mean()).max() < 0.2, depth  # the track's depth, not a new guess


def test_warm_start_continues_a_track_with_its_frozen_shape(anny):
    rng = np.random.default_rng(11)
    track = sample_track(anny, np.array([0.5, 0.6, 0.5, 0.5, 0.5, 0.5]), 16, rng)
    fitter = BodyFitter(anny, FitParams())
    ids = np.zeros(8, np.int64)
    first = fitter.fit("v", track.keypoints[:8], ids, np.arange(8, dtype=np.int64), (1280, 720))
    shape = fitter.shapes("v")[0].copy()
    second = fitter.fit("v", track.keypoints[8:], ids, np.arange(8, 16, dtype=np.int64), (1280, 720))
    assert np.array_equal(fitter.shapes("v")[0], shape)
    err = np.concatenate([_errors(first, track.joints[:8]), _errors(second, track.joints[8:])])
    assert np.median(err) < PA_MPJPE_BOUND_M
    fitter.close("v")
    assert fitter.shapes("v") == {}


def test_a_new_tracks_shape_waits_at_its_probed_start_while_the_pose_settles(anny):
    """For its first shape_after iterations a new track keeps the start the probe chose, and only then
    fits its shape: freed at once, the shape took up the error of a pose still at rest."""
    rng = np.random.default_rng(5)
    track = sample_track(anny, np.array([0.5, 0.6, 0.5, 0.5, 0.5, 0.5]), 8, rng)
    ids, frames = np.zeros(8, np.int64), np.arange(8, dtype=np.int64)

    def fitted_shape(params: FitParams) -> tuple[np.ndarray, np.ndarray]:
        fitter = BodyFitter(anny, params)
        fitter.fit("v", track.keypoints, ids, frames, (1280, 720))
        return fitter.shapes("v")[0], np.stack([s.cpu().numpy() for s in fitter._starts])

    held, starts = fitted_shape(FitParams(iters_full=FitParams().shape_after))  # the shape is never freed
    assert np.abs(starts - held).max(axis=1).min() < 1e-5, (held, starts)
    free, _ = fitted_shape(FitParams())
    assert np.abs(starts - free).max(axis=1).min() > 1e-3, (free, starts)


def test_a_cold_start_is_no_farther_than_any_seen_segment_allows(anny):
    """A person seen from the waist up (hips, knees, ankles not confident: behind someone, below the frame's
    edge): the torso is unseen, and the old guess from 0.35 x the keypoints' box put such people 1.3-2.1 x too
    far (crowd_synth: a fit that started 38 m out for a person 8 m away never came back, its depth ramping
    over the chunk). Every seen segment of known rest length bounds the depth (foreshortening only shortens):
    the start is within 25% of the hips' depth (the shoulders and arms seen may be turned nearer or farther), and
    for whole people as near as it was."""
    from stages.body.fit_init import cold_start, start_lengths
    from tests.body_synth import sample_track

    torso, segments = start_lengths(anny)
    rng = np.random.default_rng(3)
    focal, size = float(np.hypot(1280, 720)), (1280, 720)
    for hide, lo, hi in (((11, 12, 13, 14, 15, 16), 0.8, 1.25), ((), 0.75, 1.05)):
        for _ in range(6):
            track = sample_track(anny, anny.shape_default.cpu().numpy(), 4, rng, drop=0.0)
            kp = track.keypoints.copy()
            kp[:, list(hide), 2] = 0.0
            _, start = cold_start(anny, kp, kp[..., 2] >= 0.3, focal, size, torso, segments)
            ratio = np.exp(start[:, 2]) / track.joints[:, [11, 12], 2].mean(1)  # against the hips' depth
            assert (lo < ratio).all() and (ratio < hi).all(), (hide, ratio)


def test_the_root_velocity_prior_holds_depth_while_only_the_upper_body_shows(anny):
    """Six frames of a walker show only head, shoulders and arms, noisier (someone in front hides the hips and
    legs): a body's size in the image then says little about its depth, and without the root-velocity prior
    the fitted depth wanders 0.2 m a frame where the person moves 5 mm. With it (the default), the steps stay
    near 0.1 m and the depth follows the truth more closely."""
    import dataclasses

    rng = np.random.default_rng(4)
    track = sample_track(anny, anny.shape_default.numpy(), 16, rng, noise_px=2.0, drop=0.0)
    kps = track.keypoints.copy()
    hidden = [11, 12, 13, 14, 15, 16]
    kps[5:11, hidden, :2], kps[5:11, hidden, 2] = np.nan, 0.0
    kps[5:11, :11, :2] += rng.normal(0, 4.0, (6, 11, 2))
    true = track.joints[:, [11, 12], 2].mean(1)  # the hips' depth
    steps, wander = {}, {}
    for name, params in (("default", FitParams()), ("none", dataclasses.replace(FitParams(), w_velocity=0.0))):
        z = BodyFitter(anny, params).fit("v", kps, np.zeros(16, np.int64), np.arange(16, dtype=np.int64),
                                         (1280, 720)).translation[:, 2]
        steps[name] = np.abs(np.diff(z)).max()
        wander[name] = np.abs(z - z.mean() - (true - true.mean())).max()
    assert FitParams().w_velocity > 0
    assert steps["default"] < 0.15 and steps["default"] < 0.7 * steps["none"], steps
    assert wander["default"] < wander["none"], wander


def test_frames_too_sparse_to_pose_alone_keep_their_neighbours_depth(anny):
    """Frames 5-10 of a walker show only the nose, eyes and shoulders, noisier: too few keypoints to pose a body
    alone, so each is fitted from its track's body in a second solve. Their depth is held to the frames around
    them, fitted in the first solve, as to frames of their own solve. Over eight walkers the largest depth step
    from frame 4 to 11 averages ~0.11 m; without those links ~0.17 m (the walkers move 5 mm a frame)."""
    largest = []
    for seed in range(1, 9):
        rng = np.random.default_rng(seed)
        track = sample_track(anny, anny.shape_default.numpy(), 16, rng, noise_px=2.0, drop=0.0)
        kps = track.keypoints.copy()
        sparse, shown = np.arange(5, 11), [0, 1, 2, 5, 6]
        hidden = [k for k in range(17) if k not in shown]
        kps[np.ix_(sparse, hidden, [0, 1])], kps[np.ix_(sparse, hidden, [2])] = np.nan, 0.0
        kps[np.ix_(sparse, shown, [0, 1])] += rng.normal(0, 4.0, (len(sparse), len(shown), 2))
        result = BodyFitter(anny).fit("v", kps, np.zeros(16, np.int64), np.arange(16, dtype=np.int64), (1280, 720))
        assert len(result.rows) == 16 and result.low_conf[sparse][:, hidden].all()
        largest.append(np.abs(np.diff(result.translation[4:12, 2])).max())
    assert np.mean(largest) < 0.135, largest
