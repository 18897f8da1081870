"""``jaxsens bench``: the report's schema and arithmetic, ``--compare``, its refusals; never its timings.

The FLOP counts are recomputed here from the layer sizes (the oracle is arithmetic on the architecture, not
the module's own helpers); the hand-written ``jit(vmap(jacrev))`` row agrees with jaxsens within float32
tolerance.
"""

from __future__ import annotations

import copy
import json
import statistics

import numpy as np
import pytest
from _tol import f32_tol

from jaxsens import _bench
from jaxsens.cli import main

MLP = (82, 500, 500, 500, 2)
FORWARD = 2 * (82 * 500 + 500 * 500 + 500 * 500 + 500 * 2)  # FLOPs of one sample through the seed-000 MLP


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "a.json"
    code = main(
        [
            "bench",
            "--quick",
            "--n",
            "512",
            "--workloads",
            "mlp_jacobian,perturbation",
            "--precision",
            "bfloat16,float32",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    return path, json.loads(path.read_text())


@pytest.mark.slow
def test_quick_report_schema_and_arithmetic(quick_report):
    _, report = quick_report
    assert report["schema"] == "jaxsens-bench/1"
    assert {"backend", "devices", "jax", "jaxsens", "cpu", "date"} <= set(report["machine"])
    assert report["settings"]["precisions"] == ["float32", "bfloat16"]  # float32 first: the others' reference
    assert {"float32", "bfloat16", "BF16_BF16_F32"} <= set(report["gemm"])
    for g in report["gemm"].values():
        assert g["shape"][1:] == [500, 500] and g["shape"][0] % 4096 == 0
        assert (g["tflops"] is None) == (g["status"] != "ok") and len(g["times"]) == (3 if g["tflops"] else 0)

    rows = report["rows"]
    combos = {(r["workload"], r["competitor"], r["precision"]) for r in rows}
    assert combos == {
        ("mlp_jacobian", "jaxsens", "float32"),
        ("mlp_jacobian", "jaxsens", "bfloat16"),
        ("mlp_jacobian", "hand-written jit(vmap(jacrev))", "float32"),
        ("perturbation", "jaxsens", "float32"),
        ("perturbation", "jaxsens", "bfloat16"),
    }
    want_flops = {"mlp_jacobian": 2 * FORWARD, "perturbation": (1 + MLP[0]) * FORWARD}  # K - 1 = 1 pull-back
    for r in rows:
        assert set(r) == set(_bench.ROW_KEYS)
        assert r["n"] == {"mlp_jacobian": 512, "perturbation": 64}[r["workload"]]
        assert len(r["times"]) == 1 and r["seconds"] == statistics.median(r["times"]) > 0
        assert r["samples_per_s"] == pytest.approx(r["n"] / r["seconds"], rel=1e-12)
        assert r["flops_per_sample"] == want_flops[r["workload"]]
        assert r["tflops"] == pytest.approx(r["samples_per_s"] * r["flops_per_sample"] / 1e12, rel=1e-12)
        g = report["gemm"][r["precision"]]["tflops"]
        assert r["gemm_tflops"] == g and r["pct_of_gemm"] == pytest.approx(100 * r["tflops"] / g, rel=1e-12)
        assert r["precision_via"] == (
            "option"
            if r["workload"] == "mlp_jacobian" and r["competitor"] == "jaxsens"
            else "jax.default_matmul_precision"
        )
        if r["precision"] == "float32" and r["competitor"] == "jaxsens":
            assert r["max_err_vs_float32"] == 0.0  # the reference itself
        else:  # a sanity bound: bfloat16 inputs round each product by <= 2^-8, far below 10% of the scale
            assert 0.0 <= r["max_err_vs_float32"] < 0.1
    hand = next(r for r in rows if r["competitor"].startswith("hand"))
    # |J| summed over 512 rows, each entry a chain of 4 layers of fan-in <= 500 (relative to the largest)
    assert hand["max_err_vs_float32"] <= f32_tol(1.0, 512 + 4 * 500)


@pytest.mark.slow
def test_compare_prints_the_ratio_per_row(quick_report, tmp_path, capsys):
    path_a, report = quick_report
    faster = copy.deepcopy(report)
    factors = [2.0, 0.5, 4.0, 1.0, 0.25]
    for r, f in zip(faster["rows"], factors):
        r["samples_per_s"] *= f
    faster["machine"]["hostname"] = "other-machine"
    path_b = tmp_path / "b.json"
    path_b.write_text(json.dumps(faster))
    capsys.readouterr()
    assert main(["bench", "--compare", str(path_a), str(path_b)]) == 0
    out = capsys.readouterr().out
    assert "other-machine" in out and out.count("\n") >= 2 + 2 + len(report["rows"])
    for r, f in zip(report["rows"], factors):
        line = next(
            ln
            for ln in out.splitlines()
            if ln.startswith(r["workload"]) and r["competitor"] in ln and f" {r['precision']} " in ln
        )
        assert line.rstrip().endswith(f"{f:.2f}x")
    ratios = _bench.compare(report, faster)
    np.testing.assert_allclose([x["ratio"] for x in ratios], factors, rtol=1e-12)


def test_refusals_name_the_argument(tmp_path, capsys):
    assert main(["bench", "--quick", "--workloads", "mlp_jacobian,resnet"]) == 2
    assert "--workloads: unknown ['resnet']" in capsys.readouterr().err
    assert main(["bench", "--quick", "--precision", "float16"]) == 2
    assert "--precision: unknown ['float16']" in capsys.readouterr().err
    not_a_report = tmp_path / "x.json"
    not_a_report.write_text(json.dumps({"rows": []}))
    assert main(["bench", "--compare", str(not_a_report), str(not_a_report)]) == 2
    assert "is not a 'jaxsens bench --json' report" in capsys.readouterr().err
    assert main(["bench", "--compare", *[str(not_a_report)] * 3]) == 2
    assert "--compare takes one report" in capsys.readouterr().err
    assert main(["bench", "--quick", "--json", str(tmp_path / "missing" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "--compare", str(tmp_path / "nope.json")]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err
