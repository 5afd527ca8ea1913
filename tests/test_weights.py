"""Weights resolver: folder, cache, download with sha256 check, clear offline error."""
import dataclasses

import pytest

from stages import weights
from stages.weights import WeightsError, WeightsMissing, resolve

PB = "tfpose_mobilenet_v2_small_graph_opt.pb"


@pytest.fixture
def empty_places(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("POSEPIPE_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.delenv("POSEPIPE_OFFLINE")  # these tests download, from file:// URLs
    return tmp_path


def _with_url(monkeypatch, url: str) -> None:
    model = dataclasses.replace(weights.MODEL_FILES[PB], url=url)
    monkeypatch.setitem(weights.MODEL_FILES, PB, model)


def test_folder_first(weights_dir, monkeypatch):
    monkeypatch.setenv("POSEPIPE_WEIGHTS", str(weights_dir))
    assert resolve(PB) == weights_dir / PB


def test_download_goes_to_cache_after_hash_check(weights_dir, empty_places, monkeypatch):
    _with_url(monkeypatch, (weights_dir / PB).as_uri())  # a file:// URL stands in for upstream
    path = resolve(PB)
    assert path == empty_places / "cache" / "posepipe" / PB
    assert path.read_bytes() == (weights_dir / PB).read_bytes()
    _with_url(monkeypatch, "file:///nonexistent")  # second call: from the cache, no download
    assert resolve(PB) == path


def test_corrupt_download_is_not_cached(weights_dir, empty_places, monkeypatch):
    bad = empty_places / "bad.pb"
    bad.write_bytes(b"not the model")
    _with_url(monkeypatch, bad.as_uri())
    with pytest.raises(WeightsError, match="sha256"):
        resolve(PB)
    assert not (empty_places / "cache" / "posepipe" / PB).exists()
    assert list((empty_places / "cache" / "posepipe").iterdir()) == []  # no temporary left behind


def test_offline_error_says_how_to_point_at_a_folder(empty_places, monkeypatch):
    _with_url(monkeypatch, "file:///nonexistent/graph_opt.pb")
    with pytest.raises(WeightsError) as err:
        resolve(PB)
    assert "POSEPIPE_WEIGHTS" in str(err.value) and "download" in str(err.value)


def test_wrong_file_in_folder_is_refused(empty_places, monkeypatch):
    folder = empty_places / "w"
    folder.mkdir()
    (folder / PB).write_bytes(b"x")
    monkeypatch.setenv("POSEPIPE_WEIGHTS", str(folder))
    with pytest.raises(WeightsError, match="does not match"):
        resolve(PB)


def test_unknown_name():
    with pytest.raises(WeightsError, match="unknown model file"):
        resolve("resnet.pth")


def _segment_choice(value: str):
    from pipeline.config import load_config
    from pipeline.models import choose_segment_model

    config = load_config()
    return choose_segment_model(dataclasses.replace(config, dense=dataclasses.replace(config.dense, silhouettes=value)))


def test_an_optional_model_falls_back_only_when_it_is_not_installed(empty_places, monkeypatch):
    """The silhouettes' model: "auto" draws the bodies alone without it (offline here), "on" refuses, "off"
    never looks; a corrupt file is refused under "auto" too, not taken for an absent one."""
    from stages.dense.segment import SEGMENT_FILE

    monkeypatch.setenv("POSEPIPE_OFFLINE", "1")
    assert _segment_choice("auto") is None and _segment_choice("off") is None
    with pytest.raises(WeightsMissing, match=f"{SEGMENT_FILE}: not found .* POSEPIPE_OFFLINE is set"):
        _segment_choice("on")
    (empty_places / "none").mkdir()
    (empty_places / "none" / SEGMENT_FILE).write_bytes(b"not the model")
    with pytest.raises(WeightsError, match="does not match the expected"):
        _segment_choice("auto")
    assert _segment_choice("off") is None


def test_a_file_inside_an_upstream_tgz_is_taken_out_and_checked(empty_places, monkeypatch):
    """An npm package's .tgz (file:// stands in for the registry): only the member lands in the cache, checked;
    a package without it is refused; a failed download is "not installed", so "auto" draws the bodies alone."""
    import io
    import tarfile

    from stages.dense.segment import SEGMENT_FILE
    from stages.weights import sha256_of

    content = b"the model's bytes"
    package = empty_places / "pkg.tgz"
    with tarfile.open(package, "w:gz") as archive:
        for name, data in (("package/README.md", b"readme"), ("package/model.tflite", content)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (empty_places / "ref").write_bytes(content)
    model = dataclasses.replace(weights.MODEL_FILES[SEGMENT_FILE], sha256=sha256_of(empty_places / "ref"),
                                url=package.as_uri(), member="package/model.tflite")
    monkeypatch.setitem(weights.MODEL_FILES, SEGMENT_FILE, model)
    path = resolve(SEGMENT_FILE)
    assert path == empty_places / "cache" / "posepipe" / SEGMENT_FILE and path.read_bytes() == content
    assert sorted(p.name for p in path.parent.iterdir()) == [SEGMENT_FILE]  # no package left beside it
    path.unlink()
    monkeypatch.setitem(weights.MODEL_FILES, SEGMENT_FILE, dataclasses.replace(model, member="package/other"))
    with pytest.raises(WeightsError, match="the download has no package/other"):
        resolve(SEGMENT_FILE)
    monkeypatch.setitem(weights.MODEL_FILES, SEGMENT_FILE, dataclasses.replace(model, url="file:///nonexistent.tgz"))
    with pytest.raises(WeightsMissing, match="failed"):
        resolve(SEGMENT_FILE)
    assert _segment_choice("auto") is None and not path.exists()
