"""Scaling rules and `archfamily scale`: budgets met, monotone widths, copied ratios, clear errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archfamily.models.counting import count_params, measure_macs
from archfamily.errors import UserError
from archfamily.pruning.family_file import load_family
from archfamily.models import build_model
from archfamily.scaling.rules import RULES, Rule, ScalingRule, make_rule, register, solve
from archfamily.specs import base_spec, spec_from_dict
from families import write_family

ROOT = Path(__file__).parent


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory):
    return load_family(write_family(tmp_path_factory.mktemp("family")))


def _rule(family, name: str):
    return make_rule(name, family.base, family.trajectory, family.rules)


def test_a_version_1_family_loads_with_its_exact_widths() -> None:
    """family.json files written before the widths were stored (the fixture is a smoke run's) still scale."""
    family = load_family(ROOT / "fixtures" / "family-v1.json")
    lines = [json.loads(line) for line in (ROOT / "fixtures" / "trajectory-v1.jsonl").read_text().splitlines()]
    assert family.document["version"] == 1
    assert family.specs == [spec_from_dict(line["spec"]) for line in lines]
    for name in ("copycat", "fitted"):
        result = solve(_rule(family, name), 60_000)
        assert result.within_tolerance and result.member.params == result.member.spec.num_params()


def test_reduced_width_at_depth_40_k_2_is_exactly_wrn_40_2(tmp_path: Path) -> None:
    fam = load_family(write_family(tmp_path, "wrn-40-2", k=64))
    result = solve(_rule(fam, "reduced-width"), 2_243_546)
    assert result.member.spec == base_spec("wrn-40-2") and result.member.params == 2_243_546


SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(rule=st.sampled_from(tuple(RULES)), log_share=st.floats(math.log(0.02), math.log(4.0)), round_to=st.sampled_from([1, 8]),
       metric=st.sampled_from(["params", "macs"]))
def test_budgets_are_met_or_the_nearest_member_is_explained(family, rule, log_share, round_to, metric) -> None:
    r = _rule(family, rule)
    base_count = family.base.num_params() if metric == "params" else family.base.num_macs()
    budget = int(base_count * math.exp(log_share))
    try:
        result = solve(r, budget, metric, round_to)
    except UserError as exc:
        # only the depth and bottleneck baselines, and coarse rounding, may not reach the whole range
        assert rule in ("reduced-depth", "bottleneck") or round_to > 1, exc
        assert " to " in str(exc) and metric in str(exc)
        return
    got = result.member.count(metric)
    if result.within_tolerance:
        assert abs(got - budget) <= 0.01 * budget
    else:
        assert f"{got:,}" in result.note  # the answer names the nearest members, one on each side
        below, above = (int(n.replace(",", "")) for n in result.note.split("have ")[1].split(", and")[0].split(" and "))
        assert below <= budget <= above and got in (below, above)
    spec = result.member.spec
    assert (spec.num_params() if metric == "params" else spec.num_macs()) == got


def test_copycat_family_spans_two_percent_to_four_times_the_base(family) -> None:
    for rule in ("copycat", "fitted", "reduced-width"):
        for share in (0.02, 0.1, 1.0, 4.0):
            result = solve(_rule(family, rule), int(family.base.num_params() * share))
            assert result.within_tolerance, (rule, share, result.note)


@SETTINGS
@given(rule=st.sampled_from(tuple(RULES)), a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0), round_to=st.sampled_from([1, 8, 16]))
def test_widths_grow_with_the_multiplier(family, rule, a, b, round_to) -> None:
    r = _rule(family, rule)
    m1, m2 = sorted(r.lo * (r.hi / r.lo) ** x for x in (a, b))
    small, large = r.spec(m1, round_to), r.spec(m2, round_to)
    if rule == "reduced-depth":
        assert all(x <= y for x, y in zip(small.block_counts(), large.block_counts()))
    else:
        assert all(x <= y for x, y in zip(small.prunable_widths(), large.prunable_widths()))
    assert all(x <= y for x, y in zip(small.stage_widths, large.stage_widths))
    assert small.num_params() <= large.num_params()


@SETTINGS
@given(x=st.floats(0.0, 1.0), round_to=st.sampled_from([1, 8]))
def test_copycat_keeps_the_block_ratios_within_rounding(family, x, round_to) -> None:
    r = _rule(family, "copycat")
    alpha = r.lo * (r.hi / r.lo) ** x
    ratios = family.rules["copycat"]["block_ratios"]
    spec = r.spec(alpha, round_to)
    for w, ratio, w0 in zip(spec.prunable_widths(), ratios, family.base.prunable_widths()):
        target = alpha * ratio * w0
        if ratio == 0:
            assert w == 0
        elif target < round_to:
            assert w == round_to
        else:
            assert abs(w - target) <= round_to / 2 + 1e-9


def test_fitted_rule_records_its_fit_quality(family) -> None:
    blocks = family.rules["fitted"]["blocks"]
    assert len(blocks) == len(family.base.prunable_widths())
    assert all({"coef", "exponent", "r2", "rms_log", "vanished_at"} <= set(b) for b in blocks)
    assert all(b["exponent"] >= 0 and b["r2"] <= 1 for b in blocks)


def test_cli_params_budget_rebuilds_within_one_percent(run_cli, family) -> None:
    result = run_cli("scale", "--family", str(family.path.parent), "--params", "1M", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    model = build_model(spec_from_dict(doc["spec"]))
    assert abs(count_params(model) - 1_000_000) <= 10_000 and doc["params"] == count_params(model)


def test_cli_macs_budget_rebuilds_within_one_percent(run_cli, family) -> None:
    result = run_cli("scale", "--family", str(family.path), "--macs", "50M", "--rule", "fitted", "--json")
    assert result.code == 0, result.err
    spec = spec_from_dict(json.loads(result.out)["spec"])
    assert abs(measure_macs(build_model(spec), 32) - 50_000_000) <= 500_000


def test_cli_table_sweep_and_out(run_cli, family, tmp_path: Path) -> None:
    table = run_cli("scale", "--family", str(family.path), "--params", "250k", "--round-to", "8")
    assert table.code == 0 and "multiplier" in table.out and "inner widths" in table.out
    sweep = run_cli("scale", "--family", str(family.path), "--sweep", "0.25M,0.5M,1M")
    rows = sweep.out.splitlines()[2:]
    assert sweep.code == 0 and [row.split()[0] for row in rows] == ["250k", "500k", "1M"]
    out = tmp_path / "member.json"
    written = run_cli("scale", "--family", str(family.path), "--params", "300k", "--rule", "bottleneck", "--out", str(out))
    assert written.code == 0 and abs(spec_from_dict(json.loads(out.read_text())).num_params() - 300_000) <= 3_000


def test_cli_copycat_at_another_point(run_cli, family) -> None:
    early = json.loads(run_cli("scale", "--family", str(family.path), "--params", "300k", "--at", "0.9", "--json").out)
    late = json.loads(run_cli("scale", "--family", str(family.path), "--params", "300k", "--at", "0.2", "--json").out)
    assert "90%" in early["description"] or "prune step" in early["description"]
    assert early["spec"] != late["spec"]


def _family_variants(tmp_path: Path, family) -> dict[str, Path]:
    doc = json.loads(family.path.read_text())
    variants = {}
    for name, change in {
        "v4": lambda d: d.update(version=4),
        "nowidths": lambda d: d["trajectory"][1].pop("widths"),
        "nofitted": lambda d: d["rules"].pop("fitted"),
        "badfitted": lambda d: d["rules"]["fitted"].pop("blocks"),
    }.items():
        copy = json.loads(json.dumps(doc))
        change(copy)
        variants[name] = tmp_path / f"{name}.json"
        variants[name].write_text(json.dumps(copy))
    variants["truncated"] = tmp_path / "truncated.json"
    variants["truncated"].write_text(family.path.read_text()[:500])
    return variants


BAD = [
    (("--params", "100"), "outside what rule copycat reaches"),
    (("--params", "100M"), "outside what rule copycat reaches"),
    (("--params", "1X"), "malformed --params"),
    (("--params", "1..5M"), "malformed --params"),
    (("--params", "1M", "--macs", "100M"), "give exactly one budget"),
    (("--params", "1M", "--family", "{tmp}/v4.json"), "version 4"),
    (("--params", "1M", "--family", "{tmp}/nowidths.json"), "missing 'widths'"),
    (("--params", "1M", "--family", "{tmp}/truncated.json"), "not valid JSON"),
    (("--params", "1M", "--family", "{tmp}/nofitted.json", "--rule", "fitted"), "holds no 'fitted' rule"),
    (("--params", "1M", "--family", "{tmp}/badfitted.json", "--rule", "fitted"), "rules: fitted: missing 'blocks'"),
    (("--params", "1M", "--family", "{tmp}/missing"), "family not found"),
    (("--sweep", "1M,2M", "--out", "{tmp}/x.json"), "--out writes one spec"),
    (("--params", "1M", "--rule", "fitted", "--at", "0.5"), "--at applies to the copycat rule only"),
    (("--params", "1M", "--rule", "magic"), "Invalid value for '--rule'"),
    (("--params", "1M", "--round-to", "0"), "Invalid value for '--round-to'"),
    (("--params", ","), "needs at least one number"),
    (("--params", "0.4"), "must be at least 1"),
    (("--latency-ms", "3", "--round-to", "0"), "Invalid value for '--round-to'"),
    (("--params", "1M", "--out", "{tmp}/truncated.json/x.json"), "truncated.json/x.json: cannot write it"),
]


@pytest.mark.parametrize("args, message", BAD, ids=["-".join(a) for a, _ in BAD])
def test_cli_bad_input(run_cli, family, tmp_path: Path, args, message: str) -> None:
    _family_variants(tmp_path, family)
    args = [a.format(tmp=tmp_path) for a in args]
    if "--family" not in args:
        args = ["--family", str(family.path), *args]
    result = run_cli("scale", *args)
    assert result.code == 2 and message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_train_a_scaled_spec_from_scratch(run_cli, family, tmp_path: Path) -> None:
    spec_file = tmp_path / "member.json"
    assert run_cli("scale", "--family", str(family.path), "--params", "100k", "--out", str(spec_file)).code == 0
    out = tmp_path / "trained"
    args = ("train", "--spec", str(spec_file), "--epochs", "1", "--subset", "200", "--test-subset", "100",
            "--device", "cpu", "--out", str(out))
    result = run_cli(*args)
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] == spec_from_dict(json.loads(spec_file.read_text())).num_params() and 0 <= metrics["test_error"] <= 100
    assert (out / "model.safetensors").is_file() and not (out / ".checkpoints").exists()
    again = run_cli(*args)
    assert again.code == 2 and "already holds a run" in again.err
    resumed = run_cli(*args, "--resume")  # a finished run resumes to its own result
    assert resumed.code == 0 and f"{metrics['test_error']:.2f}%" in resumed.out


def test_train_takes_the_architecture_of_a_model_file_and_not_its_weights(run_cli, family, tmp_path: Path) -> None:
    from archfamily.models.checkpoint import save_model
    from archfamily.models import build_model
    from archfamily.training.scratch import read_spec_file

    spec_file = tmp_path / "member.json"
    assert run_cli("scale", "--family", str(family.path), "--params", "60k", "--out", str(spec_file)).code == 0
    model = build_model(read_spec_file(str(spec_file)))
    for p in model.parameters():  # weights a from-scratch run must not start from
        p.data.fill_(0.5)
    model_file = tmp_path / "pruned.safetensors"
    save_model(model_file, model)
    errors = []
    for source, out in ((spec_file, "from-json"), (model_file, "from-model")):
        result = run_cli("train", "--spec", str(source), "--epochs", "0.5", "--subset", "200", "--test-subset", "100",
                         "--device", "cpu", "--out", str(tmp_path / out))
        assert result.code == 0, result.err
        errors.append(json.loads((tmp_path / out / "metrics.json").read_text())["test_error"])
    assert errors[0] == errors[1]  # the same architecture, the same seed: the same run


_ONE_CHANNEL = '{"family": "wrn", "stage_widths": [4, 4, 4], "inner_widths": [[4], [4], [4]], "in_chans": 1}'
_ZERO_STAGE = '{"family": "resnet", "block": "basic", "stage_widths": [0, 4], "mid_widths": [[4], [4]]}'


@pytest.mark.parametrize("content, message", [(None, "spec file not found"), ("{oops", "not valid JSON"),
                                              ('{"family": "vgg"}', "not an archfamily spec"),
                                              (_ONE_CHANNEL, "RGB images (3 channels)"),
                                              (_ZERO_STAGE, "stage_widths must be whole numbers from 1")])
def test_train_bad_spec(run_cli, tmp_path: Path, content, message: str) -> None:
    spec_file = tmp_path / "spec.json"
    if content is not None:
        spec_file.write_text(content)
    result = run_cli("train", "--spec", str(spec_file), "--out", str(tmp_path / "out"))
    assert result.code == 2 and message in result.err and not (tmp_path / "out").exists()


def _last_point(base, trajectory, numbers, at) -> ScalingRule:
    """A throwaway rule: the last trajectory point's width ratios, every width times alpha."""
    widths = base.prunable_widths()
    return ScalingRule("last-point", 1e-3, 4.0, lambda a, r: base.scaled(a, [a * x * w for x, w in zip(
        numbers["block_ratios"], widths)], r), f"copycat of prune step {numbers['prune_step']}")


def _check_last_point(numbers, base) -> None:
    numbers.int("prune_step")
    numbers.numbers("block_ratios", len(base.prunable_widths()), 0, 1)


PLAN = """
budgets = ["BUDGET"]
[base]
spec = "wrn-10-1"
[prune.fisher]
[arms.last]
rule = "last-point"
"""


def test_a_registered_rule_is_fitted_checked_solved_timed_and_planned(tmp_path: Path) -> None:
    from archfamily.bench.select import networks
    from archfamily.study.plan import load_plan

    register(Rule("last-point", _last_point, lambda base, trajectory: {
        k: trajectory[-1][k] for k in ("prune_step", "block_ratios")}, ("prune_step", "block_ratios"),
        _check_last_point, reach=2.0, timed="rounded"))
    path = write_family(tmp_path / "family", "wrn-10-1", k=4)
    family = load_family(path)
    assert family.rules["last-point"]["prune_step"] == family.trajectory[-1]["prune_step"]
    result = solve(make_rule("last-point", family.base, family.trajectory, family.rules), 40_000)
    assert result.within_tolerance and result.member.rule == "last-point"
    kinds = {n.kind for n in networks(family, (40_000,), "params", (1, 8), [])}
    assert {"last-point", "last-point r8", "copycat", "fitted r8", "reduced-width"} <= kinds

    doc = json.loads(path.read_text())
    doc["rules"]["last-point"]["block_ratios"][0] = 2.0
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="rules: last-point: block_ratios must hold finite numbers from 0 to 1"):
        load_family(damaged)

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.replace("BUDGET", "40k"))
    assert load_plan(plan).arms["last"].kind == "last-point"
    plan.write_text(PLAN.replace("BUDGET", "200k"))  # the base has 78k params: beyond this rule's own reach
    with pytest.raises(UserError, match=r"beyond what the family can reach \(2x the base's params\)"):
        load_plan(plan)
    del RULES["last-point"]
    with pytest.raises(UserError, match="rules: last-point is not a rule"):
        load_family(path)


def test_a_rule_that_comes_in_blocks_says_so_when_no_member_is_within_one_percent() -> None:
    from archfamily.scaling.rules import base_rule

    base = base_spec("wrn-40-1")
    rule = base_rule("reduced-depth", base)
    notes = [solve(rule, int(base.num_params() * share)).note for share in (0.3, 0.45, 0.6, 0.75, 0.9)]
    missed = [n for n in notes if n]
    assert missed and all("because depth comes in whole blocks" in n for n in missed)
