"""`archfamily bench` and latency budgets: schemas and files of tiny runs, timed with the test's clock
(conftest's `clock`), so no outcome depends on the machine's load; `test_real_timings_on_an_idle_machine`
alone times for real, marked `idle`."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from archfamily.bench.runtimes import RUNTIMES
from archfamily.bench.select import networks, trained_networks
from archfamily.bench.select import pruned_at
from archfamily.pruning.family_file import load_family
from archfamily.latency.budgets import LatencyCache, parse_target
from archfamily.errors import UserError
from archfamily.specs import base_spec
from families import write_family


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory):
    return load_family(write_family(tmp_path_factory.mktemp("family"), "wrn-10-1", k=4))


def test_bench_networks_cover_every_kind(family) -> None:
    nets = networks(family, (40_000, 100_000), "params", (1, 8), [])
    kinds = {n.kind for n in nets if n.budget == 40_000}
    assert kinds == {"reduced-width", "pruned (masked)", "pruned (compressed)", "copycat", "copycat r8", "fitted",
                     "fitted r8"}
    masked = next(n for n in nets if n.kind == "pruned (masked)" and n.budget == 40_000)
    compressed = next(n for n in nets if n.kind == "pruned (compressed)" and n.budget == 40_000)
    model = masked.build()
    assert sum(p.numel() for p in model.parameters()) == base_spec("wrn-10-1").num_params()  # full-size convs
    assert [int((m > 0).sum()) for m in model.masks.masks.values()] == \
        [w for w, w0 in zip(compressed.spec.prunable_widths(), base_spec("wrn-10-1").prunable_widths()) if w < w0]
    assert all(n.kind != "pruned (masked)" for n in nets if n.budget == 100_000)  # above the base: nothing pruned


def test_one_rule_picks_the_pruned_network_at_a_budget(family) -> None:
    budget = 40_000
    expected = next(s for s in family.specs if s.num_params() <= budget)  # as `derive --save-at` saves it
    picked = {n.kind: n.spec for n in networks(family, (budget,), "params", (1,), []) if n.kind.startswith("pruned")}
    assert picked == {"pruned (masked)": expected, "pruned (compressed)": expected}
    assert [n.spec for n in trained_networks(family, (budget,), "params", [])] == [expected]
    assert pruned_at(family, budget, "params") == expected and pruned_at(family, 10**9, "params") is None


def test_tiny_bench_writes_table_json_and_plots(run_cli, family, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run_cli("bench", "--family", str(family.path), "--params", "40k,60k", "--device", "cpu", "--quick",
                     "--threads", "1", "--batch", "1,2", "--formats", "both", "--rounds", "2", "--out", str(out))
    assert result.code == 0, result.err
    report = json.loads((out / "results.json").read_text())
    assert report["format"] == "archfamily.bench" and {"cpu", "cores", "torch"} <= set(report["machine"])
    assert report["peak_gflops"]["cpu:1"] > 0
    rows = report["rows"]
    settings = {(r["threads"], r["batch"], r["format"]) for r in rows}
    assert settings == {(1, b, f) for b in (1, 2) for f in ("nchw", "channels_last")}
    per_setting = len(rows) // len(settings)
    assert per_setting == len(networks(family, (40_000, 60_000), "params", (1, 8), []))
    for r in rows:
        assert r["median_ms"] > 0 and r["iqr_ms"] >= 0 and r["runs"] >= 2 and not r["busy"]
        assert r["images_per_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
        assert r["gflops"] == pytest.approx(2 * r["macs"] * r["batch"] / (r["median_ms"] / 1e3) / 1e9)
        assert r["executed_macs"] >= r["macs"]
    table = (out / "results.md").read_text()
    assert "## Summary: cpu, 1 thread, channels_last" in table
    assert table.count("| 40,000 |") == 7 * (len(settings) + 1)  # each setting and the summary; --quick: r1, r8
    for plot in ("latency_vs_params.png", "error_vs_params.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_of_trained_networks_groups_seeds_into_one_row(run_cli, family, tmp_path: Path) -> None:
    spec_file = tmp_path / "member.json"
    assert run_cli("scale", "--family", str(family.path), "--params", "40k", "--rule", "reduced-width",
                   "--out", str(spec_file)).code == 0
    errors = {}
    for seed in (0, 1):
        run = tmp_path / "train" / f"rw-40k-s{seed}"
        assert run_cli("train", "--spec", str(spec_file), "--epochs", "0.2", "--subset", "100", "--test-subset", "50",
                       "--seed", str(seed), "--device", "cpu", "--out", str(run)).code == 0
        errors[seed] = json.loads((run / "metrics.json").read_text())["test_error"]
    out = tmp_path / "bench"
    result = run_cli("bench", "--family", str(family.path), "--params", "40k,60k", "--device", "cpu", "--quick",
                     "--threads", "1", "--batch", "1", "--rounds", "1", "--runtime", "eager,onnxruntime",
                     "--trained", f"reduced-width={tmp_path}/train/rw-*", "--out", str(out))
    assert result.code == 0, result.err
    rows = json.loads((out / "results.json").read_text())["rows"]
    runtimes = ("eager", "onnxruntime")  # each network in each runtime, timed in the same interleaved run
    assert {(r["network"], r["runtime"]) for r in rows if r["budget"] == 40_000} == \
        {(n, rt) for n in ("pruned (masked)", "reduced-width") for rt in runtimes}
    assert {r["network"] for r in rows if r["budget"] == 60_000} == {"pruned (masked)"}  # nearest budget only
    assert "| onnxruntime batch-1 ms (IQR) |" in (out / "results.md").read_text()
    trained = next(r for r in rows if r["network"] == "reduced-width" and r["runtime"] == "eager")
    assert trained["seeds"] == [0, 1] and trained["test_errors"] == [errors[0], errors[1]]
    assert trained["test_error"] == pytest.approx((errors[0] + errors[1]) / 2)
    assert trained["test_error_std"] == pytest.approx(abs(errors[0] - errors[1]) / 2 ** 0.5)
    assert trained["test_images"] == [50] and len(trained["sources"]) == 2
    assert f"{trained['test_error']:.2f} ± {trained['test_error_std']:.2f}% (2)" in (out / "results.md").read_text()
    assert (out / "error_vs_latency.png").is_file()


@pytest.mark.parametrize("args, message", [
    (("--params", "40k", "--trained", "nothing-here"), "--trained takes ARM=GLOB"),
    (("--params", "40k", "--trained", "arm=/nowhere/*"), "matches nothing"),
    (("--params", "40k", "--device", "tpu"), "unknown device 'tpu'"),
    (("--params", "40k", "--threads", "two"), "--threads takes"),
    (("--params", "40k", "--macs", "1M"), "exactly one list of budgets"),
    (("--params", "40k", "--rounds", "0"), "Invalid value for '--rounds'"),
    (("--params", "40k", "--runtime", "tensorrt"), "unknown runtime tensorrt"),
    (("--params", ","), "needs at least one number"),
])
def test_bench_bad_input(run_cli, family, tmp_path: Path, args, message: str) -> None:
    result = run_cli("bench", "--family", str(family.path), *args, "--out", str(tmp_path / "b"))
    assert result.code == 2 and message in result.err and not (tmp_path / "b").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_a_machine_without_one(run_cli, family, tmp_path: Path) -> None:
    for args in (("bench", "--family", str(family.path), "--params", "40k", "--device", "cuda", "--out",
                  str(tmp_path / "b")),
                 ("scale", "--family", str(family.path), "--latency-ms", "5", "--on", "cuda")):
        result = run_cli(*args)
        assert result.code == 2 and "no CUDA GPU" in result.err


def test_latency_budget_returns_a_member_and_caches(run_cli, family, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHFAMILY_CACHE", str(tmp_path / "cache"))
    result = run_cli("scale", "--family", str(family.path), "--latency-ms", "1000", "--on", "cpu:1", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["budget"] == {"latency": 1000.0} and "measured" in doc["note"] and doc["params"] > 0
    for name in ("latency.json", "latency-table.json"):  # each figure under its machine and setting, with its spread
        cache = json.loads((tmp_path / "cache" / name).read_text())
        (section,) = cache["settings"].values()
        assert section["setting"]["threads"] == 1 and section["setting"]["cpu"] and section["timings"]
        assert all(t["median_ms"] > 0 and t["iqr_ms"] > 0 and t["runs"] >= 1 for t in section["timings"].values())


def test_a_bench_on_a_busy_machine_marks_its_figures_and_plots_only_the_others(run_cli, family, tmp_path: Path,
                                                                              clock, monkeypatch) -> None:
    from archfamily.bench import plots

    plotted: dict[str, list[str]] = {}  # each plot's lines, by file
    original = plots._save

    def save(fig, path: Path) -> Path:
        plotted[path.name] = [line.get_label() for line in fig.axes[0].get_lines()]
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    monkeypatch.setenv("ARCHFAMILY_CACHE", str(tmp_path / "cache"))
    clock.busy = lambda block: block >= 2  # the peak and the first network's figure idle, the rest busy
    out = tmp_path / "bench"
    result = run_cli("bench", "--family", str(family.path), "--params", "40k", "--device", "cpu", "--quick",
                     "--threads", "1", "--batch", "1", "--rounds", "1", "--out", str(out))
    assert result.code == 0, result.err
    report = json.loads((out / "results.json").read_text())
    rows = report["rows"]
    assert not report["peaks_busy"] and [r["busy"] for r in rows] == [False] + [True] * (len(rows) - 1)
    assert plotted["latency_vs_params.png"] == [rows[0]["network"]]  # the one idle figure, alone
    table = (out / "results.md").read_text()
    assert f"{len(rows) - 1} of {len(rows)} figures" in table and table.count(" busy |") == 2 * 2 * (len(rows) - 1)
    assert result.err.strip().splitlines()[-1].startswith(f"archfamily: {len(rows) - 1} of {len(rows)} figures")
    assert not (tmp_path / "cache").exists()  # nothing cached

    clock.busy = True
    plotted.clear()
    assert run_cli("bench", "--family", str(family.path), "--params", "40k", "--device", "cpu", "--quick",
                   "--threads", "1", "--batch", "1", "--rounds", "1", "--out", str(out)).code == 0
    report = json.loads((out / "results.json").read_text())
    assert report["peaks_busy"] == ["cpu:1"] and all(r["busy"] for r in report["rows"])
    assert plotted["latency_vs_params.png"] == [] and (out / "latency_vs_params.png").is_file()
    assert "(matmul peak" in (out / "results.md").read_text() and "GFLOP/s busy)" in (out / "results.md").read_text()


@pytest.mark.parametrize("args, message", [
    (("--latency-ms", "0.000001", "--on", "cpu:1"), "is unreachable"),
    (("--latency-ms", "5", "--on", "tpu"), "unknown device"),
    (("--latency-ms", "5", "--on", "cpu:x"), "malformed thread count"),
    (("--latency-ms", "5", "--params", "1M"), "exactly one budget"),
    (("--latency-ms", "5", "--on", "cuda:2"), "cuda takes no thread count"),
    (("--latency-ms", "5", "--on", "cpu:"), "malformed thread count"),
    (("--params", "100k", "--on", "cpu:1"), "give --latency-ms with them"),
    (("--params", "100k", "--batch", "8"), "give --latency-ms with them"),
    (("--latency-ms", "nan"), "must be a positive number"),
    (("--latency-ms", "-1"), "must be a positive number"),
])
def test_latency_bad_input(run_cli, family, tmp_path: Path, monkeypatch, args, message: str) -> None:
    monkeypatch.setenv("ARCHFAMILY_CACHE", str(tmp_path / "cache"))
    result = run_cli("scale", "--family", str(family.path), *args)
    assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1


def test_an_unwritable_latency_cache_is_a_one_line_error(run_cli, family, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("ARCHFAMILY_CACHE", str(tmp_path / "a-file" / "cache"))
    result = run_cli("scale", "--family", str(family.path), "--latency-ms", "1000", "--on", "cpu:1")
    assert result.code == 2 and "cannot write it" in result.err  # latency.json, or the model's latency-table.json
    assert re.search(r"cache/latency(-table)?\.json: cannot write it", result.err)
    assert len(result.err.strip().splitlines()) == 1


def test_parse_target() -> None:
    assert parse_target("cpu:1") == (torch.device("cpu"), 1)
    with pytest.raises(UserError):
        parse_target("gpu")


def test_latency_cache_survives_damage(tmp_path: Path) -> None:
    from archfamily.latency.cache import TimingCache
    from archfamily.latency.timing import Timing

    path = tmp_path / "latency.json"
    good = {"median_ms": 2.5, "iqr_ms": 0.1, "runs": 3}
    damaged = {"a": "fast", "b": {**good, "median_ms": -1.0}, "c": good, "d": {**good, "runs": 0},
               "e": {**good, "x": 1}}
    timings = json.dumps({"format": "archfamily.timings", "version": 1,
                          "settings": {"s": {"setting": {"threads": 1}, "timings": damaged}, "t": [], "u": {}}})
    for damage in (b"{broken", b"\xff\xfe{}", b"[1, 2]", b'{"a": 2.5}', timings.encode()):  # the flat, unchecked
        path.write_bytes(damage)                                                  # figures of old files: none kept
        cache = TimingCache(path)
        assert {sid: s["timings"] for sid, s in cache.sections.items()} == \
            ({"s": {"c": Timing(2.5, 0.1, 3)}} if damage.startswith(b'{"format"') else {})
    assert LatencyCache(path).timings.sections.keys() == {"s"}


PLAN = """
budgets = ["40k"]
[base]
spec = "wrn-10-1"
[arms.reduced-width]
rule = "reduced-width"
[bench]
runtimes = ["eager", "RUNTIME"]
"""


def test_a_registered_runtime_is_timed_beside_eager_and_planned(family, tmp_path: Path) -> None:
    from archfamily.bench.measure import BenchConfig, run
    from archfamily.bench.runtimes import Runtime, check_runtimes, prepare_eager, register
    from archfamily.study.plan import load_plan

    prepared = []

    def inference_mode(net, setting):  # eager PyTorch under torch.inference_mode
        prepared.append((net.kind, setting.batch, setting.threads))
        call = prepare_eager(net, setting)
        return lambda: torch.inference_mode()(call)()

    register(Runtime("inference-mode", inference_mode))
    register(Runtime("not-installed", inference_mode, needs=("archfamily_no_such_package",), install="pip install it"))
    check_runtimes(("eager", "inference-mode"))
    with pytest.raises(UserError, match="--runtime not-installed needs archfamily_no_such_package: pip install it"):
        check_runtimes(("not-installed",))
    config = BenchConfig(budgets=(40_000,), threads=(1,), batches=(2,), formats=("channels_last",), round_tos=(1,),
                         rounds=1, min_run_time=0.01, runtimes=("eager", "inference-mode"))
    rows = run(family, config, [])["rows"]
    kinds = {n.kind for n in networks(family, (40_000,), "params", (1,), [])}
    assert {(r["network"], r["runtime"]) for r in rows} == {(k, rt) for k in kinds for rt in config.runtimes}
    assert sorted(prepared) == sorted((k, 2, 1) for k in kinds) and all(r["median_ms"] > 0 for r in rows)

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.replace("RUNTIME", "inference-mode"))
    assert load_plan(plan).bench.runtimes == ("eager", "inference-mode")
    plan.write_text(PLAN.replace("RUNTIME", "not-installed"))
    with pytest.raises(UserError, match="runtime not-installed needs pip install it"):
        load_plan(plan)
    plan.write_text(PLAN.replace("RUNTIME", "inference-mode"))
    del RUNTIMES["inference-mode"]
    with pytest.raises(UserError, match="'runtimes' must list some of eager, onnxruntime, not-installed"):
        load_plan(plan)


def test_a_damaged_zoo_manifest_is_one_line_not_an_empty_zoo(run_cli, family, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "manifest.json").write_text('{"format": "archfamily.zoo", "version": 1, "entries": [')
    monkeypatch.setenv("ARCHFAMILY_ZOO", str(tmp_path / "zoo"))
    result = run_cli("bench", "--family", str(family.path), "--params", "40k", "--device", "cpu", "--quick",
                     "--out", str(tmp_path / "b"))
    assert result.code == 2 and result.err.strip().splitlines() == [
        f"archfamily: error: {tmp_path / 'zoo' / 'manifest.json'}: not valid JSON (Expecting value at line 1, "
        "column 56)"]
    assert not (tmp_path / "b").exists()


@pytest.mark.idle
def test_real_timings_on_an_idle_machine(run_cli, family, tmp_path: Path, monkeypatch) -> None:
    """The machine's own clock: a tiny bench and a latency budget, every figure taken with the process's cores."""
    monkeypatch.setenv("ARCHFAMILY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    result = run_cli("bench", "--family", str(family.path), "--params", "40k", "--device", "cpu", "--quick",
                     "--threads", "1", "--batch", "1", "--rounds", "2", "--out", str(out))
    assert result.code == 0, result.err
    report = json.loads((out / "results.json").read_text())
    assert not report["peaks_busy"] and report["peak_gflops"]["cpu:1"] > 1
    assert all(not r["busy"] and 0 < r["median_ms"] < 100 for r in report["rows"])
    result = run_cli("scale", "--family", str(family.path), "--latency-ms", "1000", "--on", "cpu:1", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["params"] > 0
