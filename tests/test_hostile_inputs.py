"""Hostile model files, plans, study folders, zoos and numbers, through the real CLI: refused in one line with
exit 2 and nothing written or deleted (tests/fuzz_cli.py; `python tests/fuzz_cli.py --count 300` runs many more).

Each family draws `ARCHFAMILY_FUZZ_EXAMPLES` inputs (default 6, derandomized, so CI runs the same ones every
time); each command runs in-process through the console-script entry point.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_cli
from conftest import exit_code
from fuzz_cli import FAMILIES, check_case

FUZZ = settings(max_examples=int(os.environ.get("ARCHFAMILY_FUZZ_EXAMPLES", "6")), derandomize=True, deadline=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
        return _in_process(args, env)

    return fuzz_cli.fixtures(tmp_path_factory.mktemp("fixtures"), run)


def _in_process(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """`archfamily ARGS` in this process, its stderr captured (capsys cannot be used across hypothesis examples)."""
    import contextlib
    import io

    err = io.StringIO()
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = exit_code(args)
    finally:
        mp.undo()
    return code, err.getvalue()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hostile_inputs_are_refused_in_one_line_and_change_nothing(fx: dict[str, Any], tmp_path: Path,
                                                                   family: str) -> None:
    count = iter(range(10**6))

    @FUZZ
    @given(case=FAMILIES[family](fx))
    def check(case: fuzz_cli.Case) -> None:
        folder = tmp_path / f"case-{next(count)}"
        problems = check_case(case, folder, lambda args, cwd, env: _in_process(args, env))
        shutil.rmtree(folder, ignore_errors=True)
        assert not problems, (case.what, problems)

    check()


def test_the_fuzz_sees_a_command_open_a_file_it_was_not_given(tmp_path: Path) -> None:
    """The check behind "no file read that the command did not name": a spec file that is /etc/passwd is read (and
    refused), which a case that must not read /etc/passwd counts against it."""
    case = fuzz_cli.Case("check", "reads /etc/passwd", {}, [["train", "--spec", "/etc/passwd", "--out", "{d}/out"]],
                         not_read=["/etc/passwd"])
    problems = check_case(case, tmp_path / "case", lambda args, cwd, env: _in_process(args, env))
    assert [kind for kind, _ in problems] == ["read a file it was not given"], problems


@pytest.mark.parametrize("command", [
    ["derive", "--preset", "smoke", "--base", fuzz_cli.BASE, "--checkpoint", "{f}", "--device", "cpu", "--subset",
     "100", "--test-subset", "100", "--out", "{d}/out"],
    ["zoo", "add", "{f}", "--name", "nan", "--test-subset", "100"],
])
def test_a_nan_weight_file_is_refused_at_once(run_cli, fx: dict[str, Any], tmp_path: Path, monkeypatch,
                                              command: list[str]) -> None:
    state = {k: v.clone() for k, v in fx["state"].items()}
    state["stem.weight"].fill_(float("nan"))
    bad = tmp_path / "nan.safetensors"
    bad.write_bytes(fuzz_cli._safetensors(state, fx["meta"]))
    monkeypatch.setenv("ARCHFAMILY_ZOO", str(tmp_path / "zoo"))
    started = time.perf_counter()
    result = run_cli(*[a.replace("{f}", str(bad)).replace("{d}", str(tmp_path)) for a in command])
    assert time.perf_counter() - started < 10
    assert result.code == 2 and "tensor 'stem.weight' holds NaN or infinite values" in result.err, result.err
    assert not (tmp_path / "out").exists() and not (tmp_path / "zoo").exists()


def test_zoo_remove_takes_the_weights_first(run_cli, fx: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    zoo = tmp_path / "zoo"
    fuzz_cli.write_case(fuzz_cli.Case("zoo", "valid", {f"zoo/{k}": v for k, v in fx["zoo"].items()}, []), tmp_path)
    monkeypatch.setenv("ARCHFAMILY_ZOO", str(zoo))
    result = run_cli("zoo", "remove", "archfamily_fz")
    assert result.code == 0, result.err
    assert not list((zoo / "weights").iterdir()) and '"entries": []' in (zoo / "manifest.json").read_text()


@given(text=st.text(min_size=1, max_size=12))
@settings(max_examples=50, derandomize=True)
def test_one_parser_for_cpu_threads_takes_ascii_digits_in_range(text: str) -> None:
    from archfamily.errors import UserError
    from archfamily.limits import cores, parse_on

    digits = text.strip()  # spaces around the number are allowed, as in `--threads " 2"`
    valid = digits.isascii() and digits.isdigit() and 1 <= int(digits) <= cores()
    try:
        name, threads = parse_on(f"cpu:{text}")
    except UserError:
        assert not valid
    else:
        assert valid and (name, threads) == ("cpu", int(digits))


@pytest.mark.parametrize("damage", ["another network", "nan momentum"])
def test_a_resume_checkpoint_is_checked_against_the_loop_that_resumes(tmp_path: Path, damage: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from archfamily.models.checkpoint import RunCheckpoint
    from archfamily.data.dataset import in_memory
    from archfamily.errors import UserError
    from archfamily.models import build_model
    from archfamily.training.recipes import Recipe
    from archfamily.specs import base_spec
    from archfamily.training.trainer import Trainer

    images = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    data = in_memory(images, torch.arange(20) % 10, images, torch.arange(20) % 10, "fake")
    recipe = Recipe(epochs=1, batch_size=10, lr=0.1, weight_decay=5e-4, momentum=0.9)
    checkpoint = RunCheckpoint(tmp_path)
    saved = "wrn-10-2" if damage == "another network" else "wrn-10-1"
    Trainer(build_model(base_spec(saved)), data, recipe, torch.device("cpu")).fit(1, checkpoint, every=1)
    if damage == "nan momentum":
        file = next(tmp_path.glob("ckpt-*.safetensors"))
        tensors = load_file(str(file))
        key = next(k for k in tensors if k.startswith("optim"))
        tensors[key].fill_(float("nan"))
        save_file(tensors, str(file))
    resuming = Trainer(build_model(base_spec("wrn-10-1")), data, recipe, torch.device("cpu"))
    with pytest.raises(UserError, match=r"ckpt-000000001\.safetensors(: tensor '.*' holds NaN| does not hold the weights)"):
        resuming.resume(checkpoint)
