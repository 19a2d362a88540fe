"""`bench scaling`, `bench startup` and `bench --busy`: the FLOP counts against hand counts, the ideal lines
through their reference points, the crossover of the sparse step, the startup probe's parts, the burner's
life (never how fast anything is)."""
import json
import subprocess
import sys
import time

import pytest

from tinymono import transformer as tr
from tinymono.benchmarks import busy_core, format_table
from tinymono.benchmarks import scaling, startup


def test_sae_flops_count_the_products():
    # dense twin: five [B, d_in] x [d_in, d_sae]-sized products; sparse: one dense, four over the active entries
    assert scaling.sae_step_flops(2, 3, 5, 0.2, sparse=False) == 5 * 2 * 2 * 3 * 5
    assert scaling.sae_step_flops(2, 3, 5, 0.2) == pytest.approx(2 * 2 * 3 * 5 + 4 * 2 * (0.2 * 2 * 5) * 3)
    assert scaling.sae_step_flops(2, 3, 5, 1.0) == scaling.sae_step_flops(2, 3, 5, 1.0, sparse=False), \
        "with every latent active the sparse step does the dense step's work"


def test_transformer_flops_per_token_by_hand():
    cfg = tr.TransformerConfig(d_model=6, n_heads=2, d_head=3, d_mlp=5, n_ctx=7)
    weights = 4 * 6 * 2 * 3 + 2 * 6 * 5 + 6 * cfg.d_vocab  # W_Q, W_K, W_V, W_O; W_in, W_out; W_U
    assert scaling.transformer_flops_per_token(cfg, causal=False) == pytest.approx(3 * (2 * weights + 4 * 7 * 2 * 3))
    # causal: query i reads keys 0..i, (1 + 2 + ... + 7) / 7 = 4 keys per query on average
    assert scaling.transformer_flops_per_token(cfg) == pytest.approx(3 * (2 * weights + 4 * 4 * 2 * 3))


def fake_rows():
    rows = {}
    for d, t in ((1024, 1.0), (4096, 4.0), (8192, 10.0)):
        rows[f"d{d}"] = {"series": "sae_d_sae", "x": d, "seconds_per_call": t, "flops": float(d)}
    for share, sparse_t, dense_t in ((0.01, 1.0, 5.0), (0.05, 3.0, 5.0), (0.2, 6.0, 5.0)):
        rows[f"s{share}"] = {"series": "sae_active_sparse", "x": share, "seconds_per_call": sparse_t, "flops": 1 + share}
        rows[f"d{share}"] = {"series": "sae_active_dense", "x": share, "seconds_per_call": dense_t, "flops": 5.0}
    for T, tps, fpt in ((64, 100.0, 1.0), (128, 80.0, 2.0), (256, 30.0, 4.0)):
        rows[f"t{T}"] = {"series": "transformer_n_ctx", "x": T, "per_second": tps, "flops_per_token": fpt}
    return rows


def test_ideal_lines_pass_through_the_reference_and_scale_with_flops():
    rows = scaling.ideal_lines(fake_rows())
    assert rows["d4096"]["ideal_seconds_per_call"] == 4.0, "the reference point (d_sae 4096) is on its line"
    assert rows["d8192"]["ideal_seconds_per_call"] == pytest.approx(8.0)
    assert rows["d8192"]["vs_ideal"] == pytest.approx(0.8), "10 s measured where FLOPs predict 8: 0.8 of ideal"
    assert rows["t128"]["ideal_per_second"] == 80.0 and rows["t256"]["ideal_per_second"] == pytest.approx(40.0)
    assert rows["t64"]["vs_ideal"] == pytest.approx(100 / 160)
    # the share series' reference is the measured share nearest 1.5% (1%), on a log scale
    assert rows["s0.01"]["ideal_seconds_per_call"] == 1.0
    assert rows["s0.2"]["ideal_seconds_per_call"] == pytest.approx(1.2 / 1.01)


def test_sparse_stops_paying_where_it_reaches_the_dense_time():
    rows = fake_rows()
    assert scaling.sparse_stops_paying(rows) == 0.2
    rows["s0.2"]["seconds_per_call"] = 4.9
    assert scaling.sparse_stops_paying(rows) is None


def test_quick_run_measures_every_series_and_draws(tmp_path):
    fig = tmp_path / "scaling.png"
    result = scaling.run(quick=True, figure=fig, progress=lambda _: None)
    series = {r["series"] for r in result["results"].values()}
    assert series == {"sae_d_sae", "sae_active_sparse", "sae_active_dense", "transformer_batch", "transformer_n_ctx"}
    for name, r in result["results"].items():
        assert r["per_second"] > 0 and r["vs_ideal"] > 0, f"{name}: {r}"
    assert fig.stat().st_size > 10_000, "the figure was written"
    assert "stops paying" in format_table(result)


def test_busy_core_burns_a_core_and_is_gone_afterwards():
    with busy_core() as child:
        assert child.poll() is None, "the burner runs during the block"
        with open(f"/proc/{child.pid}/stat") as fh:
            before = int(fh.read().split()[13])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{child.pid}/stat") as fh:
                if int(fh.read().split()[13]) > before:
                    break
        else:
            pytest.fail("the burner used no CPU time in 5 s")
    assert child.poll() is not None, "the burner is killed when the block ends"


def test_cli_busy_reports_it_and_figure_is_refused_where_no_figure_is_drawn(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tinymono", "bench", "scaling", "--quick", "--busy", "--json",
                          "--figure", str(tmp_path / "s.png")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["config"]["busy"] is True and any("--busy" in n for n in result["notes"])
    assert (tmp_path / "s.png").is_file()
    out = subprocess.run([sys.executable, "-m", "tinymono", "bench", "toy", "--figure", "x.png"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "draws no figure" in out.stderr


def test_startup_probe_times_every_hot_path_in_fresh_processes():
    result = startup.run()
    parts = {"import", "transformer_step", "sae_sparse_step", "toy_kernel"}
    for label in ("first process", "later process"):
        row = result["results"][label]
        assert parts <= set(row) and all(row[p] >= 0 for p in parts), row
        assert row["seconds_per_call"] == pytest.approx(sum(row[p] for p in parts))
    later = result["results"]["later process"]
    assert result["compile_seconds_later"] == pytest.approx(later["seconds_per_call"] - later["import"])


def test_goal_notes_say_met_missed_or_not_measured():
    """Each goal reads its measured value against its bar, and says so when it was not measured."""
    from tinymono.benchmarks import goal_notes
    notes = goal_notes({"a": 7.5, "b": 6.99, "c": None}, {"a": (7, "x"), "b": (7, "y"), "c": (1.3, "z")})
    assert notes == ["goal a >= 7 (x): 7.50 met", "goal b >= 7 (y): 6.99 MISSED", "goal c >= 1.3 (z): not measured"]
    spans = goal_notes({"a": 7.5, "b": 7.2, "c": 6.5}, {k: (7, "x") for k in "abc"},
                       {"a": (7.1, 7.9), "b": (6.8, 7.4), "c": (6.2, 6.9)})
    assert [n.rsplit(" ", 1)[-1] for n in spans] == ["met", "noise", "MISSED"], spans
    assert "(rounds 6.80-7.40) within noise" in spans[1], "a median over the bar with a round under it is not met"


def test_compare_rotates_the_order_and_pairs_the_rounds():
    """Each round starts one implementation further along, and ratio_range pairs the two rows' rounds."""
    from tinymono.benchmarks import compare, ratio_range
    order = []
    res = compare({"a": lambda: order.append("a"), "b": lambda: order.append("b"), "c": lambda: order.append("c")},
                  1, rounds=3, min_seconds=0.0, warmup=0)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    res["a"].update(per_second=2.0, seconds_per_call=0.5, rounds=[0.5, 0.4, 1.0])
    res["b"].update(per_second=1.0, seconds_per_call=1.0, rounds=[1.0, 1.2, 1.0])
    assert ratio_range(res, "a", "b") == pytest.approx((1.0, 3.0))  # rounds: 2, 3, 1


def test_tinymono_after_numpy_warns_about_openblas():
    """Imported after NumPy, tinymono cannot set OpenBLAS's idle-thread timeout any more, and says so."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    late = subprocess.run([sys.executable, "-W", "always", "-c", "import numpy, tinymono"], env=env,
                          capture_output=True, text=True, timeout=120)
    first = subprocess.run([sys.executable, "-W", "always", "-c", "import tinymono, numpy, os; "
                            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert "import tinymono first" in late.stderr
    assert first.stdout.strip() == "4" and "RuntimeWarning" not in first.stderr
