"""The trainer: exact resume (EMA included), no-decay groups, flip TTA, torch.compile, and DDP on gloo."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from archfamily.data.batches import normalize
from archfamily.models.checkpoint import RunCheckpoint, load_model, save_model
from archfamily.data.cifar import MEAN, STD
from archfamily.data.dataset import ImageData, in_memory
from archfamily.errors import UserError
from archfamily.training.evaluation import count_errors
from archfamily.models import build_model
from archfamily.training.recipes import FAST, WRN, Recipe
from archfamily.specs import base_spec
from archfamily.training.trainer import Trainer, optimizer_for

CPU = torch.device("cpu")


def _data() -> ImageData:
    gen = torch.Generator().manual_seed(0)
    return in_memory(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(64) % 10,
                   torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(20) % 10, "fake")


def _trainer(recipe: Recipe) -> Trainer:
    torch.manual_seed(0)
    return Trainer(build_model(base_spec("wrn-10-1")), _data(), recipe, CPU, seed=1)


def test_resumed_training_equals_uninterrupted(tmp_path: Path) -> None:
    recipe = Recipe(epochs=3, batch_size=16, lr=0.1, weight_decay=5e-4, milestones=(1, 2), gamma=0.2)
    whole = _trainer(recipe)
    whole.fit(10)

    first = _trainer(recipe)
    checkpoint = RunCheckpoint(tmp_path / "ckpt")
    first.fit(6, checkpoint, every=3)
    second = _trainer(recipe)  # a fresh process: new model, new optimizer
    second.resume(checkpoint)
    assert second.step == 6
    second.fit(10)
    for (name, a), b in zip(whole.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(list((tmp_path / "ckpt").glob("ckpt-*.safetensors"))) == 1


def test_ema_state_resumes_bit_identically(tmp_path: Path) -> None:
    recipe = replace(FAST.with_batch_size(16).shortened(2), ema_decay=0.99)
    whole = _trainer(recipe)
    whole.fit(6)
    first = _trainer(recipe)
    checkpoint = RunCheckpoint(tmp_path / "ckpt")
    first.fit(3, checkpoint, every=3)
    second = _trainer(recipe)
    second.resume(checkpoint)
    second.fit(6)
    ema, resumed = whole.ema.module.state_dict(), second.ema.module.state_dict()
    assert all(torch.equal(ema[k], resumed[k]) for k in ema)
    assert not torch.equal(ema["fc.weight"], whole.model.state_dict()["fc.weight"])  # an average, not a copy
    assert whole.eval_model is whole.ema.module


def test_no_weight_decay_on_exactly_the_norm_weights_and_biases() -> None:
    model = build_model(base_spec("densenet-bc-40"))
    groups = optimizer_for(model, FAST).param_groups
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    norms_and_biases = {id(p) for m in model.modules() for name, p in m.named_parameters(recurse=False)
                        if isinstance(m, torch.nn.BatchNorm2d) or name == "bias"}
    assert no_decay == norms_and_biases
    decayed = [g for g in groups if g["weight_decay"] == FAST.weight_decay]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) and decayed
    assert [g["weight_decay"] for g in optimizer_for(model, WRN).param_groups] == [WRN.weight_decay]  # the paper's


def test_flip_tta_adds_the_mirrored_images_logits() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    images, labels = _data().test_x, _data().test_y
    x = normalize(images, MEAN, STD)
    plain = model(x).argmax(1)
    tta = (model(x) + model(x.flip(3))).argmax(1)
    assert not torch.equal(plain, tta)  # this model is not mirror-symmetric
    assert count_errors(model, images, labels, MEAN, STD, CPU)[0] == int((plain != labels).sum())
    assert count_errors(model, images, labels, MEAN, STD, CPU, tta="mirror")[0] == int((tta != labels).sum())


def test_measuring_the_test_error_shows_a_bar_and_a_pruning_runs_checks_do_not(capsys) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    images, labels = _data().test_x, _data().test_y
    shown = count_errors(model, images, labels, MEAN, STD, CPU, batch_size=8, desc="test error")
    err = capsys.readouterr().err  # not a terminal: the bar's lines
    assert err.splitlines()[-1].startswith("test error: 100%") and "20/20" in err and "\r" not in err
    assert count_errors(model, images, labels, MEAN, STD, CPU, batch_size=8) == shown
    assert capsys.readouterr().err == ""
    trainer = _trainer(FAST)
    trainer.evaluate()  # as a pruning run checks, every few steps: silent
    assert capsys.readouterr().err == ""
    trainer.evaluate(desc="test error")  # as `train` measures its network
    assert capsys.readouterr().err.splitlines()[-1].startswith("test error: 100%")


def test_a_test_error_is_written_to_the_4_decimals_a_count_of_images_has() -> None:
    import json

    from archfamily.training.evaluation import error_percent

    assert 100.0 * (339 / 1000) == 33.900000000000006 and 100.0 * (1284 / 10_000) == 12.839999999999998
    assert json.dumps([error_percent(339, 1000), error_percent(1284, 10_000), error_percent(1, 3)]) == \
        "[33.9, 12.84, 33.3333]"

    class Guess0(torch.nn.Module):  # class 0 for every image: wrong on every image of another class
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.zeros(x.shape[0], dtype=torch.long), 10).float()

    labels = (torch.arange(1000) >= 661).long()  # 339 of 1000 images not of class 0
    images = torch.zeros(1000, 3, 32, 32, dtype=torch.uint8)
    assert _trainer(FAST).evaluate(images, labels, model=Guess0()) == 33.9


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_step_trains_on_the_cpu_like_eager() -> None:
    recipe = FAST.with_batch_size(16).shortened(1)
    eager = _trainer(recipe)
    compiled = Trainer(build_model(base_spec("wrn-10-1")), _data(), recipe, CPU, seed=1, compile=True)
    compiled.model.load_state_dict(eager.model.state_dict())
    for _ in range(2):
        torch.testing.assert_close(compiled.train_step(), eager.train_step(), rtol=1e-4, atol=1e-4)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_model_file_round_trip(tmp_path: Path) -> None:
    model = build_model(base_spec("densenet-bc-40"))
    save_model(tmp_path / "m.safetensors", model, {"test_error": "12.5"})
    spec, again, meta = load_model(tmp_path / "m.safetensors")
    assert spec == model.spec and meta["test_error"] == "12.5"
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_a_file_that_is_no_model_is_named_so_not_by_the_safetensors_parser(run_cli, tmp_path: Path) -> None:
    import json

    from archfamily.specs import spec_to_dict

    spec_file = tmp_path / "member.json"  # what `scale --out` writes: a spec, not a trained model
    spec_file.write_text(json.dumps(spec_to_dict(base_spec("wrn-10-1"))))
    result = run_cli("measure", str(spec_file), "--out", str(tmp_path / "m"), "--test-subset", "100")
    assert result.code == 2 and f"{spec_file}: not a model file (safetensors); it holds JSON" in result.err
    assert "deserializing" not in result.err and len(result.err.strip().splitlines()) == 1
    cut = tmp_path / "cut.safetensors"
    save_model(cut, build_model(base_spec("wrn-10-1")))
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(UserError, match="a damaged model file \\(safetensors\\): shorter than its header says"):
        load_model(cut)


def test_two_process_gloo_ddp_step(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("ddp_step.py")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(script), str(tmp_path)], check=True, env=env, timeout=300, capture_output=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["before"], ranks[1]["before"])
    assert torch.equal(ranks[0]["after"], ranks[1]["after"])  # gradients were averaged over both ranks
    assert not torch.equal(ranks[0]["before"], ranks[0]["after"])
    assert ranks[0]["error"] == ranks[1]["error"]  # errors are all-reduced over the two shards


def test_every_metrics_json_in_the_studies_reads_with_the_one_reader() -> None:
    from archfamily.training.metrics_file import read_metrics

    files = sorted((Path(__file__).resolve().parent.parent / "studies").rglob("metrics.json"))
    assert len(files) > 10  # trainings from before precision and TTA were recorded, and measured networks
    for path in files:
        m = read_metrics(path)
        assert (m.params, m.macs) == (m.spec.num_params(), m.spec.num_macs()) and 0 <= m.test_error <= 100


def test_metrics_json_as_train_and_measure_write_it_and_as_older_trainings_wrote_it(tmp_path: Path) -> None:
    import json

    from archfamily.errors import UserError
    from archfamily.specs import spec_to_dict
    from archfamily.training.metrics_file import metrics_document, read_metrics, write_metrics

    spec = base_spec("wrn-10-1")
    trained = write_metrics(tmp_path / "train", metrics_document(
        spec, {"test_error": 12.5, "test_error_tta": 11.0}, 200, 3, recipe=FAST.to_dict(), precision="fp32",
        seconds=4.5))
    m = read_metrics(trained.parent)
    assert (m.test_error, m.test_images, m.spec, m.seed, m.seconds) == (12.5, 200, spec, 3, 4.5)
    assert m.document["test_error_tta"] == 11.0 and m.document["precision"] == "fp32"
    measured = read_metrics(write_metrics(tmp_path / "measure", metrics_document(
        spec, {"test_error": 40.0}, 100, None, source="pruned-at-1.safetensors", data="built-in")))
    assert (measured.seed, measured.seconds, measured.document["source"]) == (None, None, "pruned-at-1.safetensors")
    older = {"test_error": 20.0, "test_images": 10000, "params": spec.num_params(), "macs": spec.num_macs(),
             "recipe": FAST.to_dict(), "seed": 0, "spec": spec_to_dict(spec), "seconds": 60.0}  # no precision
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "metrics.json").write_text(json.dumps(older))
    assert read_metrics(tmp_path / "older").document == json.loads(json.dumps(older))
    for key, value, message in (("test_error", 101, "test_error must be"), ("params", 5, "params and macs are not"),
                                ("seed", "zero", "seed must be")):
        (tmp_path / "older" / "metrics.json").write_text(json.dumps({**older, key: value}))
        with pytest.raises(UserError, match=f"metrics.json: {message}"):
            read_metrics(tmp_path / "older")
