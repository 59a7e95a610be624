"""`archfamily derive` as a user runs it: outputs, resume, and every bad input."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from safetensors.torch import save_file

from archfamily.models.checkpoint import load_model, save_model
from archfamily.pruning.derive import DeriveConfig, DeriveResult, derive
from archfamily.pruning.family_file import FAMILY_FORMAT, FAMILY_VERSION
from archfamily.models import build_model
from archfamily.pruning.run import PruneRun
from archfamily.specs import base_spec, spec_from_dict
from archfamily.training.precision import cpu_has_bf16, cpu_model

SMOKE = ("derive", "--preset", "smoke", "--device", "cpu")


def _trajectory(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trajectory.jsonl").read_text().splitlines()]


def test_smoke_run_writes_a_family(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(*SMOKE, "--out", str(out))
    assert result.code == 0, result.err
    assert "test error" in result.out

    family = json.loads((out / "family.json").read_text())
    assert family["format"] == FAMILY_FORMAT and family["version"] == FAMILY_VERSION
    assert family["method"] == "fisher" and family["seed"] == 0 and family["base_name"] == "wrn-16-1"
    assert family["provenance"]["command"][:2] == ["archfamily", "derive"]
    assert family["provenance"]["cpu"] == cpu_model() and family["provenance"]["cpu_bf16"] == cpu_has_bf16()
    assert spec_from_dict(family["base"]) == base_spec("wrn-16-1")
    steps = family["trajectory"]
    assert steps[0]["stage_ratios"] == [1.0, 1.0, 1.0] and steps[0]["test_error"] is not None
    assert all(len(s["block_ratios"]) == 6 for s in steps)
    assert [s["params"] for s in steps] == sorted((s["params"] for s in steps), reverse=True)
    assert steps[-1]["params"] <= base_spec("wrn-16-1").num_params() // 10

    lines = _trajectory(out)
    assert len(lines) == len(steps)
    assert [s["widths"] for s in steps] == [spec_from_dict(line["spec"]).prunable_widths() for line in lines]
    for line in lines:
        spec = spec_from_dict(line["spec"])
        assert spec.num_params() == line["params"] and spec.num_macs() == line["macs"]
    assert lines[-1]["test_error"] is not None
    errors = re.findall(r'"test_error": ([0-9.]+)', (out / "trajectory.jsonl").read_text())
    assert errors and all(len(e.partition(".")[2]) <= 4 for e in errors), errors  # no 33.900000000000006

    for name in ("base", "pruned-050", "pruned-025", "pruned-final"):
        spec, model, _ = load_model(out / f"{name}.safetensors")
        assert sum(p.numel() for p in model.parameters()) == spec.num_params()
    assert not (out / ".checkpoints").exists()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> DeriveResult:
    """A smoke run, made as `archfamily derive --preset smoke` makes it."""
    out = tmp_path_factory.mktemp("whole") / "run"
    return derive(DeriveConfig.from_preset("smoke"), out, "cpu", command=["archfamily", *SMOKE, "--out", str(out)])


@pytest.fixture(scope="module")
def uninterrupted(fresh: DeriveResult) -> Path:
    return fresh.out


def test_a_finished_run_returns_what_a_fresh_run_returned(fresh: DeriveResult) -> None:
    again = derive(DeriveConfig.from_preset("smoke"), fresh.out, "cpu", resume=True)
    assert again.trajectory == fresh.trajectory == _trajectory(fresh.out)
    assert (again.final_spec, again.final_error, again.prune_steps) == (fresh.final_spec, fresh.final_error,
                                                                       fresh.prune_steps)


# 0: after base training, before any prune checkpoint; 6: after the checkpoint at prune 4, before the one at 8
@pytest.mark.parametrize("die_at", [0, 6])
def test_interrupted_run_resumes_to_the_same_trajectory(run_cli, uninterrupted: Path, tmp_path: Path, monkeypatch,
                                                        die_at: int) -> None:
    cut = tmp_path / "cut"
    real_prune = PruneRun.prune

    def prune_then_die(self):
        if self.num_prunes == die_at:
            raise KeyboardInterrupt
        return real_prune(self)

    monkeypatch.setattr(PruneRun, "prune", prune_then_die)
    interrupted = run_cli(*SMOKE, "--out", str(cut))
    assert interrupted.code == 130 and "--resume" in interrupted.err
    assert not (cut / "family.json").exists() and (cut / "base.safetensors").is_file()
    if die_at:
        assert len(_trajectory(cut)) == die_at + 1  # the base and each prune step were written as they happened
    monkeypatch.setattr(PruneRun, "prune", real_prune)
    # what a SIGKILL in the middle of atomic writes leaves: their hidden temporaries
    stale = [cut / ".trajectory.jsonl.k1ll3d.tmp", cut / ".checkpoints" / "base" / ".state.json.k1ll3d.tmp"]
    for path in stale:
        path.write_text("half written")

    assert run_cli(*SMOKE, "--out", str(cut), "--resume").code == 0
    assert (cut / "trajectory.jsonl").read_bytes() == (uninterrupted / "trajectory.jsonl").read_bytes()
    assert not list(cut.rglob("*.tmp"))


def test_save_at_keeps_measured_pruned_networks_at_those_sizes(run_cli, uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(*SMOKE, "--save-at", "60k,40k", "--out", str(out))
    assert result.code == 0, result.err
    lines = _trajectory(out)
    for count in (60_000, 40_000):
        spec, model, meta = load_model(out / f"pruned-at-{count}.safetensors")
        first_below = next(line for line in lines if line["params"] <= count)  # the first prune step at or below
        assert spec.num_params() == first_below["params"] == int(meta["params"])
        assert int(meta["prune_step"]) == first_below["prune_step"]
        assert first_below["test_error"] is not None and float(meta["test_error"]) == first_below["test_error"]
        assert meta["seed"] == "0" and meta["test_images"] == "200"
    # saving more changes no other measurement or prune decision
    measured = {line["prune_step"]: line["test_error"] for line in _trajectory(uninterrupted)}
    assert [line["spec"] for line in lines] == [line["spec"] for line in _trajectory(uninterrupted)]
    assert all(line["test_error"] == measured[line["prune_step"]] for line in lines if measured[line["prune_step"]])


def test_checkpoint_option_skips_base_training(run_cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "base.safetensors"
    save_model(ckpt, build_model(base_spec("wrn-16-1")))
    result = run_cli(*SMOKE, "--checkpoint", str(ckpt), "--out", str(tmp_path / "run"))
    assert result.code == 0, result.err
    assert "train base" not in result.err
    spec, _, meta = load_model(tmp_path / "run" / "base.safetensors")  # the run keeps its base, measured
    assert spec == base_spec("wrn-16-1") and meta["source"] == str(ckpt)
    family = json.loads((tmp_path / "run" / "family.json").read_text())
    assert family["recipes"]["base"] is None and float(meta["test_error"]) == family["base_test_error"]


def test_finetune_set_is_the_fine_tune_between_prunes_and_is_recorded(run_cli, tmp_path: Path, monkeypatch) -> None:
    """`--finetune-set lr=0.05` is the rate every prune's fine-tune steps at (not the base's), family.json and the
    pruned networks record it, and a resume with another rate is refused."""
    import archfamily.pruning.derive as derive_module

    rates: list[float] = []
    real = derive_module.Trainer

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, model, data, recipe, *args, **kwargs) -> None:
            rates.append(recipe.lr)
            super().__init__(model, data, recipe, *args, **kwargs)

    monkeypatch.setattr(derive_module, "Trainer", Recording)
    ckpt, out = tmp_path / "base.safetensors", tmp_path / "run"
    save_model(ckpt, build_model(base_spec("wrn-16-1")))
    result = run_cli(*SMOKE, "--checkpoint", str(ckpt), "--finetune-set", "lr=0.05", "--out", str(out))
    assert result.code == 0, result.err
    assert rates[-1] == 0.05 and 8e-4 not in rates  # the fine-tune's Trainer is the last one made
    assert json.loads((out / "family.json").read_text())["recipes"]["finetune"]["lr"] == 0.05
    _, _, meta = load_model(out / "pruned-final.safetensors")
    assert json.loads(meta["recipe"])["finetune"]["lr"] == 0.05
    again = run_cli(*SMOKE, "--checkpoint", str(ckpt), "--finetune-set", "lr=0.1", "--out", str(out), "--resume")
    assert again.code == 2 and "other settings (finetune_set)" in again.err


def _bad_checkpoints(tmp_path: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.safetensors"
    save_model(truncated, build_model(base_spec("wrn-16-1")))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    other = tmp_path / "other.safetensors"
    save_model(other, build_model(base_spec("wrn-16-2")))
    bare = tmp_path / "bare.safetensors"
    save_file({"w": build_model(base_spec("wrn-16-1")).fc.weight.detach()}, str(bare))
    return {"truncated": truncated, "other": other, "bare": bare}


BAD_INPUTS = [
    (("--base", "vgg-16"), "unknown base network"),
    (("--base", "wrn-15-2"), "6n+4"),
    (("--data", "{tmp}/nowhere"), "dataset not found"),
    (("--data", "{tmp}"), "not a dataset folder"),
    (("--checkpoint", "{tmp}/truncated.safetensors"), "cannot read checkpoint"),
    (("--checkpoint", "{tmp}/missing.safetensors"), "checkpoint not found"),
    (("--checkpoint", "{tmp}/other.safetensors"), "mismatched checkpoint"),
    (("--checkpoint", "{tmp}/bare.safetensors"), "not an archfamily model file"),
    (("--until-params", "175066"), "must be below the base"),
    (("--until-params", "1M"), "must be below the base"),
    (("--until-params", "lots"), "malformed --until-params"),
    (("--until-params", "10"), "below the smallest network"),
    (("--method", "magic"), "Invalid value for '--method'"),
    (("--prune-every", "0"), "Invalid value for '--prune-every'"),
    (("--save-at", "1"), "--save-at 1 is outside the pruning run"),
    (("--save-at", "200k"), "outside the pruning run"),
    (("--save-at", "many"), "malformed --save-at"),
    (("--method", "fisher-cost", "--cost", "latency"), "--cost latency needs --on"),
    (("--cost", "latency", "--on", "cpu"), "use it with --method fisher-penalty (per millisecond the better"),
    (("--on", "cpu:1"), "give --cost latency with it"),
    (("--on", "tpu", "--cost", "latency", "--method", "fisher-cost"), "unknown device 'tpu'"),
    (("--finetune-set", "lr=fast"), "--finetune-set lr: must be a number"),
    (("--finetune-set", "epochs=3"), "--finetune-set: 'epochs' cannot be set"),
    (("--finetune-set", "lr"), "expected FIELD=VALUE"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[a[0] + "=" + a[1] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_cli, tmp_path: Path, args, message: str) -> None:
    _bad_checkpoints(tmp_path)
    out = tmp_path / "out"
    result = run_cli(*SMOKE, "--out", str(out), *(a.format(tmp=tmp_path) for a in args))
    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert not out.exists()


def test_out_holding_another_run_needs_resume(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_cli(*SMOKE, "--out", str(out)).code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_cli(*SMOKE, "--out", str(out))
    assert again.code == 2 and "already holds a run; pass --resume" in again.err
    other = run_cli(*SMOKE, "--out", str(out), "--seed", "1", "--resume")
    assert other.code == 2 and "other settings (seed)" in other.err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    done = run_cli(*SMOKE, "--out", str(out), "--resume")  # resuming a finished run is a no-op
    assert done.code == 0 and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_out_that_is_not_a_run_is_refused(run_cli, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli(*SMOKE, "--out", str(tmp_path))
    assert result.code == 2 and "holds no archfamily run" in result.err


def test_derive_under_torchrun_with_two_gloo_processes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "archfamily", *SMOKE, "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 reports, once
    family = json.loads((out / "family.json").read_text())
    assert family["provenance"]["world_size"] == 2
    assert all((out / f"{name}.safetensors").is_file() for name in ("base", "pruned-050", "pruned-final"))


def test_a_run_from_before_a_setting_existed_still_resumes(tmp_path: Path) -> None:
    from archfamily.training.runs import _check_run_dir

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"config": {"seed": 0}}))  # written before save_at existed
    _check_run_dir(out, {"seed": 0, "save_at": []}, resume=True)
    with pytest.raises(Exception, match=r"other settings \(save_at\)"):
        _check_run_dir(out, {"seed": 0, "save_at": [1000]}, resume=True)
    _check_run_dir(out, {"seed": 0, "tta": False}, resume=True)  # a flag added later, left off
    with pytest.raises(Exception, match=r"other settings \(tta\)"):
        _check_run_dir(out, {"seed": 0, "tta": True}, resume=True)
    with pytest.raises(Exception, match=r"other settings \(seed\)"):
        _check_run_dir(out, {"seed": 1}, resume=True)  # 0 is a value, not an unset flag


def test_a_prune_checkpoint_from_before_save_at_keeps_its_saved_milestones() -> None:
    from archfamily.pruning.derive import _saved_stems

    assert _saved_stems({"milestones": [0.25, 0.5]}) == {"pruned-025", "pruned-050"}  # fractions, as once written
    assert _saved_stems({"milestones": ["pruned-050", "pruned-at-40000"]}) == {"pruned-050", "pruned-at-40000"}
    assert _saved_stems(None) == set()
