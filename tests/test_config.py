"""Config loading: TOML -> frozen dataclasses, errors name the key and the file."""
import dataclasses

import pytest

from pipeline.config import CONFIG_DIR, Config, ConfigError, load_config, mode_file


def test_defaults_and_mode_file_load_into_frozen_dataclasses():
    config = load_config(mode_file("bottomup"))
    assert isinstance(config, Config)
    assert config.run.mode == "bottomup"
    assert config.bottomup.grouping.num_samples == 10
    assert isinstance(config.pose.resources.num_gpus, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run.mode = "x"  # type: ignore[misc]


def test_override_file_wins(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text("[decode]\nbatch_size = 3\n[bottomup.grouping]\nmin_parts = 6\n[pose.resources]\nnum_gpus = 1\n")
    config = load_config(mode_file("bottomup"), f)
    assert config.decode.batch_size == 3
    assert config.bottomup.grouping.min_parts == 6
    assert config.pose.resources.num_gpus == 1.0
    assert config.decode.max_side == load_config().decode.max_side  # untouched keys keep defaults


@pytest.mark.parametrize("text, message", [
    ("[pose]\nthreds = 2\n", "unknown key 'pose.threds'"),
    ("[bottomup.grouping]\nmin_parts = 'four'\n", "bottomup.grouping.min_parts = 'four': expected int"),
    ("[decode]\nbatch_size = 2.5\n", "decode.batch_size = 2.5: expected int"),
    ("[pose]\nbackend = 'tensorflow'\n", "pose.backend = 'tensorflow': must be one of"),
    ("[pose]\nhalf = 1\n", "pose.half = 1: expected bool"),
    ("bottomup = 3\n", "bottomup must be a table"),
    ("[decode\n", "not valid TOML"),
    ("[topdown]\nkeypoint_model = 'hrnet'\n", "topdown.keypoint_model = 'hrnet': must be one of"),
    ("[topdown]\ndecoder = 'udp'\n", "topdown.decoder = 'udp': must be one of"),
    ("[detect]\nmodel = 'yolov8'\n", "detect.model = 'yolov8': must be one of"),
    ("[pose]\ndetector_model = 'yolox_nano_416x416.onnx'\n", "unknown key 'pose.detector_model'"),
])
def test_bad_files_name_key_and_file(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert message in str(err.value) and str(f) in str(err.value)


def test_default_file_lists_the_dataclass_defaults():
    # one default per key: configs/default.toml documents them, the dataclasses hold them
    assert load_config() == Config()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_crowd_preset_fits_one_gpu_node():
    from pipeline.sizing import required_resources

    crowd = load_config(CONFIG_DIR / "crowd.toml")
    assert crowd.run.mode == "auto" and crowd.pose.resources.actors == 2
    need = required_resources(crowd)
    assert need["GPU"] == 1.0  # two pose actors share one GPU
    assert need["CPU"] <= 16  # a common single-GPU node


def test_auto_pose_actors_fill_the_machine(tmp_path):
    from pipeline.sizing import local_cpus, required_resources, sized

    config = load_config()
    assert config.pose.resources.actors == "auto"
    # A 2-core laptop: a local Ray gets the cores plus the other stages' shares (0.5 + 0.25 + 0.25),
    # and "auto" puts one 1-thread pose actor on each core.
    assert local_cpus(config, 2) == 3
    laptop = sized(config, 3, 0)
    assert laptop.pose.resources.actors == 2 and required_resources(laptop)["CPU"] == 3
    # Two threads per actor: one actor per two cores.
    two = tmp_path / "threads.toml"
    two.write_text("[pose]\nthreads = 2\n")
    assert sized(load_config(two), 3, 0).pose.resources.actors == 1
    # A ray.init(num_cpus=2) the user started: what the other stages leave, never zero.
    assert sized(config, 2, 0).pose.resources.actors == 1
    assert sized(config, 1, 0).pose.resources.actors == 1
    # A GPU node: one actor per GPU share, as far as the CPUs allow.
    gpu = tmp_path / "gpu.toml"
    gpu.write_text("[pose.resources]\nnum_gpus = 0.5\nnum_cpus = 1\n")
    assert sized(load_config(gpu), 16, 1).pose.resources.actors == 2
    assert sized(load_config(gpu), 16, 4).pose.resources.actors == 8
    assert sized(load_config(gpu), 4, 4).pose.resources.actors == 3  # 4 CPUs - 1 for the other stages
    # A fixed count is kept as given.
    fixed = tmp_path / "fixed.toml"
    fixed.write_text("[pose.resources]\nactors = 3\n")
    assert sized(load_config(fixed), 64, 0).pose.resources.actors == 3
    with pytest.raises(ValueError, match="size the config first"):
        required_resources(config)


def test_auto_is_only_for_pose_actors_and_other_strings_are_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[decode.resources]\nactors = \"auto\"\n")
    with pytest.raises(ConfigError, match="only \\[pose.resources\\] sizes itself"):
        load_config(bad)
    bad.write_text("[pose.resources]\nactors = \"many\"\n")
    with pytest.raises(ConfigError, match="pose.resources.actors = 'many'.*one of \\('auto',\\)"):
        load_config(bad)


def test_detector_fine_pass_side(tmp_path):
    assert load_config().detect.fine_side == 640
    cfg = tmp_path / "c.toml"
    cfg.write_text("[detect]\nfine_side = 0\n")
    assert load_config(cfg).detect.fine_side == 0
    cfg.write_text("[detect]\nfine_side = -640\n")
    with pytest.raises(ConfigError, match="detect.fine_side = -640: must be 0"):
        load_config(cfg)


def test_dense_growth_is_a_few_centimetres(tmp_path):
    assert load_config().dense.grow_cm == 1.0
    cfg = tmp_path / "c.toml"
    cfg.write_text("[dense]\ngrow_cm = 0\n")
    assert load_config(cfg).dense.grow_cm == 0
    for bad in ("-1.0", "50.0"):
        cfg.write_text(f"[dense]\ngrow_cm = {bad}\n")
        with pytest.raises(ConfigError, match=f"dense.grow_cm = {bad}: must be 0"):
            load_config(cfg)


def test_threads_are_at_least_one(tmp_path):
    config = load_config()
    threads = (config.pose.threads, config.mesh.threads, config.dense.threads)
    assert threads == (1, 1, 1) and config.dense.silhouettes == "auto"
    cfg = tmp_path / "c.toml"
    cfg.write_text("[dense]\nthreads = 2\nsilhouettes = \"off\"\n")
    assert (load_config(cfg).dense.threads, load_config(cfg).dense.silhouettes) == (2, "off")
    cfg.write_text("[dense]\nsilhouettes = true\n")  # auto, on or off: a bool is refused, not read as one
    with pytest.raises(ConfigError, match=r"dense.silhouettes = True: must be one of \('auto', 'on', 'off'\)"):
        load_config(cfg)
    for section in ("pose", "mesh", "dense"):
        cfg.write_text(f"[{section}]\nthreads = 0\n")
        with pytest.raises(ConfigError, match=f"{section}.threads = 0: must be >= 1"):
            load_config(cfg)


def test_a_known_camera_height_is_a_height_a_camera_can_have(tmp_path):
    assert load_config().mesh.fit.camera_height_m == 0  # unknown
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mesh.fit]\ncamera_height_m = 3\n")
    assert load_config(cfg).mesh.fit.camera_height_m == 3
    for bad in ("-2.5", "0.1", "nan"):
        cfg.write_text(f"[mesh.fit]\ncamera_height_m = {bad}\n")
        with pytest.raises(ConfigError, match="mesh.fit.camera_height_m = .*: must be 0 \\(unknown\\) or 0.2-100"):
            load_config(cfg)


def test_grouping_on_the_device_needs_the_torch_network(tmp_path):
    from pipeline.models import choose_bottomup_model, groups_on_device

    cfg = tmp_path / "c.toml"
    cfg.write_text('[pose]\nbackend = "onnxruntime"\ngroup_on_device = "on"\n')
    with pytest.raises(ConfigError, match="group_on_device runs the torch network"):
        choose_bottomup_model(load_config(cfg))
    assert not groups_on_device(load_config())  # auto on a CPU: a grouping actor, as before
    cfg.write_text("[pose.resources]\nnum_gpus = 1\n")
    assert groups_on_device(load_config(cfg))  # auto with a GPU
    assert choose_bottomup_model(load_config(cfg)).backend == "torch"


def test_mode_flag_wins_over_a_config_files_mode():
    """`--mode topdown --config configs/crowd.toml` (whose [run] mode is auto) runs top-down."""
    import argparse

    from pipeline.cli import _config

    crowd = str(CONFIG_DIR / "crowd.toml")
    assert load_config(crowd).run.mode == "auto"
    given = lambda mode, config: _config(argparse.Namespace(mode=mode, config=config))
    assert given("topdown", crowd).run.mode == "topdown"
    assert given("topdown", crowd).pose.resources.num_gpus == 0.5  # the rest of the file still applies
    assert given(None, crowd).run.mode == "auto"  # no --mode: the file's
    assert given(None, None).run.mode == "bottomup"  # neither: the default
