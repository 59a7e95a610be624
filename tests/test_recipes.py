"""Recipes: schedules as pure functions of the step, shortening, batch-size scaling, recipe choice."""
from __future__ import annotations

import json

import pytest
import torch

from archfamily.errors import SettingError, UserError
from archfamily.training.recipes import FAST, FINETUNE, FINETUNE_DENSENET, WRN, finetune_recipe_for, training_recipe


def test_step_schedule_is_the_papers() -> None:
    assert [WRN.lr_at(e) for e in (0, 59.9, 60, 120, 160)] == [0.1, 0.1, 0.1 * 0.2, 0.1 * 0.2**2, 0.1 * 0.2**3]
    short = WRN.shortened(10)
    assert short.milestones == (3.0, 6.0, 8.0) and short.lr_at(3) == 0.1 * 0.2


def test_one_cycle_warms_up_peaks_and_decays_to_zero() -> None:
    fast = FAST.shortened(10)
    assert fast.lr_at(0) == 0 and fast.lr_at(1.5) == pytest.approx(fast.lr) and fast.lr_at(10) == 0
    assert fast.lr_at(0.75) == pytest.approx(fast.lr / 2) and fast.lr_at(5.75) == pytest.approx(fast.lr / 2)
    points = [fast.lr_at(e / 10) for e in range(101)]
    peak = points.index(max(points))
    assert points[:peak + 1] == sorted(points[:peak + 1]) and points[peak:] == sorted(points[peak:], reverse=True)
    assert [FAST.shortened(10).lr_at(e / 10) for e in range(101)] == points  # a pure function of the step
    cosine = fast.__class__(**{**fast.to_dict(), "decay": "cosine"})
    assert cosine.lr_at(5.75) == pytest.approx(fast.lr / 2) and cosine.lr_at(3) > fast.lr_at(3)


def test_batch_size_scales_the_learning_rate_linearly() -> None:
    half = FAST.with_batch_size(64)
    assert half.batch_size == 64 and half.lr == pytest.approx(FAST.lr / 2)
    with pytest.raises(SettingError, match="^batch_size must be a whole number from 1 to 50,000, got 0$"):
        FAST.with_batch_size(0)


def test_finetune_recipe_takes_epochs_without_dividing_by_zero() -> None:
    recipe = training_recipe("finetune", "wrn", epochs=2)
    assert recipe.epochs == 2 and recipe.lr == FINETUNE.lr
    with pytest.raises(UserError, match="no epochs of its own"):
        training_recipe("finetune", "wrn")
    with pytest.raises(SettingError, match="^epochs must be above 0"):
        training_recipe("fast", "wrn", epochs=0)
    with pytest.raises(SettingError, match=r"^ema must be in \[0, 1\)"):
        training_recipe(None, "wrn", ema=1.0)
    with pytest.raises(UserError, match="unknown recipe"):
        training_recipe("sgd", "wrn")


def test_a_run_without_a_recipe_name_gets_the_papers_for_its_family() -> None:
    assert training_recipe(None, "wrn") is WRN and training_recipe(None, "densenet_bc").epochs == 300
    assert training_recipe("fast", "wrn", epochs=10, batch_size=64).lr == pytest.approx(FAST.lr / 2)


def test_densenet_prunes_with_its_seed_codes_fine_tune() -> None:
    assert finetune_recipe_for("densenet_bc") is FINETUNE_DENSENET
    assert (FINETUNE_DENSENET.lr, FINETUNE_DENSENET.weight_decay, FINETUNE_DENSENET.batch_size) == (1e-3, 1e-4, 64)
    assert finetune_recipe_for("wrn") is FINETUNE and finetune_recipe_for("resnet") is FINETUNE


@pytest.mark.parametrize("args, message", [
    (("--ema", "1.0"), "--ema must be in [0, 1), got 1.0"),
    (("--epochs", "0"), "--epochs must be above 0 and at most 10,000, got 0"),
    (("--recipe-set", "lr=fast"), "--recipe-set lr: must be a number, got 'fast'"),
    (("--recipe-set", "epochs=3"), "--recipe-set: 'epochs' cannot be set; one of lr,"),
    (("--recipe", "finetune"), "recipe finetune has no epochs of its own; give --epochs"),
])
def test_the_cli_names_the_flag_of_a_setting_the_library_refuses(run_cli, tmp_path, args, message: str) -> None:
    result = run_cli("train", "--spec", "wrn-10-1", *args, "--out", str(tmp_path / "run"))
    assert result.code == 2 and result.err.startswith(f"archfamily: error: {message}"), result.err
    assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_setting_error_names_settings_as_asked_and_survives_pickling() -> None:
    import pickle

    error = SettingError("{until_params} {count:,} must be below {base} {name!r}", count=70_000, name="{x}")
    assert isinstance(error, UserError) and error.settings == ("until_params", "base")
    assert str(error) == "until_params 70,000 must be below base '{x}'"  # a value's braces are only text
    assert error.named({"until_params": "--until-params"}) == "--until-params 70,000 must be below base '{x}'"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_initial_checkpoint_starts_from_its_weights_and_is_verified(run_cli, tmp_path) -> None:
    from safetensors.torch import load_file

    tiny = ("--epochs", "0.02", "--subset", "100", "--test-subset", "100")
    assert run_cli("train", "--spec", "wrn-10-1", *tiny, "--out", str(tmp_path / "a")).code == 0
    start = tmp_path / "a" / "model.safetensors"
    recorded = json.loads((tmp_path / "a" / "metrics.json").read_text())["recipe"]  # train's default: the kept recipe
    assert json.loads((tmp_path / "a" / "run.json").read_text())["config"]["recipe"] == "fast3"
    assert (recorded["optimizer"], recorded["lr"], recorded["weight_decay"]) == ("muon", 0.02, 0.05)
    assert (recorded["translate"], recorded["cutout"]) == (4, 12)
    result = run_cli("train", "--spec", "wrn-10-1", *tiny, "--recipe-set", "lr=0", "--initial-checkpoint", str(start),
                     "--out", str(tmp_path / "b"))
    assert result.code == 0, result.err
    before, after = load_file(str(start)), load_file(str(tmp_path / "b" / "model.safetensors"))
    weights = [k for k in before if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)  # lr 0: nothing but BN statistics moved
    for spec, file, message in (("wrn-10-2", start, "holds a different network than --spec"),
                                ("wrn-10-1", tmp_path / "none", "initial checkpoint not found")):
        result = run_cli("train", "--spec", spec, *tiny, "--initial-checkpoint", str(file), "--out", str(tmp_path / "c"))
        assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1, result.err
        assert not (tmp_path / "c").exists()
