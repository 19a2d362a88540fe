"""Cache names and configs of tinymono/pipeline.py: every cached file is named by everything it depends on."""
from types import SimpleNamespace

import numpy as np
import pytest

from tinymono import pipeline, settings


def cached_names(monkeypatch):
    """Spies on the stages' writers: -> the list the file names they would use are appended to, and a fake
    training store of 128 neurons (nothing is trained or harvested)."""
    names = []
    monkeypatch.setattr(pipeline, "train", lambda task, steps, checkpoint=None, **kw: names.append(checkpoint.name))
    monkeypatch.setattr(pipeline.activations, "harvest", lambda *a, **kw: names.append(a[3].name))
    monkeypatch.setattr(pipeline, "sae_task", lambda scale, store, d_sae=None, seed=0, second=False: SimpleNamespace(
        cfg=pipeline.sae_config(scale, store.acts.shape[1], d_sae, seed, second), params=None))
    return names, SimpleNamespace(acts=np.zeros((1, 128), np.float16))


def test_a_harvest_setting_names_new_activation_stores(monkeypatch):
    """--set harvest.train must not reuse the plain run's store (of another number of tokens)."""
    names, _ = cached_names(monkeypatch)
    corpus = SimpleNamespace(split=lambda split: SimpleNamespace(tokens=np.zeros(10**8, np.uint16)))
    pipeline.get_stores("default", "c", corpus, None, None)
    plain = list(names)
    names.clear()
    settings.ACTIVE = settings.parse(["harvest.train=5000"])
    pipeline.get_stores("default", "c", corpus, None, None)
    assert plain == ["acts_train", "acts_val"] and names[0] != plain[0], \
        f"a store harvested with other settings must have a name of its own: {plain} -> {names}"


@pytest.mark.parametrize("item", ["train.steps=100", "harvest.train=5000"])
def test_an_sae_of_another_transformer_or_store_gets_a_file_of_its_own(monkeypatch, item):
    """The SAE's file must carry the key of the settings its store depends on: an SAE trained on the
    activations of another transformer (or another harvest) must never be resumed as this one."""
    names, store = cached_names(monkeypatch)
    pipeline.get_sae("default", "c", store)
    settings.ACTIVE = settings.parse([item])
    pipeline.get_sae("default", "c", store)
    assert names[0] == "sae.npz" and names[1] != names[0], f"--set {item} reused the plain run's SAE: {names}"


def test_a_dictionary_of_the_main_size_is_the_main_sae(monkeypatch):
    """get_sae(d_sae=the main run's size) trains the main SAE's config: it must share sae.npz, not train a
    second copy beside it."""
    names, store = cached_names(monkeypatch)
    pipeline.get_sae("default", "c", store)
    pipeline.get_sae("default", "c", store, d_sae=pipeline.SIZES["default"]["sae"]["d_sae"])
    pipeline.get_sae("default", "c", store, d_sae=64)
    assert names == ["sae.npz", "sae.npz", "sae_64.npz"], names


def test_zero_tokens_to_harvest_is_refused_before_anything_runs():
    settings.ACTIVE = settings.parse(["harvest.val=0"])
    with pytest.raises(ValueError, match="harvest.val must be a positive number"):
        pipeline.check_settings("smoke")


def test_the_frontiers_checkpoints_of_close_settings_do_not_share_a_file():
    """TopK's k is an L0 read off the paper's SAEs (often above 100), and an L1 may carry three digits:
    two settings must never name one checkpoint."""
    where = lambda arch, sparsity: pipeline.frontier_checkpoint("c", "default", 128, 0, arch, sparsity)  # noqa: E731
    ks = {where("topk", {"k": k}) for k in (123, 124, 125)}
    l1s = {where("relu", {"l1_coefficient": c}) for c in (1.2e-3, 1.25e-3)}
    assert len(ks) == 3 and len(l1s) == 2, (ks, l1s)
    assert where("topk", {"k": 31}).endswith("09_frontier_topk_31.npz")


def test_frontier_data_is_rebuilt_for_other_windows(monkeypatch):
    """frontier_data keeps one FrontierData per process: asked for windows of another seed, it must draw them,
    not return the held-out windows of the last call."""
    drawn = []

    class Corpus:
        def sample_windows(self, split, n, length, rng):
            drawn.append(int(rng.integers(1 << 30)))
            return np.full((n, length), drawn[-1] % 256, np.uint16), None, None

    class ValStore:
        def __len__(self):
            return 100

        def read(self, a, b):
            return np.zeros((b - a, 4), np.float16)

    tcfg = SimpleNamespace(n_ctx=8, d_mlp=4)
    monkeypatch.setattr(pipeline, "get_transformer", lambda *a, **kw: (Corpus(), {}, tcfg, None, None))
    monkeypatch.setattr(pipeline, "get_stores", lambda *a, **kw: (None, ValStore()))
    monkeypatch.setattr(pipeline.interventions, "mean_loss", lambda *a, **kw: 1.0)
    monkeypatch.setattr(pipeline, "_frontier_data", {})
    one = pipeline.frontier_data("smoke", "c", 0, windows_seed=1)
    two = pipeline.frontier_data("smoke", "c", 0, windows_seed=2)
    assert len(drawn) == 2 and not np.array_equal(one.windows, two.windows), \
        "windows of another seed came from the cache of the last call"
    assert pipeline.frontier_data("smoke", "c", 0, windows_seed=2) is two and len(drawn) == 2, "the same call is cached"


def test_lesson_08s_dictionary_under_set_d_sae_does_not_take_the_plain_main_saes_file(monkeypatch):
    """--set sae.d_sae=64 (default scale): lesson 08's 64-latent SAE is named sae.npz, the plain run's 1024-latent
    main SAE, so it either refuses that checkpoint (another config) or, trained first, poisons the plain run."""
    names = []
    monkeypatch.setattr(pipeline, "train", lambda task, steps, checkpoint=None, **kw: names.append(checkpoint.name))
    monkeypatch.setattr(pipeline, "sae_task", lambda scale, store, d_sae=None, seed=0, second=False: SimpleNamespace(
        cfg=pipeline.sae_config(scale, 128, d_sae, seed, second), params=None))
    store = SimpleNamespace(acts=np.zeros((1, 128), np.float16))
    pipeline.get_sae("default", "c", store)  # the plain run's lesson 06: sae.npz, 1024 latents
    settings.ACTIVE = settings.parse(["sae.d_sae=64"])
    pipeline.get_sae("default", "c", store, d_sae=64)  # lesson 08 under the setting: 64 latents
    assert names[1] != names[0], f"two SAEs of different configs share {names[0]}"
