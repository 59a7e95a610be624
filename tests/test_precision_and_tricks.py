"""bf16 training where the CPU has it, and the recipe's airbench tricks: alternating flips, translation,
Lookahead (resumed exactly), mirror-and-shift TTA, and `--recipe-set`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from archfamily.training import precision
from archfamily.training.evaluation import _shifted, tta_logits
from archfamily.data.batches import BatchStream, cutout_mask
from archfamily.models.checkpoint import RunCheckpoint
from archfamily.data.dataset import ImageData, in_memory
from archfamily.errors import UserError
from archfamily.models import build_model
from archfamily.training.recipes import FAST, training_recipe, with_overrides
from archfamily.training.runs import _check_run_dir
from archfamily.specs import base_spec
from archfamily.training.trainer import Trainer
from archfamily.cli.main import main

CPU = torch.device("cpu")


def _data(n: int = 64) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    return in_memory(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(n) % 10,
                   torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(20) % 10, "fake")


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.resolve_precision("auto", CPU) == "fp32"
    assert precision.resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve_precision("auto", CPU) == "bf16"
    assert precision.resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        precision.resolve_precision("fp16", CPU)


def test_bf16_step_runs_under_autocast_and_keeps_fp32_weights() -> None:
    torch.manual_seed(0)
    trainer = Trainer(build_model(base_spec("wrn-10-1")), _data(), FAST.with_batch_size(16), CPU, precision="bf16")
    seen = []
    hook = trainer.model.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss = trainer.train_step()
    hook.remove()
    assert seen == [torch.bfloat16] and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert 0 <= trainer.evaluate() <= 100


def test_alternating_flip_shows_every_image_once_each_way_over_two_epochs() -> None:
    data = _data(32)
    stream = BatchStream(data.train_x, data.train_y, 32, seed=3, device=CPU, mean=data.mean, std=data.std, translate=0, flip="alternating")
    stream.mean, stream.std = torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 1 / 255)  # batches as raw pixels
    originals = {bytes(img.numpy()): i for i, img in enumerate(data.train_x)}
    mirrors = {bytes(img.flip(2).numpy()): i for i, img in enumerate(data.train_x)}
    for epoch_pair in (0, 2):
        flipped = []
        for step in (epoch_pair, epoch_pair + 1):  # one batch is one epoch here
            x, _ = stream.batch(step)
            images = x.round().to(torch.uint8)
            flipped.append({mirrors[bytes(img.numpy())] for img in images if bytes(img.numpy()) in mirrors
                            and bytes(img.numpy()) not in originals})
        assert flipped[0].isdisjoint(flipped[1])
        assert len(flipped[0] | flipped[1]) == 32  # every image mirrored in exactly one of the two epochs


def test_translate_bounds_the_crop_offset() -> None:
    data = _data(16)
    stream = BatchStream(data.train_x, data.train_y, 16, seed=0, device=CPU, mean=data.mean, std=data.std, translate=0)
    stream.mean, stream.std = torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 1 / 255)
    x, _ = stream.batch(0)
    flipped_or_not = [torch.equal(a, b) or torch.equal(a, b.flip(2)) for a, b in
                      zip(x.round().to(torch.uint8), data.train_x[stream._permutation(0)[0]])]
    assert all(flipped_or_not)  # translate 0: no shift at all


@pytest.mark.parametrize("changes", [{"lookahead_k": 4}, {"optimizer": "muon", "lr": 0.005}], ids=["lookahead", "muon"])
def test_optimizer_state_resumes_bit_identically(tmp_path: Path, changes: dict) -> None:
    recipe = replace(FAST.with_batch_size(16).shortened(3), **changes)

    def trainer() -> Trainer:
        torch.manual_seed(0)
        return Trainer(build_model(base_spec("wrn-10-1")), _data(), recipe, CPU, seed=1)

    whole = trainer()
    whole.fit(11)
    first = trainer()
    checkpoint = RunCheckpoint(tmp_path / "ckpt")
    first.fit(6, checkpoint, every=6)  # between Lookahead's syncs (at 4 and 8); Muon's momenta, AdamW's moments
    second = trainer()
    second.resume(checkpoint)
    second.fit(11)
    for (name, a), b in zip(whole.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_mirror_shift_tta_weights_the_views_as_airbench() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    moved = _shifted(x, 1, 1)
    assert torch.equal(moved[:, :, 1:, 1:], x[:, :, :-1, :-1]) and torch.equal(moved[:, :, 0, 1:], x[:, :, 0, :-1])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    expected = 0.5 * (model(x) + model(x.flip(3))) + 0.25 * sum(
        model(_shifted(x, d, d)) + model(_shifted(x, d, d).flip(3)) for d in (-1, 1))
    assert torch.allclose(tta_logits(model, x, "mirror-shift"), expected, atol=1e-5)


def test_recipe_fields_set_by_name_are_parsed_and_bounded() -> None:
    recipe = with_overrides(FAST, {"flip": "alternating", "translate": "2", "nesterov": "false", "lr": "0.1"})
    assert (recipe.flip, recipe.translate, recipe.nesterov, recipe.lr) == ("alternating", 2, False, 0.1)
    assert training_recipe("fast", "wrn", 5, 256, None, {"lr": "0.1"}).lr == pytest.approx(0.2)  # then scaled
    for bad, message in (({"epochs": "3"}, "cannot be set"), ({"translate": "1.5"}, "an integer"),
                         ({"lr": "nan"}, r"in \[0.0, 100.0\]"), ({"flip": "sideways"}, "unknown flip"),
                         ({"nesterov": "yes"}, "true or false")):
        with pytest.raises(UserError, match=message):
            with_overrides(FAST, bad)


def test_recipe_set_bad_item_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--spec", "wrn-10-1", "--out", str(tmp_path / "r"), "--recipe-set", "flip"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert not (tmp_path / "r").exists()


def test_run_json_from_before_precision_resumes_as_fp32(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"config": {"seed": 0}, "provenance": {}}')
    _check_run_dir(out, {"seed": 0, "precision": "fp32"}, resume=True)
    with pytest.raises(UserError, match=r"other settings \(precision\)"):
        _check_run_dir(out, {"seed": 0, "precision": "bf16"}, resume=True)


def test_progress_in_a_log_is_one_line_per_refresh() -> None:
    import io

    from archfamily.progress import progress_bar

    log = io.StringIO()
    with progress_bar(total=3, desc="train", file=log, mininterval=0, maxinterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) >= 2 and lines[-1].startswith("train: 100%")


def test_progress_in_a_log_is_a_line_every_30_s(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import tqdm.std

    from archfamily.progress import LOG_INTERVAL_S, progress_bar

    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])  # the bar's clock: one step a second, 300 steps
    log = io.StringIO()  # not a terminal, like a job's log file
    with progress_bar(total=300, desc="prune", file=log) as bar:
        for step in range(300):
            now[0] += 1.0
            bar.set_postfix(params=f"{10 ** (step % 5):,}", refresh=False)  # redraws of differing lengths
            bar.update(1)
    text = log.getvalue()
    lines = text.split("\n")[:-1]
    assert "\r" not in text and text.endswith("\n") and not any(line.endswith(" ") for line in lines)
    assert LOG_INTERVAL_S == 30 and len(lines) == 1 + 300 // 30  # the start, then a line every 30 s (the last at 100%)
    assert lines[0].startswith("prune:   0%") and lines[-1].startswith("prune: 100%")


def test_auto_keeps_the_precision_a_resumed_run_recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from archfamily.training.runs import recorded_setting

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"config": {"seed": 0}, "provenance": {}}')  # from before precision existed
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve_precision("auto", CPU, recorded_setting(out, "precision")) == "fp32"
    assert precision.resolve_precision("bf16", CPU, recorded_setting(out, "precision")) == "bf16"  # then refused
    assert recorded_setting(tmp_path / "none", "precision") is None


def test_norm_bias_lr_scales_the_rate_of_norm_weights_and_biases_only() -> None:
    recipe = replace(FAST.with_batch_size(16).shortened(3), norm_bias_lr=8.0)
    model = build_model(base_spec("wrn-10-1"))
    trainer = Trainer(model, _data(), recipe, CPU, seed=1)
    trainer.train_step()
    trainer.train_step()  # the rate of the second step: past the warm-up's 0
    one_d = {id(p) for p in model.parameters() if p.ndim <= 1}
    rates = {id(p): (g["lr"], g["weight_decay"]) for g in trainer.optimizer.param_groups for p in g["params"]}
    lr = recipe.lr_at(1 / trainer.steps_per_epoch)
    assert lr > 0 and all(rates[id(p)] == ((8.0 * lr, 0.0) if id(p) in one_d else (lr, recipe.weight_decay))
                          for p in model.parameters())
    assert training_recipe("fast2", "wrn", overrides={"norm_bias_lr": "16"}).norm_bias_lr == 16.0


def test_muon_steps_conv_filters_and_adamw_the_rest() -> None:
    recipe = training_recipe("fast2", "wrn", overrides={"optimizer": "muon", "lr": "0.005"})
    model = build_model(base_spec("wrn-10-1"))
    trainer = Trainer(model, _data(), replace(recipe.with_batch_size(16), epochs=3), CPU, seed=1)
    trainer.train_step()
    trainer.train_step()
    state = trainer.optimizer.state
    assert all(state[p]["use_muon"] == (p.ndim == 4) for p in model.parameters())
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(decay[id(p)] == (0.0 if p.ndim <= 1 else recipe.weight_decay) for p in model.parameters())
    with pytest.raises(UserError, match="unknown optimizer 'adam'"):
        training_recipe("fast2", "wrn", overrides={"optimizer": "adam"})


def test_cutout_blanks_one_clipped_square_per_image_and_leaves_the_crops_alone() -> None:
    data = _data(16)
    plain = BatchStream(data.train_x, data.train_y, 16, seed=5, device=CPU, mean=data.mean, std=data.std, translate=2)
    cut = BatchStream(data.train_x, data.train_y, 16, seed=5, device=CPU, mean=data.mean, std=data.std, translate=2, cutout=8)
    x, _ = plain.batch(3)
    y, _ = cut.batch(3)
    blank = (x != y).any(dim=1)  # pixels cutout changed, per image
    assert torch.equal(y[~blank[:, None].expand_as(y)], x[~blank[:, None].expand_as(x)])  # same crops and flips
    assert torch.all(y.permute(1, 0, 2, 3)[:, blank] == 0)  # what changed became the dataset mean
    for image in blank:
        rows, cols = image.any(dim=1).nonzero(), image.any(dim=0).nonzero()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8  # one square of side at most 8, clipped at the border
        assert int(image.sum()) == len(rows) * len(cols)
    mask = cutout_mask(64, 32, 32, 8, torch.Generator().manual_seed(0), CPU)
    assert mask.sum(dim=(1, 2, 3)).max() == 64 and mask.sum(dim=(1, 2, 3)).min() < 64  # whole squares and clipped ones
