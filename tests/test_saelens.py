"""export-sae / import-sae: an SAE trained here in SAELens's on-disk layout, and back."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinymono import checkpoint, sae, saelens
from tinymono.train import train

pytest.importorskip("safetensors")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small SAE trained for a few steps through the shared loop, as pipeline.get_sae writes it."""
    folder = tmp_path_factory.mktemp("sae")
    cfg = sae.SAEConfig(d_in=12, d_sae=40, steps=30, batch_size=64, l1_coefficient=1e-3, resample_at=(0.5,),
                        resample_batches=2, init_sample=64)
    source = lambda rng, n: rng.standard_normal((n, 12)).astype(np.float32) ** 2  # noqa: E731
    task = sae.SAETask(cfg, source)
    train(task, cfg.steps, checkpoint=folder / "sae.npz", progress=False)
    return folder / "sae.npz", task


def safetensors_header(path):
    """The JSON header of a .safetensors file, read by hand (8-byte little-endian length, then JSON)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])


def test_export_writes_saelens_layout(trained, tmp_path):
    path, task = trained
    out = saelens.export(path, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae_weights.safetensors", "tinymono.json"]
    header = safetensors_header(out / "sae_weights.safetensors")
    shapes = {k: (v["dtype"], v["shape"]) for k, v in header.items() if k != "__metadata__"}
    assert shapes == {"W_enc": ("F32", [12, 40]), "b_enc": ("F32", [40]), "W_dec": ("F32", [40, 12]),
                      "b_dec": ("F32", [12])}, "SAELens reads W_enc [d_in, d_sae], W_dec [d_sae, d_in]"
    cfg = json.loads((out / "cfg.json").read_text())
    assert {k: cfg[k] for k in ("architecture", "d_in", "d_sae", "dtype", "hook_name", "normalize_activations",
                                "apply_b_dec_to_input", "activation_fn_str")} == {
        "architecture": "standard", "d_in": 12, "d_sae": 40, "dtype": "float32", "hook_name": "blocks.0.mlp.hook_post",
        "normalize_activations": "none", "apply_b_dec_to_input": True, "activation_fn_str": "relu"}


def test_round_trip_gives_the_same_sae(trained, tmp_path):
    path, task = trained
    saelens.export(path, tmp_path / "exported")
    back = saelens.import_(tmp_path / "exported", tmp_path / "back.npz")
    params, cfg = saelens.load_tinymono(back)
    assert cfg == task.cfg, "the config must survive the round trip (tinymono.json keeps it)"
    for k in saelens.NAMES:
        assert params[k].dtype == task.params[k].dtype and np.array_equal(params[k], task.params[k]), \
            f"{k} changed on the way through safetensors"
    x = np.random.default_rng(1).standard_normal((16, 12)).astype(np.float32) ** 2
    assert np.array_equal(sae.encode(params, x, cfg), sae.encode(task.params, x, task.cfg))
    _, meta = checkpoint.load(back)
    resumed = sae.SAETask(cfg, lambda rng, n: np.ones((n, 12), np.float32), params=None)
    assert train(resumed, cfg.steps, checkpoint=back, progress=False).resumed_from == cfg.steps == meta["step"], \
        "an imported SAE is a finished run: the training loop must load it, not train again"
    assert np.array_equal(resumed.params["W_dec"], task.params["W_dec"])


def test_import_into_a_folder_is_refused_rather_than_written_beside_it(trained, tmp_path):
    path, _ = trained
    out = saelens.export(path, tmp_path / "exported")
    (tmp_path / "imported").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        saelens.import_(out, tmp_path / "imported")
    assert not list(tmp_path.glob("imported.*")), "nothing written beside the folder"


def test_import_reads_a_folder_without_tinymonos_own_config(trained, tmp_path):
    path, task = trained
    out = saelens.export(path, tmp_path / "exported")
    (out / "tinymono.json").unlink()  # as an SAELens folder from elsewhere
    params, cfg = saelens.read(out)
    assert (cfg.d_in, cfg.d_sae, cfg.dtype) == (12, 40, "float32")
    assert np.array_equal(params["b_enc"], task.params["b_enc"])


@pytest.mark.parametrize("change, says", [({"architecture": "topk"}, "topk SAE"),
                                          ({"normalize_activations": "expected_average_only_in"}, "normalisation"),
                                          ({"apply_b_dec_to_input": False}, "apply_b_dec_to_input"),
                                          ({"finetuning_scaling_factor": True}, "finetuning_scaling_factor")])
def test_import_refuses_an_sae_that_computes_other_features(trained, tmp_path, change, says):
    out = saelens.export(trained[0], tmp_path / "exported")
    cfg = json.loads((out / "cfg.json").read_text())
    (out / "cfg.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ValueError, match=says):
        saelens.read(out)


@pytest.mark.parametrize("arch", sorted(set(sae.ARCHITECTURES) - {"relu"}))
def test_export_refuses_a_variant_that_saelens_would_read_as_a_relu_sae(tmp_path, arch):
    """A TopK SAE has exactly the standard tensors: written as 'standard', SAELens would compute ReLU latents
    from them (measured: 19 active latents where TopK keeps 4). The later variants are refused, each by name."""
    opts = {"topk": dict(k=3, aux_k=3), "batchtopk": dict(k=3, aux_k=3)}.get(arch, {})
    cfg = sae.SAEConfig(d_in=6, d_sae=10, steps=2, batch_size=8, l1_coefficient=1e-3, architecture=arch,
                        init_sample=8, **opts)
    task = sae.SAETask(cfg, lambda rng, n: rng.standard_normal((n, 6)).astype(np.float32) ** 2)
    train(task, cfg.steps, checkpoint=tmp_path / "v.npz", progress=False)
    with pytest.raises(ValueError, match=f"is a {arch} SAE"):
        saelens.export(tmp_path / "v.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_export_and_its_errors(trained, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "tinymono", *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=ROOT, timeout=120)
    ok = run("export-sae", str(trained[0]), str(tmp_path / "cli"))
    assert ok.returncode == 0 and (tmp_path / "cli" / "cfg.json").exists(), ok.stderr
    checkpoint.save(tmp_path / "other.npz", {"W": np.zeros(2)}, {"config": {"d_model": 3}})
    wrong = run("export-sae", str(tmp_path / "other.npz"), str(tmp_path / "x"))
    assert wrong.returncode == 2 and "not of an SAE" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = run("import-sae", str(tmp_path / "nothing"), str(tmp_path / "y.npz"))
    assert missing.returncode == 2 and "has no sae_weights.safetensors" in missing.stderr


@pytest.mark.slow
def test_saelens_loads_the_export_and_encodes_the_same(trained, tmp_path):
    """SAELens itself (pip install sae-lens; it needs PyTorch) opens the folder and computes the same features."""
    sae_lens = pytest.importorskip("sae_lens")
    torch = pytest.importorskip("torch")
    path, task = trained
    out = saelens.export(path, tmp_path / "exported")
    theirs = sae_lens.SAE.load_from_disk(str(out), device="cpu")
    x = np.random.default_rng(2).standard_normal((64, 12)).astype(np.float32) ** 2
    with torch.no_grad():
        f_theirs = theirs.encode(torch.from_numpy(x)).numpy()
        x_hat_theirs = theirs.decode(torch.from_numpy(f_theirs)).numpy()
    f_ours = sae.encode(task.params, x, task.cfg)
    assert f_theirs.shape == f_ours.shape == (64, 40)
    assert (f_ours > 0).sum() > 0, "the test needs some active latents to mean anything"
    np.testing.assert_allclose(f_theirs, f_ours, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x_hat_theirs, sae.decode(task.params, f_ours), rtol=1e-5, atol=1e-6)
