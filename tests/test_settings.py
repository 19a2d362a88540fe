"""`--set section.field=value`: validated against the configs' fields, recorded, and part of the cache key."""
import dataclasses
import json

import pytest

from tinymono import pipeline, settings
from tinymono.lesson import Lesson, run_folder


def test_parse_reads_values_with_each_fields_type():
    got = settings.parse(["sae.l1_coefficient=4e-4", "sae.d_sae=8192", "sae.backend=numpy", "sae.lr=1",
                          "sae.resample_at=[0.1, 0.2]", "harvest.train=5000", "model.layernorm=False"])
    assert got == {"sae": {"l1_coefficient": 4e-4, "d_sae": 8192, "backend": "numpy", "lr": 1.0,
                           "resample_at": (0.1, 0.2)},
                   "harvest": {"train": 5000}, "model": {"layernorm": False}}
    assert isinstance(got["sae"]["lr"], float), "an int given for a float field must become a float"


@pytest.mark.parametrize("item, says", [
    ("sae.d_sae=1.5", "takes a value of type int"),
    ("sae.d_sae=True", "takes a value of type int"),
    ("sae.l1_coefficient=abc", "takes a value of type float"),
    ("sae.l1coefficient=1", "sae has no field 'l1coefficient'; its fields are"),
    ("saes.d_sae=1", "unknown section 'saes'"),
    ("sae.seed=3", "use --seed"),
    ("sae.d_in=3", "d_mlp"),
    ("sae.d_sae", "section.field=value"),
    ("d_sae=8", "section.field=value"),
    ("sae.lr=1e999", "must be a finite number"),
    ("train.lr=nan", "takes a value of type float"),
])
def test_parse_rejects_with_the_reason(item, says):
    with pytest.raises(ValueError) as e:
        settings.parse([item])
    assert says in str(e.value), str(e.value)


@pytest.mark.parametrize("item, says", [("sae.d_sae=0", "d_sae must be a positive integer"),
                                        ("harvest.train=-5", "harvest.train must be a positive number")])
def test_values_the_config_refuses_are_refused_before_anything_runs(item, says):
    settings.ACTIVE = settings.parse([item])
    with pytest.raises(ValueError, match=says):
        pipeline.check_settings("smoke")


def test_settings_reach_the_configs_and_only_theirs():
    plain_sae, plain_model = pipeline.sae_config("default", 128), pipeline.transformer_configs("default")
    settings.ACTIVE = settings.parse(["sae.l1_coefficient=4e-4", "sae.d_sae=8192", "train.batch=16"])
    assert pipeline.sae_config("default", 128) == dataclasses.replace(plain_sae, l1_coefficient=4e-4, d_sae=8192)
    model, train = pipeline.transformer_configs("default")
    assert model == plain_model[0] and train == dataclasses.replace(plain_model[1], batch=16)
    assert pipeline.sae_config("default", 128, seed=2).seed == 2, "the seed comes from --seed, never a setting"


def test_the_frontiers_saes_take_the_sae_settings_they_do_not_set_themselves():
    """Lesson 09's frontier trains each variant at its own sparsity and budget; every other field of lesson 06's
    recipe, --set included, must reach it (a frontier ReLU SAE kept resample_encoder_scale 0.2 under a --set of
    0.5, while the main SAE plotted beside it used 0.5)."""
    settings.ACTIVE = settings.parse(["sae.resample_encoder_scale=0.5", "sae.adam_eps=1e-6", "sae.steps=123"])
    relu = pipeline.frontier_config("default", 128, "relu", l1_coefficient=1.2e-3)
    topk = pipeline.frontier_config("default", 128, "topk", k=31)
    assert (relu.resample_encoder_scale, relu.adam_eps, topk.adam_eps) == (0.5, 1e-6, 1e-6)
    assert relu.steps == topk.steps == pipeline.FRONTIER_RUN["default"]["steps"], "the frontier's own budget stays"
    assert topk.resample_steps == [] and relu.resample_steps, "only the paper's SAE resamples"
    assert (relu.l1_coefficient, topk.k) == (1.2e-3, 31)


def test_doc_bytes_set_for_one_source_keeps_the_scales_others():
    settings.ACTIVE = settings.parse(['corpus.doc_bytes={"python": (1000, 4000)}'])
    docs = pipeline.corpus_config("default").doc_bytes
    assert docs["python"] == (1000, 4000)
    assert {s: docs[s] for s in pipeline.SHORT_DOCS} == pipeline.SHORT_DOCS, "the default scale's short documents stay"


def test_the_cache_key_names_what_a_setting_changes():
    assert pipeline.settings_tag("corpus", "model", "train") == "" == settings.key({})
    settings.ACTIVE = settings.parse(["sae.l1_coefficient=4e-4"])
    assert pipeline.settings_tag("corpus", "model", "train") == "", "an SAE setting must reuse the transformer"
    sae_tag = pipeline.settings_tag("corpus", "model", "train", "harvest", "sae")
    assert len(sae_tag) == 9 and sae_tag.startswith("-")
    settings.ACTIVE = settings.parse(["sae.l1_coefficient=5e-4"])
    assert pipeline.settings_tag("corpus", "model", "train", "harvest", "sae") != sae_tag, \
        "another value must name another file, or a stale SAE would be reused"
    settings.ACTIVE = settings.parse(["train.steps=100"])
    assert pipeline.settings_tag("corpus", "model", "train") != "", "a training setting must retrain the transformer"
    a = settings.parse(["sae.d_sae=8", "sae.lr=0.01"])
    b = settings.parse(["sae.lr=0.01", "sae.d_sae=8"])
    assert settings.key(a) == settings.key(b), "the key must not depend on the order of --set"
    assert run_folder("smoke", 1, a) == f"smoke-seed1-set-{settings.key(a)}" and run_folder("smoke", 0, {}) == "smoke"


def test_a_lesson_takes_set_and_records_it(tmp_path):
    lesson = Lesson("x", argv=["--scale", "smoke", "--runs", str(tmp_path), "--set", "sae.d_sae=64"])
    key = settings.key({"sae": {"d_sae": 64}})
    assert lesson.out == tmp_path / f"smoke-set-{key}" / "x"
    assert lesson.cache == tmp_path / "smoke" / "cache", "one cache: files are named by the settings they use"
    assert json.loads((tmp_path / f"smoke-set-{key}" / "settings.json").read_text())["set"] == ["sae.d_sae=64"]
    assert pipeline.sae_config("smoke", 128).d_sae == 64
    with pytest.raises(SystemExit):
        Lesson("x", argv=["--scale", "smoke", "--runs", str(tmp_path), "--set", "sae.nope=1"])


def test_a_lesson_reads_settings_from_the_environment_in_a_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMONO_SET", "sae.d_sae=32; sae.steps=7")
    lesson = Lesson("x", argv=["--scale", "smoke", "--runs", str(tmp_path)])
    assert lesson.settings == {"sae": {"d_sae": 32, "steps": 7}}


def test_a_frontier_worker_takes_the_drivers_settings(monkeypatch, tmp_path):
    """Lesson 09's frontier SAEs train in spawned workers, which start with no settings: each job carries the
    driver's, so a `--set` run measures its own transformer, and its SAEs get checkpoints of their own."""
    seen = []

    class Stop(Exception):
        pass

    def spy(*args):
        seen.append(settings.canonical(settings.ACTIVE))
        raise Stop

    monkeypatch.setattr(pipeline, "frontier_data", spy)
    driver = settings.parse(["train.steps=30"])
    job = dict(scale="smoke", cache=str(tmp_path), seed=0, windows_seed=1, architecture="relu",
               sparsity={"l1_coefficient": 1e-3}, settings=driver, checkpoint=str(tmp_path / "x.npz"))
    settings.ACTIVE = {}  # a fresh worker
    with pytest.raises(Stop):
        pipeline.frontier_stage(job)
    assert seen == [settings.canonical(driver)], "the worker must load the transformer of the driver's settings"
    settings.ACTIVE = {}
    where = lambda: pipeline.frontier_checkpoint(tmp_path, "smoke", 16, 0, "relu", {"l1_coefficient": 1e-3})  # noqa: E731
    plain = where()
    settings.ACTIVE = driver
    assert where() != plain, "a --set run's frontier SAE must not resume the plain run's checkpoint"


def test_an_saes_file_is_named_by_what_it_trains():
    """A setting that leaves an SAE's config as it was reuses its file; one that changes it never does: the
    frontier sets its own L1 coefficient, lesson 08's dictionary its own size, and a value equal to the
    default changes nothing."""
    frontier = lambda: pipeline.frontier_checkpoint("c", "default", 128, 0, "relu", {"l1_coefficient": 1.2e-3})  # noqa: E731
    small = lambda: pipeline.recipe_tag(lambda: pipeline.sae_config("default", 128, d_sae=64))  # noqa: E731
    main = lambda: pipeline.recipe_tag(lambda: pipeline.sae_config("default", 128))  # noqa: E731
    plain = frontier()
    assert plain.endswith("09_frontier_relu_0.0012.npz") and small() == "" == main(), "the plain run's names"
    settings.ACTIVE = settings.parse(["sae.l1_coefficient=4e-4"])
    assert frontier() == plain and small() != "" and main() != ""  # (sae_64 and sae: the same change, two files)
    settings.ACTIVE = settings.parse(["sae.d_sae=8192"])
    assert small() == "" and main() != "" and frontier() != plain
    settings.ACTIVE = settings.parse(["sae.l1_coefficient=2.4e-3"])  # the default scale's own value
    assert main() == "" and frontier() == plain


@pytest.mark.parametrize("item, says", [("sae.lr=True", "takes a value of type float"),  # a bool is no float
                                        ("sae.backend=", "section.field=value"),  # nor an empty value
                                        ("sae.backend= ", "section.field=value")])
def test_parse_refuses_a_bool_for_a_float_and_an_empty_value(item, says):
    with pytest.raises(ValueError, match=says):
        settings.parse([item])
