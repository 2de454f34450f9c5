"""Training settings (dermlib.train.settings): one typed view of the config's train section, nothing added."""

from __future__ import annotations

import pytest

from dermlib.config import get_config


def test_train_settings_name_every_train_key_and_refuse_unknown_ones() -> None:
    from dermlib.config import BASE
    from dermlib.train.settings import TrainSettings

    for profile in ("demo", "paper"):
        cfg = get_config(profile)
        settings = TrainSettings.from_config(cfg)
        assert {f: getattr(settings, f) for f in cfg["train"]} == cfg["train"]  # a view of the section, nothing added
    assert set(BASE["train"]) == set(TrainSettings.__dataclass_fields__)
    demo = get_config("demo")["train"]
    with pytest.raises(KeyError, match=r"missing \['patience'\]"):
        TrainSettings.from_section({k: v for k, v in demo.items() if k != "patience"})
    with pytest.raises(KeyError, match=r"unknown \['warmup'\]"):
        TrainSettings.from_section({**demo, "warmup": 3})
    assert TrainSettings.from_section(demo).replace(strategy="Img").text is False
    # a run saved before an execution-only key existed loads with that key from BASE; a computed key stays required
    old_run = {k: v for k, v in demo.items() if k != "parallel_runs"}
    assert TrainSettings.from_section(old_run).parallel_runs == BASE["train"]["parallel_runs"]
    with pytest.raises(ValueError, match="needs train.threads > 0"):
        get_config("demo", {"train.threads": 0})  # two runs at once must train on the same threads as one
    assert get_config("demo", {"train.threads": 0, "train.parallel_runs": 1})["train"]["threads"] == 0


def test_the_configs_training_choices_are_the_training_steps_own() -> None:
    """dermlib.config_checks writes the choices out (the config sits below every step): they stay the loop's and
    the model's lists, so a value the config accepts is one training takes."""
    from dermlib import config_checks
    from dermlib.train.loop import OPTIMIZERS, SELECTION
    from dermlib.train.model import IMAGE_ENCODERS, POOLINGS

    assert config_checks.OPTIMIZERS == OPTIMIZERS and config_checks.SELECTION == SELECTION
    assert config_checks.IMAGE_ENCODERS == IMAGE_ENCODERS and config_checks.POOLINGS == POOLINGS
    for key, value in (("train.optimizer", "sgd"), ("train.pooling", "max"), ("train.patience", -1),
                       ("train.epochs", 0), ("train.lr", float("inf"))):
        with pytest.raises(ValueError, match=rf"^{key}="):
            get_config("demo", {key: value})
