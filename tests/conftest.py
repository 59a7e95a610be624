"""Shared fixtures: an isolated dataset cache, a clock every timing reads (`clocks.FakeClock`), and the CLI run
in-process as a user runs it. Tests marked `idle` time real networks with the machine's clock: they are skipped
unless asked for (`pytest -m idle`, on an idle machine)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
import torch.utils.benchmark  # noqa: F401  imported once here: on a machine with a CUDA toolkit but no CUDA runtime
# its first import logs a warning, which would otherwise land in whichever CLI call's captured stderr came first

from archfamily.bench.runtimes import RUNTIMES
from archfamily.cli.main import main
from archfamily.families import FAMILIES
from archfamily.pruning.criteria import CRITERIA
from archfamily.scaling.rules import RULES
from clocks import FakeClock


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "idle" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="times real networks, which only an idle machine can: run with -m idle")
    for item in items:
        if item.get_closest_marker("idle"):
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHFAMILY_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(2)
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def clock(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Optional[FakeClock]:
    """The clock every timing in the test reads (None in a test marked `idle`, which reads the machine's): a
    test's outcome never depends on how busy the machine is."""
    if request.node.get_closest_marker("idle"):
        return None
    from archfamily.latency import timing

    fake = FakeClock()
    monkeypatch.setattr(timing, "CLOCK", fake.clock)
    return fake


@pytest.fixture(autouse=True)
def _registries_restored() -> None:
    """Every registry of plug-ins as it was before the test, whatever the test registered or removed."""
    with FAMILIES.saved(), CRITERIA.saved(), RULES.saved(), RUNTIMES.saved():
        yield


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def exit_code(args: list[str]) -> int:
    """Run `archfamily ARGS` in this process through the console-script entry point; its exit code."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run `archfamily ARGS...` through the console-script entry point."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        old_argv = sys.argv
        sys.argv = ["archfamily", *args]
        try:
            code = exit_code(list(args))
        finally:
            sys.argv = old_argv
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
