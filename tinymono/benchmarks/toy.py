"""`python -m tinymono bench toy`: instance-steps per second of the toy model's training.

Three implementations of the same training step (sample a batch, forward, backward, Adam), data
generation included in the timed work:
- numba:  the fused kernel (kernels/toy.py), one instance per thread through a chunk of steps;
- numpy:  its vectorised NumPy twin (toy.train_chunk_numpy), all instances at once, step by step;
- torch:  the same model in PyTorch on the CPU (autograd, torch.optim.Adam, torch.rand), if installed.
"""
from __future__ import annotations

import numpy as np

from tinymono import toy
from tinymono.benchmarks import compare, goal_notes, ratio, ratio_range, torch_adam, torch_or_none

CASES = [  # (n_features, d_hidden, n_inst), batch 1024: the settings the lessons train
    (5, 2, 1000),
    (20, 5, 64),
]
BATCH = 1024


def _torch_step_fn(torch, cfg):
    gen = torch.Generator().manual_seed(cfg.seed)
    W = torch.nn.Parameter(torch.tensor(toy.init(cfg, np.random.default_rng(0))["W"]))
    b = torch.nn.Parameter(torch.zeros(cfg.n_inst, cfg.n_features, dtype=torch.float64))
    prob = torch.tensor(cfg.probabilities())[:, None, :]
    imp = torch.tensor(cfg.importances())[:, None, :]
    opt = torch_adam(torch, [W, b], lr=cfg.lr)
    shape = (cfg.n_inst, cfg.batch_size, cfg.n_features)

    def step():
        u = torch.rand(shape, generator=gen, dtype=torch.float64)  # one number per entry, as tinymono draws:
        x = torch.where(u < prob, u / prob, 0.0)  # present when u < p, its value u / p uniform on [0, 1)
        h = torch.einsum("ihf,ibf->ibh", W, x)
        out = torch.relu(torch.einsum("ihf,ibh->ibf", W, h) + b[:, None, :])
        loss = (imp * (x - out) ** 2).sum(-1).mean(-1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def run(quick=False):
    results_all, ratios_all, ranges_all, notes = {}, {}, {}, []
    torch = torch_or_none()
    if torch is None:
        notes.append("torch is not installed: the PyTorch column is skipped (pip install -e '.[torch]')")
    for n, m, n_inst in CASES:
        cfg = toy.ToyConfig(n, m, n_inst=n_inst, feature_probability=0.1, importance=0.9 ** np.arange(n),
                            batch_size=BATCH, steps=10**6, lr_decay="constant")
        numba_task, numpy_task = toy.ToyTask(cfg, "numba"), toy.ToyTask(cfg, "numpy")
        chunk = 5 if quick else 20
        state = {"numba": 0, "numpy": 0}

        def numba_call():
            numba_task.run_chunk(state["numba"], chunk)
            state["numba"] += chunk

        def numpy_call():
            numpy_task.run_chunk(state["numpy"], 1)
            state["numpy"] += 1

        impls = {"numba": numba_call, "numpy": numpy_call}
        items = {"numba": n_inst * chunk, "numpy": n_inst}
        if torch is not None:
            impls["torch"] = _torch_step_fn(torch, cfg)
            items["torch"] = n_inst
        rounds, min_s = (2, 0.1) if quick else (5, 0.5)
        case = f"n{n}_m{m}_inst{n_inst}"
        res = compare(impls, items, rounds=rounds, min_seconds=min_s)
        for name, r in res.items():
            results_all[f"{case}/{name}"] = r
        for other in ("numpy", "torch"):
            ratios_all[f"{case}/numba_vs_{other}"] = ratio(res, "numba", other)
            ranges_all[f"{case}/numba_vs_{other}"] = ratio_range(res, "numba", other)
    cases = [f"n{n}_m{m}_inst{i}" for n, m, i in CASES]
    notes += goal_notes(ratios_all, {f"{case}/numba_vs_{other}": (least, f"numba over {other}")
                                     for case in cases for other, least in (("numpy", 5), ("torch", 15))}, ranges_all)
    notes.append("data generation is included in every timing")
    notes.append("numba runs its instances on every core (one range of instances per thread); the NumPy twin's "
                 "small einsums run on one: up to the core count of numba_vs_numpy is the second core")
    return {"benchmark": "toy", "unit": "inst-steps/s",
            "config": {"batch": BATCH, "cases": [f"n={n},m={m},inst={i}" for n, m, i in CASES], "dtype": "float64"},
            "results": results_all, "ratios": ratios_all, "notes": notes}
