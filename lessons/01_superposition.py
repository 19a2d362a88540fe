# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 01: superposition in toy models
#
# *Exercise mode:* `python -m tinymono exercises 01` lets you write this lesson's functions yourself (README.md).
#
# **What the paper says.** "Towards Monosemanticity" starts from a puzzle: single neurons of a language
# model respond to many unrelated things (they are *polysemantic*). Elhage et al.'s "Toy Models of
# Superposition" (2022) offered an explanation: a network that wants to represent more features than it
# has dimensions can store them as *almost orthogonal* directions, as long as the features are rarely
# active at the same time. The interference between them is then a price worth paying. This lesson
# rebuilds their smallest experiments and checks the geometry they found, with numbers.
#
# The setup: n features, each 0 with probability S (the *sparsity*) and otherwise uniform in [0, 1];
# feature f matters with importance I_f. A model squeezes x through m < n dimensions and back:
#
#     h = W x,    x' = ReLU(W^T h + b),    loss = mean over the batch of sum_f I_f (x_f - x'_f)^2
#
# Column W_f is where feature f lives in the hidden space. If W_f is near 0, the feature was dropped.

# %%
import tinymono  # noqa: F401, I001  (first: it tells OpenBLAS how long to spin before NumPy loads it)
import time

import numpy as np

from tinymono import plots, toy
from tinymono.gradcheck import check_gradients, format_table
from tinymono.lesson import Lesson
from tinymono.train import train

lesson = Lesson("01_superposition", reads_settings=False)  # --set changes nothing here
rng = np.random.default_rng(lesson.seeded(0))  # seed 0 keeps the lesson's own seeds (--seed N: lesson.py)

# %% [markdown]
# ## The data
#
# Many small models train at once along an *instance* axis: each instance has its own sparsity and
# importance, so a single run sweeps a range of settings. Here is one batch at three densities
# (1 - S): the fraction of non-zero entries follows the configuration.

# %%
demo = toy.ToyConfig(5, 2, n_inst=3, feature_probability=[1.0, 0.2, 0.05], batch_size=10_000,
                    seed=lesson.seeded(0))
x = toy.generate_batch(demo, step=0)  # [inst, batch, feats]
for i, p in enumerate([1.0, 0.2, 0.05]):
    print(f"density {p:4}: measured fraction of non-zero features {np.mean(x[i] > 0):.3f}; first sample",
          np.round(x[i, 0], 2))

# %% [markdown]
# ## The model, and a check of its hand-written gradient
#
# `toy.forward` and `toy.backward` are the whole model. W is used twice (to encode, then transposed to
# decode), so its gradient is the sum of two terms. Before trusting it, we compare every entry with
# central differences in float64.

# %%
cfg = toy.ToyConfig(5, 2, n_inst=2, importance=0.9 ** np.arange(5), seed=lesson.seeded(0))
params = {"W": rng.standard_normal((2, 2, 5)), "b_final": rng.standard_normal((2, 5))}
xb = toy.generate_batch(cfg, 0, batch_size=8)
out, cache = toy.forward(params, xb, cfg)
per_instance_loss, dout = toy.loss(out, xb, cfg)
grads = toy.backward(params, cache, cfg, dout)
errors = check_gradients(lambda: toy.loss(toy.forward(params, xb, cfg)[0], xb, cfg)[0].sum(), params, grads, 1.0)
print(format_table(errors, budget=1e-7))

# %% [markdown]
# ## From naive to fast
#
# Training runs the step above thousands of times for hundreds of tiny models. In NumPy, each step costs
# a few dozen array operations, each with microseconds of overhead, on arrays of only a few numbers per
# instance, and generating the data dominates. `tinymono/kernels/toy.py` fuses a whole chunk of steps
# (sample, forward, backward, Adam) into one numba loop, one instance per thread. Its random numbers are
# *counter-based* (a hash of seed, step, instance, sample and pair of features), so the kernel and the NumPy code
# draw exactly the same data. First we check they agree; only then do we time them.

# %%
cfg = toy.ToyConfig(5, 2, n_inst=64, feature_probability=0.1, importance=0.9 ** np.arange(5), steps=1000,
                    seed=lesson.seeded(0))
fast, slow = toy.ToyTask(cfg, "numba"), toy.ToyTask(cfg, "numpy")
fast.run_chunk(0, 5), slow.run_chunk(0, 5)  # (also compiles the kernel)
gap = max(np.abs(fast.params[k] - slow.params[k]).max() for k in fast.params)
print(f"after 5 steps, numba and NumPy weights differ by at most {gap:.1e}")
timings = {}
for name, task in (("numpy", slow), ("numba", fast)):
    t0 = time.perf_counter()
    task.run_chunk(5, 20)
    timings[name] = (time.perf_counter() - t0) / 20
print(f"one step of 64 instances: NumPy {1e3 * timings['numpy']:.1f} ms, numba {1e3 * timings['numba']:.2f} ms "
      f"({timings['numpy'] / timings['numba']:.0f}x); `python -m tinymono bench toy` measures this properly")

# %% [markdown]
# ## Experiment 1: five features in two dimensions
#
# One run trains four groups of models side by side: three with importance decaying as 0.9^f, at
# sparsity S = 0, 0.8 and 0.9, and a fourth with uniform importance at density 0.05 (S = 0.95). Gradient
# descent can get stuck in a worse arrangement, so every setting is trained from several random starts,
# and we keep the start with the lowest loss on fresh data.

# %%
S_VALUES = [0.0, 0.8, 0.9]
seeds = lesson.pick(smoke=2, default=8, full=16)
groups = [(f"S = {s}", 1 - s, 0.9 ** np.arange(5)) for s in S_VALUES] + [("uniform, density 0.05", 0.05, np.ones(5))]
intro = toy.ToyConfig(
    5, 2, n_inst=len(groups) * seeds,
    feature_probability=np.repeat([g[1] for g in groups], seeds),
    importance=np.repeat(np.array([g[2] for g in groups]), seeds, axis=0),
    batch_size=lesson.pick(smoke=128, default=1024), steps=lesson.pick(smoke=200, default=6000, full=20000), seed=lesson.seeded(1))
task = toy.ToyTask(intro)
train(task, intro.steps, checkpoint=lesson.cache / "toy_intro.npz", desc="5 features in 2 dims")


def best_per_group(cfg, params, n_groups):
    """The weights [groups, hidden, feats] of each group's lowest-loss instance, and that loss."""
    losses = toy.evaluate(cfg, params).reshape(n_groups, -1)
    best = losses.argmin(axis=1)
    W = params["W"].reshape(n_groups, -1, cfg.d_hidden, cfg.n_features)
    return W[np.arange(n_groups), best], losses[np.arange(n_groups), best]


def angle_deg(u, v):
    """The angle between two feature directions, in degrees."""
    return np.degrees(np.arccos(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1)))


W_best, loss_best = best_per_group(intro, task.params, len(groups))
titles = [g[0] for g in groups]
for t, W, l in zip(titles, W_best, loss_best):
    print(f"{t:>22}: loss {l:.4f}  norms {np.round(toy.feature_norms(W[None])[0], 2)}")
lesson.savefig(plots.feature_directions(W_best, titles, importance=[g[2] for g in groups]), "feature_directions.png",
               "Five features in two dimensions: an orthogonal pair when dense, antipodal pairs at S=0.8, a "
               "pentagon at S=0.9 (and a regular one with uniform importance). Darker: more important.")
lesson.savefig(plots.gram_and_norms(W_best, titles, toy.superposition(W_best), toy.feature_norms(W_best)),
               "gram_and_norms.png", "W^T W (interference) and per-feature norms coloured by superposition "
               "(Elhage et al.'s measure, the sum over others of (W_f direction . W_g)^2: a feature shrunk almost to "
               "nothing along a learned one's direction scores high on it too, so read the colour of the long "
               "bars).")

# %% [markdown]
# **What you should see.** Dense features (S = 0): the model behaves like PCA, giving the two most
# important features a dimension each, at right angles, and shrinking the rest toward zero (small norms
# remain after a finite run). At S = 0.8 four features fit, as two *antipodal pairs* (one feature's
# direction the negative of another's): that costs little, because the ReLU (with a slightly negative bias)
# removes the negative interference when only one of the pair is active. The four kept are usually the four
# most important; the last two differ in importance by only a tenth (0.73 and 0.66), and a start can settle
# with the less important of the two instead, a local minimum the printed norms show when it happens
# (a 0 in fourth place). At S = 0.9 all five fit, at the corners of a pentagon. With uniform importance
# the pentagon is regular.

# %% [markdown]
# ## Experiment 2: the phase diagram of two features in one dimension
#
# The simplest case with a choice to make: n = 2 features, m = 1 dimension. Feature 1 has importance 1;
# we sweep the importance of feature 2 from 0.1 to 10 and the density from 1 to 0.01. Three outcomes
# compete: feature 2 is not learned (W = [1, 0]); it takes the dimension alone (W = [0, 1]); or both
# share it as an antipodal pair (W = [1, -1]). Each grid point trains several models and keeps the one
# with the lowest loss: the others sit in local minima.
#
# **What to expect.** With dense features (density 1, the top row) there is no superposition: one
# dimension, two features always present, so the dimension goes to the more important one, feature 2
# exactly where its importance passes feature 1's (1). The sparser the features, the less the two
# interfere (they are rarely active together), so sharing the dimension as an antipodal pair wins over a
# wider and wider band of importances, until at the sparse end it wins everywhere the grid reaches
# (Elhage et al.'s figure of this experiment has the same three regions).

# %%
PHASES = ["feature 2 not learned", "feature 2 alone (dedicated)", "antipodal superposition", "other"]
G = lesson.pick(smoke=3, default=8, full=16)
phase_seeds = lesson.pick(smoke=2, default=6, full=10)
imp2, density = np.geomspace(0.1, 10, G), np.geomspace(1, 0.01, G)
I2, D = np.meshgrid(imp2, density)  # [density, importance]
phase_cfg = toy.ToyConfig(
    2, 1, n_inst=G * G * phase_seeds,
    feature_probability=np.repeat(D.ravel(), phase_seeds),
    importance=np.stack([np.ones(G * G * phase_seeds), np.repeat(I2.ravel(), phase_seeds)], axis=1),
    batch_size=lesson.pick(smoke=64, default=1024), steps=lesson.pick(smoke=100, default=3000, full=6000), seed=lesson.seeded(3))
phase_task = toy.ToyTask(phase_cfg)
train(phase_task, phase_cfg.steps, checkpoint=lesson.cache / "toy_phase.npz", desc="phase diagram")
W_phase, _ = best_per_group(phase_cfg, phase_task.params, G * G)


def classify(W):
    """W [1, 2] of an n=2, m=1 model -> index into PHASES (a feature counts as learned at |W_f| > 0.5)."""
    w1, w2 = W[0]
    on1, on2 = abs(w1) > 0.5, abs(w2) > 0.5
    if on1 and on2:
        return 2 if w1 * w2 < 0 else 3
    return 1 if on2 else (0 if on1 else 3)


phases = np.array([classify(W) for W in W_phase]).reshape(G, G)
print("rows: density from 1 (top) to 0.01 (bottom); columns: importance of feature 2 from 0.1 (left) to 10 "
      "(right); values: " + ", ".join(f"{i} = {name}" for i, name in enumerate(PHASES)))
print(phases)
lesson.savefig(plots.phase_diagram(phases, imp2, density, PHASES), "phase_diagram.png",
               "Two features in one dimension: which arrangement wins, by importance and density.")

# %% [markdown]
# ## Experiment 3: dimensions per feature, and where they stick
#
# With many features of equal importance, Elhage et al. measured *dimensions per feature*
# D* = m / ||W||_F^2 (||W||_F^2 is roughly the number of features learned) as sparsity grows. Instead of
# falling smoothly, it *sticks* at 1 and at 1/2. Per feature, the dimensionality
# D_f = ||W_f||^2 / sum_g (W_f_hat . W_g)^2 (W_f_hat = W_f / ||W_f||, the unit vector along feature f; the
# sum runs over every feature g, f included) is the fraction of a dimension that feature f gets; in their
# run it clusters at simple fractions: 1 (a dimension of its own), 3/4 (tetrahedron), 2/3 (triangle),
# 1/2 (antipodal pair), 2/5 (pentagon), 3/8 (square antiprism). The paper used n = 400, m = 30 (our
# `full` scale); the default scale uses n = 50, m = 5 so it runs in seconds, and shows only part of that
# picture (see below the figure).

# %%
n_many, m_many = lesson.pick(smoke=(10, 3), default=(50, 5), full=(400, 30))
n_points = lesson.pick(smoke=4, default=16, full=30)
inv_density = np.geomspace(1, 100, n_points)
dims_cfg = toy.ToyConfig(n_many, m_many, n_inst=n_points, feature_probability=1 / inv_density, importance=1.0,
                         batch_size=lesson.pick(smoke=128, default=1024),
                         steps=lesson.pick(smoke=100, default=4000, full=10000), seed=lesson.seeded(2))
dims_task = toy.ToyTask(dims_cfg)
train(dims_task, dims_cfg.steps, checkpoint=lesson.cache / "toy_dims.npz", desc="dimensionality sweep")
W_dims = dims_task.params["W"]
D_star = toy.dims_per_feature(W_dims)
D_f = toy.feature_dimensionality(W_dims)
for x_, d_ in zip(inv_density, D_star):
    print(f"1/(1-S) = {x_:7.2f}   D* = {d_:.3f}")
lesson.savefig(plots.dimensionality(inv_density, D_star, D_f, m_many, n_many), "dimensionality.png",
               "Dimensions per feature D* and per-feature dimensionality D_f against 1/(1-S). At the default "
               "scale (n=50, m=5): D* ~ 1 at the dense end with the D_f mostly small (the dimensions are "
               "shared, none is owned; a few may reach 1/2 or a little above); D* near 1/2 and most learned features at D_f = 1/2 "
               "(antipodal pairs) for 1/(1-S) ~ 2.5-3.4; a smaller fraction near 4.6, about 0.4 (2/5 in some "
               "runs, nearer 3/8 in others); sparser than that, a continuum of D_f from ~0.3-0.4 down to ~0.1.")

# %% [markdown]
# **What you should see** (default scale, n = 50 features in m = 5 dimensions).
#
# - Dense end (1/(1-S) = 1 and 1.36): D* near 1, yet no feature owns a dimension: the D_f are small
#   (mostly below about 0.3; a few features may reach 1/2). With all features equally
#   important and (almost) always present, the data have the same variance in every direction of the
#   50-dimensional feature space once their mean is removed (the output bias can absorb the mean), so no
#   5 directions are better to keep than any others. Training keeps some 5-dimensional subspace, which
#   gives many features a small share each (norms mostly 0.1-0.5, not 1): D* = 1 says that all 5
#   dimensions are in use, not that 5 features have one each.
# - 1/(1-S) = 2.5 and 3.4: D* sticks near 1/2, and the learned features sit at D_f = 1/2: features of norm
#   1 in antipodal pairs (up to five pairs in five dimensions), the others dropped (norm ~0). A run may
#   keep a pair fewer, or a feature or two off the pairs, which lifts D* a little above 1/2.
# - 1/(1-S) = 4.6: D* near 0.4, most learned features at a smaller fraction, about 0.4: 2/5 (pentagons)
#   in some runs, nearer 3/8 in others (the seed decides which arrangement training finds), a few still
#   at 1/2.
# - Sparser than that, the learned features' D_f slide from about 0.3-0.4 down to about 0.1 as sparsity
#   grows (at 6.3 some fourteen to sixteen features share 5 dimensions at 0.31-0.39 each), with no
#   fraction they stick to.
#   The other fractions marked on the plot (1, 3/4, 2/3, 3/8) do not show at this size; Elhage et al.
#   saw them with n = 400, m = 30, the sizes `--scale full` uses.

# %% [markdown]
# ## Experiment 4: correlated and anticorrelated features
#
# So far every feature fired independently of the others. Real features do not: "inside a Python
# string" and "inside a Python comment" never fire on the same token; "Arabic letter" and "right-to-left
# text" fire together. Elhage et al. found that this changes the geometry. Four features of equal
# importance in two dimensions, each present with probability 0.02, come in two pairs:
#
# - *correlated* pairs: both features of a pair are present together, or neither is;
# - *anticorrelated* pairs: at most one feature of a pair is present at a time.
#
# Superposition's cost is interference between features that are active at once. Correlated features
# are active together, so they should avoid each other: at right angles within a pair. Anticorrelated
# features are never active together, so they can share a direction with opposite signs at no cost, the
# antipodal pair of experiment 1 without even the occasional collision.

# %%
pair_seeds = lesson.pick(smoke=2, default=8, full=16)
pair_W = {}
for kind, pairs in (("correlated", dict(n_correlated_pairs=2)), ("anticorrelated", dict(n_anticorrelated_pairs=2))):
    pair_cfg = toy.ToyConfig(4, 2, n_inst=pair_seeds, feature_probability=0.02, importance=1.0,
                             batch_size=lesson.pick(smoke=128, default=1024),
                             steps=lesson.pick(smoke=200, default=6000), seed=lesson.seeded(5), **pairs)
    pair_task = toy.ToyTask(pair_cfg)
    train(pair_task, pair_cfg.steps, checkpoint=lesson.cache / f"toy_{kind}.npz", desc=f"{kind} pairs")
    pair_W[kind] = best_per_group(pair_cfg, pair_task.params, 1)[0][0]  # [hidden, feats]
    within = [angle_deg(pair_W[kind][:, f], pair_W[kind][:, f + 1]) for f in (0, 2)]
    print(f"{kind:>14} pairs: norms {np.round(np.linalg.norm(pair_W[kind], axis=0), 2)}, angle within each "
          f"pair {within[0]:.0f} and {within[1]:.0f} deg, between features 0 and 2 "
          f"{angle_deg(pair_W[kind][:, 0], pair_W[kind][:, 2]):.0f} deg")
lesson.savefig(plots.feature_directions(np.stack(list(pair_W.values())), [f"{k} pairs (0-1, 2-3)" for k in pair_W],
                                        groups=[0, 0, 1, 1]), "correlated_pairs.png",
               "Four equally important features in two dimensions, in pairs 0-1 and 2-3: correlated pairs sit "
               "at right angles within the pair, anticorrelated pairs are antipodal.")

# %% [markdown]
# **What you should see.** Correlated pairs: each pair at right angles (about 90 degrees), and the two
# pairs opposite each other, a cross in which the features that fire together are orthogonal.
# Anticorrelated pairs: each pair antipodal (180 degrees), the two pairs at right angles. All four
# features are learned with norm about 1 either way; what the correlations decide is which features
# may share a direction. Elhage et al. call the first behaviour a preference for *local orthogonal
# bases*: features that co-occur are kept orthogonal, and superposition is spent between features that
# do not. For the SAE lessons this is a warning: how features co-occur shapes the directions a model
# gives them (lesson 03 shows what correlations do to an SAE's recovery of them).

# %% [markdown]
# ## Checks against the ground truth of the geometry
#
# First the code itself (the same bars at every scale): the hand-written gradient against central
# differences, and the fused kernel against the NumPy step it replaces; then the geometry.

# %%
gc_worst = float(max(errors.values()))
lesson.check("gradient check: worst relative error of the toy model's backward", gc_worst, gc_worst < 1e-7,
             "< 1e-07", scale_free=True)
lesson.check("the numba kernel against the NumPy step after 5 steps (largest weight difference)", float(gap),
             gap <= 1e-10, "<= 1e-10", scale_free=True)

# (a) uniform importance, density 0.05: a regular pentagon
W_pent = W_best[3]
norms = np.linalg.norm(W_pent, axis=0)
spread = (norms.max() - norms.min()) / norms.max()
order = np.argsort(np.arctan2(W_pent[1], W_pent[0]))
neighbour = [angle_deg(W_pent[:, order[i]], W_pent[:, order[(i + 1) % 5]]) for i in range(5)]
worst = max(abs(a - 72) for a in neighbour)
lesson.check("(a) pentagon: spread of the 5 norms (max-min)/max", float(spread), spread <= 0.10, "<= 0.10")
lesson.check("(a) pentagon: worst neighbour angle's distance from 72 deg", float(worst), worst <= 5, "<= 5 deg")

# (b) sparsity 0: exactly two features learned, at right angles
W0 = W_best[0]
learned = np.flatnonzero(np.linalg.norm(W0, axis=0) > 0.5)
lesson.check("(b) S=0: number of features with norm > 0.5", int(len(learned)), len(learned) == 2, "== 2")
off = abs(angle_deg(W0[:, learned[0]], W0[:, learned[1]]) - 90) if len(learned) == 2 else float("nan")  # no pair
lesson.check("(b) S=0: the two learned features' angle, distance from 90 deg", float(off), off <= 5, "<= 5 deg")

# (c) sparsity 0.8: four features in two antipodal pairs
W8 = W_best[1]
learned = np.flatnonzero(np.linalg.norm(W8, axis=0) > 0.5)
lesson.check("(c) S=0.8: number of features with norm > 0.5", int(len(learned)), len(learned) == 4, "== 4")
smallest = (min(max(angle_deg(W8[:, f], W8[:, g]) for g in learned if g != f) for f in learned)
            if len(learned) == 4 else float("nan"))  # not two pairs
lesson.check("(c) S=0.8: each learned feature's most opposite partner, min angle", smallest, smallest > 170, "> 170 deg")

# (d) the phase diagram has all three regions, where the theory puts them
corners = {"dense, feature 2 unimportant": (phases[0, 0], 0), "dense, feature 2 important": (phases[0, -1], 1),
           f"sparse, feature 2 about as important ({imp2[G // 2]:.2g}x)": (phases[-1, G // 2], 2)}
for where, (got, want) in corners.items():
    lesson.check(f"(d) phase diagram, {where}", PHASES[got], got == want, PHASES[want])

# (e) correlated pairs: at right angles within each pair; (f) anticorrelated pairs: antipodal. An angle says
# nothing about a feature the model dropped (norm near 0), so all four must be learned (norm > 0.5).
all_learned = {kind: bool(np.all(np.linalg.norm(W, axis=0) > 0.5)) for kind, W in pair_W.items()}
corr_off = max(abs(angle_deg(pair_W["correlated"][:, f], pair_W["correlated"][:, f + 1]) - 90) for f in (0, 2))
lesson.check("(e) correlated pairs: worst within-pair angle's distance from 90 deg", float(corr_off),
             corr_off <= 10 and all_learned["correlated"], "<= 10 deg, all four learned (norm > 0.5)")
anti = min(angle_deg(pair_W["anticorrelated"][:, f], pair_W["anticorrelated"][:, f + 1]) for f in (0, 2))
lesson.check("(f) anticorrelated pairs: smallest within-pair angle", float(anti), anti > 170 and all_learned["anticorrelated"],
             "> 170 deg, all four learned (norm > 0.5)")
lesson.finish()
