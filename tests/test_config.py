"""TrainConfig validation and presets: invalid settings never make it into a run."""
from __future__ import annotations

import dataclasses
import math

import pytest

from core.training.config import PRESETS, SETTINGS, TrainConfig, plan
from core.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_a_dict():
    cfg = TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("field, value", [
    ("lr", -0.1), ("lr", 0.0), ("lr", math.nan), ("lr", math.inf), ("lr", 1e6), ("batch_size", 0),
    ("batch_size", 10**7), ("epochs", 0), ("epochs", 2.5), ("model", "gpt-5"), ("dataset", "imagenet"),
    ("optimizer", "lbfgs"), ("schedule", "exponential"), ("dropout", 1.0), ("dropout", -0.1),
    ("label_smoothing", 1.0), ("momentum", 1.0), ("precision", "fp8"), ("device", "tpu"),
    ("max_steps", -1), ("limit_batches", -3), ("train_size", -5), ("per_class", 10**7), ("augment", "yes"), ("seed", -1),
    ("weight_decay", -1e-4), ("rotate_deg", 400),
])
def test_invalid_value_is_rejected_naming_the_setting_as_the_form_shows_it(field, value):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{field: value})
    assert caught.value.field == field
    assert str(caught.value).startswith(SETTINGS[field].label)


def test_zero_means_not_set_for_the_settings_whose_label_says_so():
    cfg = TrainConfig(max_steps=0, limit_batches=0, train_size=0, per_class=0)
    assert (cfg.max_steps, cfg.limit_batches, cfg.train_size, cfg.per_class) == (None, None, None, None)
    assert cfg == TrainConfig() and "0 = no limit" in SETTINGS["max_steps"].label
    with pytest.raises(ConfigError, match=r"must be 0 or a whole number from 1 to"):  # the rule names what 0 means too
        TrainConfig(max_steps=-1)
    for not_a_count in (False, 0.0):  # only the whole number 0 means "not set"
        with pytest.raises(ConfigError):
            TrainConfig(max_steps=not_a_count)


def test_a_clash_names_the_other_setting_as_the_form_shows_it():
    with pytest.raises(ConfigError) as caught:
        TrainConfig(per_class=1, train_on_val=True)
    assert f"turn off '{SETTINGS['train_on_val'].label}'." in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        TrainConfig(patience=2, train_on_val=True)
    assert f"turn off '{SETTINGS['train_on_val'].label}'." in str(caught.value)


def test_momentum_only_with_sgd():
    assert TrainConfig(optimizer="sgd", momentum=0.9).momentum == 0.9
    with pytest.raises(ConfigError, match="Momentum"):
        TrainConfig(optimizer="adam", momentum=0.9)


def test_unknown_setting_is_rejected():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_and_overrides_apply(preset):
    cfg = TrainConfig.from_preset(preset, epochs=1)
    assert cfg.epochs == 1 and cfg.extra["preset"] == preset


def test_presets_follow_the_article():
    mlp, cnn = TrainConfig.from_preset("seed-mlp"), TrainConfig.from_preset("seed-cnn")
    assert (mlp.model, mlp.optimizer, mlp.lr, mlp.batch_size, mlp.momentum) == ("seed-mlp", "sgd", 0.01, 100, 0.0)
    assert (cnn.model, cnn.optimizer, cnn.epochs, cnn.batch_size) == ("seed-cnn", "adam", 5, 64)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="seed-cnn"):
        TrainConfig.from_preset("nope")


def test_every_config_field_has_a_setting_for_the_form_and_the_checks():
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}
    assert set(SETTINGS) == fields


def test_plan_counts_images_and_steps_after_every_limit():
    sizes = {"train": 55_000, "val": 5_000, "test": 10_000}
    fast = plan(TrainConfig.from_preset("fast"), sizes)  # all 60,000 images, batch 256, 1 epoch
    assert (fast.train_images, fast.steps_per_epoch, fast.total_steps, fast.images) == (60_000, 235, 235, 60_000)
    seed = plan(TrainConfig.from_preset("seed-cnn"), sizes)  # batch 64, 5 epochs
    assert (seed.steps_per_epoch, seed.total_steps, seed.images) == (938, 4_690, 300_000)
    small = plan(TrainConfig(train_size=1_000, batch_size=300, epochs=3), sizes)
    assert (small.train_images, small.steps_per_epoch, small.total_steps, small.images) == (1_000, 4, 12, 3_000)
    capped = plan(TrainConfig(batch_size=100, epochs=5, limit_batches=10, max_steps=25), sizes)
    assert (capped.steps_per_epoch, capped.total_steps, capped.images) == (10, 25, 2_500)
    both = plan(TrainConfig(train_size=1_000, train_on_val=True), sizes)  # the limit applies before validation joins
    assert both.train_images == 6_000


def test_a_privacy_delta_too_large_for_the_data_is_warned_about():
    from core.training.config import advice

    sizes = {"train": 1_000, "val": 100, "test": 100}
    cfg = TrainConfig(model="seed-cnn", dp=True, delta=1e-2, optimizer="sgd")
    assert any("δ" in note for note in advice(cfg, plan(cfg, sizes)))
    assert not any("δ" in note for note in advice(cfg.replace(delta=1e-5), plan(cfg, sizes)))


def test_adam_betas_reach_the_optimiser_and_sgd_refuses_them():
    import torch

    from core.models.zoo import build_model
    from core.training.train import make_optimizer

    cfg = TrainConfig(optimizer="adam", beta1=0.7, beta2=0.9)
    optimizer = make_optimizer(cfg, build_model("seed-mlp"))
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["betas"] == (0.7, 0.9)
    assert make_optimizer(cfg.replace(optimizer="adamw"), build_model("seed-mlp")).param_groups[0]["betas"] == (0.7, 0.9)
    with pytest.raises(ConfigError, match="β1 and β2 apply to the adam and adamw"):
        TrainConfig(optimizer="sgd", beta1=0.7)
    with pytest.raises(ConfigError, match="Adam β2 must be"):
        TrainConfig(beta2=1.0)


def test_a_chosen_training_size_with_validation_joining_is_warned_about():
    # A tester's "--train-size 2000" run trained on 7,000 images, the preset adding the validation images unseen
    from core.training.config import advice

    sizes = {"train": 55_000, "val": 5_000, "test": 10_000}
    cfg = TrainConfig(train_size=2_000, train_on_val=True)
    (note,) = [n for n in advice(cfg, plan(cfg, sizes)) if "validation images join" in n]
    assert "each epoch trains on 7,000 images" in note
    assert not [n for n in advice(cfg.replace(train_on_val=False), plan(cfg.replace(train_on_val=False), sizes))
                if "validation images join" in n]
    assert not [n for n in advice(cfg.replace(train_size=None), plan(cfg.replace(train_size=None), sizes))
                if "validation images join" in n]  # all the images: nothing was chosen
