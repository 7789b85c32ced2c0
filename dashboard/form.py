"""The Train page's settings form, generated from core.training.config.SETTINGS: one widget per TrainConfig field.

`fill(cfg)` puts a config's values in the form (a preset); `draw(name)` draws one setting's widget;
`config_values()` reads the form back as TrainConfig values. Labels, ranges and options come from core,
so the form, the CLI and validation can never disagree.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from core.errors import DigitLabError
from core.training.config import SETTINGS, TrainConfig
from core.training.devices import auto_precision, pick_device
from core.data.datasets import DATASETS
from core.models.zoo import ZOO

VALUES = "train_values"  # the form's values; widget state is dropped when a widget is hidden, these are not
DEFAULTS = TrainConfig()


def _key(name: str) -> str:
    return f"train_{name}"


def fill(cfg: TrainConfig) -> None:
    """Show `cfg`'s values in the form (optional settings that are not set show as 0)."""
    values = st.session_state.setdefault(VALUES, {})
    for name, setting in SETTINGS.items():
        value = getattr(cfg, name)
        values[name] = st.session_state[_key(name)] = (value or 0) if setting.optional and setting.kind == "integer" \
            else value


def visible(name: str) -> bool:
    """Whether a setting applies given the others (momentum only for SGD, and so on)."""
    condition = SETTINGS[name].shown_if
    if condition is None:
        return True
    value, wanted = st.session_state[VALUES].get(condition[0]), condition[1]
    return value in wanted if isinstance(wanted, tuple) else value == wanted


def draw(name: str, where: Any = st) -> None:
    """The widget for setting `name` (nothing when it does not apply), seeded from the form's values."""
    if not visible(name):
        return
    setting, key = SETTINGS[name], _key(name)
    st.session_state.setdefault(key, st.session_state[VALUES][name])
    if setting.kind == "choice":
        where.selectbox(setting.label, list(setting.options), key=key, help=setting.help or None,
                        format_func=TITLES.get(name, str))
    elif setting.kind == "flag":
        where.toggle(setting.label, key=key, help=setting.help or None)
    # Number boxes have no bounds of their own: a value typed outside a box's bounds is never sent (the box turns red,
    # "Press Enter to apply", and Start training ran with the old value). Every typed value reaches TrainConfig's
    # checks instead, whose message names the setting and its range and keeps Start disabled until it is fixed.
    elif setting.kind == "integer":
        where.number_input(setting.label, step=int(setting.step or 1), key=key, help=setting.help or None)
    elif setting.widget == "slider":
        where.slider(setting.label, float(setting.low), float(setting.form_high or setting.high), key=key,
                     help=setting.help or None)
    else:
        step = setting.step or 0.01
        where.number_input(setting.label, step=step, format="%.6f" if step < 1e-4 else "%.5f" if step < 1e-2 else "%.2f",
                           key=key, help=setting.help or None)
    st.session_state[VALUES][name] = value = st.session_state[key]
    if setting.kind in ("integer", "number"):  # a value out of range is named under its own box too, where it was typed
        try:
            setting.check(name, setting.read(value))
        except DigitLabError as error:
            where.error(str(error), icon=":material/error:")


def config_values() -> dict[str, Any]:
    """The form as TrainConfig values: hidden settings at their defaults (an optional one's 0 TrainConfig reads as
    "not set")."""
    values = dict(st.session_state[VALUES])
    for name in SETTINGS:
        if not visible(name):
            values[name] = getattr(DEFAULTS, name)
    return {k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}


def _model_title(name: str) -> str:
    return f"{ZOO[name].title} · {ZOO[name].params / 1000:.0f}k params"  # short: it must fit a third of the page


def _precision_title(name: str) -> str:
    """`auto` says what it means here, for the model and device now in the form: "auto (bf16 here)"."""
    if name != "auto":
        return name
    values = st.session_state.get(VALUES, {})
    try:
        device = pick_device(values.get("device", "auto"))
    except DigitLabError:  # a device this machine lacks: starting the run says so
        return "auto"
    return f"auto ({auto_precision(values.get('model', DEFAULTS.model), device, bool(values.get('dp')))} here)"


TITLES = {"model": _model_title, "dataset": lambda name: DATASETS[name].title,  # how some choices read
          "precision": _precision_title}
