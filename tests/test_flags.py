"""Flat flag names reach every knob, nested or not, and change nothing else."""
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crackcore.decode import DecodeConfig
from crackcore.engine.evaluate import EvalConfig
from crackcore.engine.config import NESTED_FIELDS, TrainConfig
from crackcore.flags import flag_names, nested_configs, with_flags


def test_with_flags_reaches_nested_knobs_by_their_flag_names():
    cfg = with_flags(TrainConfig(), radius_rule="released", alpha=3.0, brightness=0.0, epochs=5)
    assert (cfg.labels.radius_rule, cfg.loss.alpha, cfg.augmentation.brightness, cfg.epochs) == ("released", 3.0, 0.0, 5)
    assert (cfg.labels.sigma_rule, cfg.loss.beta, cfg.augmentation.contrast) == ("paper", 4.0, 0.2)  # neighbours kept
    with pytest.raises(TypeError, match="TrainConfig has no knob 'alhpa'"):
        with_flags(TrainConfig(), alhpa=3.0)
    with pytest.raises(TypeError, match="no knob 'labels'"):  # a nested config is not a knob: its fields are
        with_flags(TrainConfig(), labels=None)
    assert with_flags(EvalConfig(), k=5, split="val").decoding == DecodeConfig(k=5)


def test_flag_names_are_the_plain_fields_of_the_config_and_of_its_nested_configs():
    assert set(nested_configs(TrainConfig())) == set(NESTED_FIELDS) == {"augmentation", "labels", "loss"}
    cfg = TrainConfig()
    expected = {f.name for f in fields(cfg)} - set(NESTED_FIELDS)
    for n in NESTED_FIELDS:
        expected |= {f.name for f in fields(getattr(cfg, n))}
    assert flag_names(cfg) == expected and {"alpha", "radius_rule", "crop_p", "epochs"} <= expected
    assert flag_names(EvalConfig()) >= {"k", "threshold", "nms_iou", "checkpoint"} and "decoding" not in flag_names(EvalConfig())


def _value(cfg, name):
    for n in (None, *nested_configs(cfg)):
        owner = cfg if n is None else getattr(cfg, n)
        if name in {f.name for f in fields(owner)}:
            return getattr(owner, name)


@settings(max_examples=30, deadline=None)
@given(st.sets(st.sampled_from(sorted(flag_names(TrainConfig())))))
def test_setting_knobs_to_their_own_values_changes_nothing(names):
    cfg = TrainConfig(epochs=7, seed=3)
    assert with_flags(cfg, **{n: _value(cfg, n) for n in names}) == cfg
