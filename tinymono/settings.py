"""Settings from the command line: `--set section.field=value`, on `reproduce` and on every lesson.

    python -m tinymono reproduce --set sae.l1_coefficient=4e-4 --set sae.d_sae=8192
    python lessons/06_sae_on_transformer.py --set sae.steps=2000

A section is one row of `pipeline.SIZES` and a field is one of that section's config fields:

    corpus   tinymono.corpus.CorpusConfig        (e.g. corpus.n_train_bytes=5_000_000)
    model    tinymono.transformer.TransformerConfig   (e.g. model.d_mlp=256)
    train    tinymono.transformer.TrainConfig    (e.g. train.steps=4000)
    harvest  the tokens of activations harvested: harvest.train, harvest.val
    sae      tinymono.sae.SAEConfig              (e.g. sae.l1_coefficient=4e-4, sae.d_sae=8192)

A value is read as a Python literal (4e-4, 8192, (0.1, 0.2), 'numpy'; a bare word is a string) and must
have the field's type. A run with settings lives in a folder of its own, `<scale>-set-<key>` (key: 8 hex
digits of the settings' hash, see `key`), beside its settings.json; the models it trains are cached beside
the plain run's, each named with the key of the sections it depends on (pipeline.py), so a changed
setting never reuses a stale stage and an unchanged upstream stage (the transformer, when only `sae.*`
changes) is reused. The seed is not a setting: use --seed.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math

# the settings in force in this process: {section: {field: value}} (set once, by Lesson or reproduce)
ACTIVE: dict = {}

HARVEST_FIELDS = ("train", "val")
NOT_SETTINGS = {"seed": "use --seed instead", "d_in": "it is the transformer's d_mlp (set model.d_mlp)"}


def _config_classes():
    from tinymono.corpus import CorpusConfig
    from tinymono.sae import SAEConfig
    from tinymono.transformer import TrainConfig, TransformerConfig

    return {"corpus": CorpusConfig, "model": TransformerConfig, "train": TrainConfig, "sae": SAEConfig}


def fields_of(section):
    """{field name: type name} a section accepts."""
    if section == "harvest":
        return {f: "int" for f in HARVEST_FIELDS}
    cls = _config_classes()[section]
    def kind(t):  # 'int', 'float', 'tuple', ...: the annotation's name (a string under postponed annotations)
        return t.__name__ if isinstance(t, type) else str(t).split("[")[0].split("|")[0].strip()
    return {f.name: kind(f.type) for f in dataclasses.fields(cls) if f.name not in NOT_SETTINGS}


def _typed(text, kind, where):
    """`text` read as a literal of type `kind` ('int', 'float', 'bool', 'str', 'tuple', 'dict')."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = text.strip()  # a bare word: a string
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind == "tuple" and isinstance(value, list):
        value = tuple(value)
    expected = {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple, "dict": dict}.get(kind)
    if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        raise ValueError(f"--set {where}={text}: {where} takes a value of type {kind}, "
                         f"got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # (a child process would read 'inf' back as a word)
        raise ValueError(f"--set {where}={text}: {where} must be a finite number")
    return value


def parse(items):
    """['sae.l1_coefficient=4e-4', ...] -> {'sae': {'l1_coefficient': 0.0004}, ...}; ValueError naming the
    item, and what it may be, for an unknown section or field or a value of the wrong type."""
    sections = ("corpus", "model", "train", "harvest", "sae")
    out: dict = {}
    for item in items or ():
        name, eq, text = item.partition("=")
        section, dot, field = name.strip().partition(".")
        if not eq or not dot or not field or not text.strip():
            raise ValueError(f"--set {item!r}: write it as section.field=value, e.g. sae.l1_coefficient=4e-4")
        if section not in sections:
            raise ValueError(f"--set {item}: unknown section {section!r}; the sections are {', '.join(sections)}")
        if field in NOT_SETTINGS:
            raise ValueError(f"--set {item}: {field} is not a setting: {NOT_SETTINGS[field]}")
        known = fields_of(section)
        if field not in known:
            raise ValueError(f"--set {item}: {section} has no field {field!r}; its fields are "
                             + ", ".join(sorted(known)))
        out.setdefault(section, {})[field] = _typed(text, known[field], name.strip())
    return out


def canonical(overrides, sections=None):
    """The settings of `sections` (all: None) as one canonical JSON string ('{}' for none)."""
    chosen = {s: dict(sorted(f.items())) for s, f in sorted(overrides.items())
              if f and (sections is None or s in sections)}
    return json.dumps(chosen, sort_keys=True, default=list)


def key(overrides, sections=None):
    """8 hex digits naming the settings of `sections` (all: None); '' when there are none."""
    text = canonical(overrides, sections)
    return "" if text == "{}" else hashlib.sha256(text.encode()).hexdigest()[:8]


def describe(overrides):
    """['sae.d_sae=8192', 'sae.l1_coefficient=0.0004']: the settings as the command line reads them back."""
    return [f"{s}.{f}={v!r}" for s, fs in sorted(overrides.items()) for f, v in sorted(fs.items())]


def as_arguments(overrides):
    """The --set arguments that give these settings again (for a child process)."""
    return [a for item in describe(overrides) for a in ("--set", item)]
