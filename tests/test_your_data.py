"""A user's own dataset: any classes, any image sizes and modes, a folder or an archive, through every command, and
each way such a dataset can be damaged refused in one line with nothing written or cached."""
from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from timm.data import resolve_model_data_config

from archfamily.data import dataset as dataset_module
from archfamily.files import cache_dir
from archfamily.data.dataset import load_data, parse_input_size
from archfamily.errors import UserError
from archfamily.models.checkpoint import load_model

from tests.datasets import tar_of, write_folder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 40x56 and 64x64 images, colour and grey, PNG and JPEG, with train/, val/ and test/."""
    return write_folder(tmp_path_factory.mktemp("data") / "shapes")


def test_a_folder_of_any_classes_and_sizes_loads_at_the_size_asked(shapes: Path) -> None:
    data = load_data(str(shapes), input_size=24)
    assert data.classes == ("c00-disc", "c01-square", "c02-stripes") and data.num_classes == 3
    assert data.train_x.shape == (18, 3, 24, 24) and data.train_y.bincount().tolist() == [6, 6, 6]
    assert data.split == "val" and data.test_x.shape == (9, 3, 24, 24)
    assert data.final_x is not None and data.final_x.shape == (9, 3, 24, 24)  # test/ is kept apart
    assert all(0 < m < 1 for m in data.mean) and data.facts()["label_names"] == list(data.classes)


def test_mixed_sizes_default_to_the_network_s_size_and_one_small_size_to_itself(shapes: Path, tmp_path: Path) -> None:
    assert load_data(str(shapes), default_size=40).input_size == 40
    same = write_folder(tmp_path / "same", sizes=((48, 48),), per_class=(2, 1))
    assert load_data(str(same)).input_size == 48


def test_an_archive_gives_the_folder_s_images(shapes: Path, tmp_path: Path) -> None:
    folder = load_data(str(shapes), input_size=24)
    archive = load_data(str(tar_of(shapes, tmp_path / "shapes.tar.gz")), input_size=24)
    for key in ("train_x", "train_y", "test_x", "final_x"):
        assert torch.equal(getattr(folder, key), getattr(archive, key)), key
    assert archive.classes == folder.classes and archive.mean == folder.mean


def test_val_fraction_carves_the_same_images_of_every_class(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", per_class=(10, 2), splits=("train", "test"), sizes=((16, 16),))
    first = load_data(str(root), val_fraction=0.2)
    again = load_data(str(root), val_fraction=0.2, subset=24)  # another cache entry, the same carving
    assert first.split == "val" and first.test_y.bincount().tolist() == [2, 2, 2]
    assert first.train_y.bincount().tolist() == [8, 8, 8] and first.final_x.shape[0] == 6
    assert torch.equal(first.test_x, again.test_x)


def test_the_input_size_option_reads_a_side_or_a_square() -> None:
    assert parse_input_size("64") == 64 and parse_input_size("96x96") == 96 and parse_input_size(None) is None
    for bad in ("64x48", "abc", "4", "100000"):
        with pytest.raises(UserError):
            parse_input_size(bad)


def _bomb(path: Path) -> None:
    Image.new("1", (8000, 8000)).save(path)  # 64M pixels in a few kB


def _member(archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(archive, "w") as tar:
        tar.addfile(info, io.BytesIO(data))
    return archive


def _link_member(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _damaged(change):
    """A maker of a small valid folder that `change(root)` then damages."""
    def make(root: Path) -> Path:
        write_folder(root, per_class=(2, 1), splits=("train", "val"))
        change(root)
        return root
    return make


def _empty_val(root: Path) -> Path:
    write_folder(root, per_class=(2,), splits=("train",))
    (root / "val").mkdir()
    return root


BAD = [
    ("one class", lambda r: write_folder(r, classes=1, per_class=(2, 1), splits=("train", "val")), "at least 2"),
    ("classes differ", _damaged(lambda r: (r / "val" / "c01-square").rename(r / "val" / "other")),
     "validation split lacks c01-square"),
    ("empty split", _empty_val, "no held-out split"),
    ("0-byte image", _damaged(lambda r: (r / "train" / "c00-disc" / "0.jpg").write_bytes(b"")), "0.jpg: not an image"),
    ("text posing as an image", _damaged(lambda r: (r / "val" / "c01-square" / "x.png").write_text("hello")),
     "x.png: not an image"),
    ("decompression bomb", _damaged(lambda r: _bomb(r / "train" / "c00-disc" / "big.png")), "big.png: an image of"),
    ("symlink loop", _damaged(lambda r: os.symlink(r / "train", r / "train" / "c00-disc" / "loop")), "symlink loop"),
    ("symlink out of the folder", _damaged(lambda r: os.symlink("/", r / "train" / "c00-disc" / "root")),
     "symlink out of the dataset"),
    ("FIFO named as an image", _damaged(lambda r: os.mkfifo(r / "train" / "c00-disc" / "x.jpg")), "not a regular file"),
    ("archive member with ..", lambda r: _member(r.parent / "a.tar", tarfile.TarInfo("../../x/train/cat/a.jpg")),
     "'..' part"),
    ("archive symlink member", lambda r: _member(r.parent / "b.tar", _link_member("train/cat/a.jpg", "/etc/passwd")),
     "is a link"),
]


@pytest.mark.parametrize("make, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_damaged_data_is_one_line_and_caches_nothing(make, message: str, tmp_path: Path) -> None:
    before = sorted(cache_dir().glob("*")) if cache_dir().exists() else []
    source = make(tmp_path / "d")
    with pytest.raises(UserError, match=message) as err:
        load_data(str(source), input_size=16)
    assert "\n" not in str(err.value)
    assert (sorted(cache_dir().glob("*")) if cache_dir().exists() else []) == before


def test_a_folder_too_large_for_memory_streams_unless_memory_is_asked(shapes: Path, monkeypatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.setattr(dataset_module, "MAX_MEMORY_BYTES", 10_000)
    with pytest.raises(UserError, match="in-memory path"):
        load_data(str(shapes), input_size=33, data_path="memory")
    assert load_data(str(shapes), input_size=33).streams
    with pytest.raises(UserError, match="extract the archive"):
        load_data(str(tar_of(shapes, tmp_path / "s.tar")), input_size=33, data_path="stream")


def test_streamed_batches_are_a_function_of_seed_and_step_whatever_the_workers(shapes: Path) -> None:
    from archfamily.data.streaming import StreamBatches

    data = load_data(str(shapes), input_size=24, data_path="stream")
    assert data.streams and len(data.train_x) == 18 and data.input_size == 24
    cpu = torch.device("cpu")
    one = StreamBatches(data.train_x, 4, 7, cpu, data.mean, data.std, workers=0)
    two = StreamBatches(data.train_x, 4, 7, cpu, data.mean, data.std, workers=2)
    steps = [0, 1, 5, 2, 9]  # out of order: a resume mid-epoch, and epochs 0 to 2
    for step in steps:
        x, y = one.batch(step)
        torch.testing.assert_close((x, y), two.batch(step))
        assert x.shape == (4, 3, 24, 24) and y.dtype == torch.int64
    assert not torch.equal(one.batch(0)[0], one.batch(4)[0])  # the next epoch: another order


def test_a_streamed_run_trains_and_measures_every_split(shapes: Path, run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        done = run_cli("train", "--spec", "wrn-10-1", "--data", str(shapes), "--input-size", "24", "--epochs", "1",
                       "--data-path", "stream", "--threads", "1", "--out", str(run))
    finally:
        torch.set_num_threads(threads)  # the CLI ran in this process
    assert done.code == 0, done.err
    assert json.loads((run / "run.json").read_text())["provenance"]["threads"] == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_images"] == 9 and "final_test_error" in metrics and metrics["data"]["input_size"] == 24


def test_train_derive_scale_export_and_timm_load_on_a_user_s_folder(shapes: Path, run_cli, tmp_path: Path) -> None:
    run = tmp_path / "train"
    done = run_cli("train", "--spec", "wrn-10-1", "--data", str(shapes), "--input-size", "24", "--epochs", "1",
                   "--out", str(run))
    assert done.code == 0, done.err
    assert "val error" in done.out and "test/ error" in done.out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["num_classes"] == 3 and metrics["spec"]["input_size"] == 24 and "final_test_error" in metrics

    family = tmp_path / "derive"
    done = run_cli("derive", "--preset", "smoke", "--base", "wrn-10-1", "--data", str(shapes), "--input-size", "24",
                   "--out", str(family))
    assert done.code == 0, done.err
    document = json.loads((family / "family.json").read_text())
    assert document["data"]["label_names"] == ["c00-disc", "c01-square", "c02-stripes"]
    assert document["base"]["num_classes"] == 3 and document["base"]["input_size"] == 24
    budget = document["base_params"] // 2
    done = run_cli("scale", "--family", str(family), "--params", str(budget), "--json")
    assert done.code == 0, done.err and json.loads(done.out)["spec"]["num_classes"] == 3

    for args in (["--family", str(family), "--params", str(budget)],
                 ["--spec", str(run / "model.safetensors"), "--weights", str(run / "model.safetensors")]):
        folder = tmp_path / f"export-{args[0][2:]}"
        done = run_cli("export", *args, "--out", str(folder))
        assert done.code == 0, done.err
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a family member is exported untrained
            model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        cfg = resolve_model_data_config(model)
        assert model.num_classes == 3 and cfg["input_size"] == (3, 24, 24)
        assert list(cfg["mean"]) == document["data"]["mean"]
        assert model.pretrained_cfg["label_names"] == ["c00-disc", "c01-square", "c02-stripes"]
        assert model(torch.zeros(1, 3, 24, 24)).shape == (1, 3)
    _, saved, _ = load_model(run / "model.safetensors")
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), saved.eval()(x))


@pytest.fixture(scope="module")
def lcnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """timm's lcnet_050 with ImageNet's 1000-class head, as a pretrained weights file (random weights: nothing is
    downloaded here, but timm loads them exactly as it loads its own)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "lcnet_050.safetensors"
    save_file(timm.create_model("lcnet_050").state_dict(), str(path))
    return path


def test_pretrained_weights_load_through_timm_with_the_head_reset(lcnet_weights: Path) -> None:
    from safetensors.torch import load_file

    from archfamily.models.pretrained import pretrained_network
    from archfamily.specs import base_spec, for_data

    spec = for_data(base_spec("timm:lcnet_050"), 3, 32)
    model = pretrained_network(spec, str(lcnet_weights))
    saved = load_file(str(lcnet_weights))
    assert torch.equal(model.conv_stem.weight, saved["conv_stem.weight"])
    assert model.num_classes == 3 and model.get_classifier().out_features == 3


def test_a_pretrained_run_trains_with_timm_s_preprocessing_and_the_transfer_recipe(
        shapes: Path, lcnet_weights: Path, run_cli, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    from timm.data import IMAGENET_DEFAULT_MEAN

    run = tmp_path / "run"
    done = run_cli("train", "--spec", "timm:lcnet_050", "--pretrained-file", str(lcnet_weights), "--data", str(shapes),
                   "--input-size", "32", "--epochs", "0.5", "--out", str(run))
    assert done.code == 0, done.err
    config = json.loads((run / "run.json").read_text())["config"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["recipe"] == "transfer" and config["pretrained"]["file"] == str(lcnet_weights)
    assert metrics["data"]["mean"] == list(IMAGENET_DEFAULT_MEAN)  # the weights' cfg's, not the data's own
    other = tmp_path / "other.safetensors"
    save_file({"conv_stem.weight": torch.zeros(2, 2)}, str(other))
    for args, message in ((["--pretrained-file", str(other)], "cannot load them"),
                          (["--pretrained-file", str(tmp_path / "missing.safetensors")], "not found")):
        done = run_cli("train", "--spec", "timm:lcnet_050", *args, "--data", str(shapes), "--input-size", "32",
                       "--epochs", "0.5", "--out", str(tmp_path / "bad"))
        assert done.code == 2 and message in done.err and "Traceback" not in done.err, done.err
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_a_study_plan_takes_a_user_s_data_and_sizes_its_networks_for_it(tmp_path: Path) -> None:
    from archfamily.study.plan import load_plan

    shapes = write_folder(tmp_path / "d", per_class=(5, 2), splits=("train", "test"))
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(f'name = "shapes"\nbudgets = ["10k"]\n[base]\nspec = "wrn-10-1"\n'
                         f'[data]\npath = "{shapes}"\ninput_size = 24\nval_fraction = 0.2\n'
                         f'[recipe]\nname = "fast"\nepochs = 1\n[prune.fisher]\n[arms.copycat]\nrule = "copycat"\n')
    plan = load_plan(plan_file)
    assert plan.base_spec.num_classes == 3 and plan.base_spec.input_size == 24
    assert plan.data_settings == {"input_size": 24, "val_fraction": 0.2, "data_path": "auto"}
