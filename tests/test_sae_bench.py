"""The SAE benchmark runs and reports what the CLI and the issue expect (its speeds are never asserted)."""
from tinymono.benchmarks import format_table
from tinymono.benchmarks import sae as bench


def test_quick_run_reports_every_path_and_ratio():
    result = bench.run(quick=True)
    assert result["benchmark"] == "sae"
    assert {"matmul", "numpy", "numba", "topk", "topk_numpy"} <= set(result["results"])
    for name, r in result["results"].items():
        assert r["per_second"] > 0 and r["gflops"] > 0 and "ceiling_share" in r, f"{name}: {r}"
    assert set(result["ratios"]) == {"numba_vs_numpy", "numba_vs_torch", "numpy_vs_torch", "topk_vs_topk_numpy",
                                     "topk_vs_topk_torch", "bound_vs_torch", "bound_vs_topk_torch"}
    res = result["results"]
    if "torch" in res:  # the bound: PyTorch's step time over one encoder matmul's, from the same run
        want = res["torch"]["seconds_per_call"] / res["matmul"]["seconds_per_call"]
        assert abs(result["ratios"]["bound_vs_torch"] - want) <= 1e-9 * want
    assert result["ratios"]["numba_vs_numpy"] > 0
    assert 0.005 < result["config"]["active_fraction"] < 0.03, "the benchmark state must be ~1.5% active"
    assert "encoder_matmul_share" in result["results"]["numba"] and "encoder_matmul_share" in result["results"]["topk"]
    table = format_table(result, unit=result["unit"])
    assert "numba_vs_numpy" in table and "active fraction" in table
