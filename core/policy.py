"""Shared-server mode: who may start, stop, rename and delete runs when a class shares one Digit Lab.

Off by default (one person on their own machine can do anything). `DIGIT_LAB_SHARED=1` turns it on:
every visitor (a browser session) owns the runs they start and can stop, resume, rename or delete only
those; the admin (whoever enters `DIGIT_LAB_ADMIN_TOKEN` once in the sidebar) can manage everything;
each visitor may have at most `DIGIT_LAB_MAX_QUEUED` runs queued or training, and no run may ask for more
than `DIGIT_LAB_MAX_EPOCHS` epochs or `DIGIT_LAB_MAX_TRAIN_IMAGES` training images per epoch. Every refusal
is a sentence (a ConfigError, shown in the page).
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any, Mapping

from core.errors import ConfigError

VISITOR_KEY = "visitor"  # the run's config `extra` holds the id of the visitor who started it


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {raw!r}).") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1 (got {value}).")
    return value


@dataclass(frozen=True)
class Policy:
    """What visitors may do; `Policy()` is the single-user default where everything is allowed."""

    shared: bool = False
    admin_token: str | None = None
    max_queued: int = 2  # runs one visitor may have queued or training at once
    max_epochs: int = 30
    max_train_images: int = 60_000  # training images per epoch, after repeat

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Policy":
        env = os.environ if env is None else env
        return cls(shared=_flag(env.get("DIGIT_LAB_SHARED")), admin_token=env.get("DIGIT_LAB_ADMIN_TOKEN") or None,
                   max_queued=_positive(env, "DIGIT_LAB_MAX_QUEUED", cls.max_queued),
                   max_epochs=_positive(env, "DIGIT_LAB_MAX_EPOCHS", cls.max_epochs),
                   max_train_images=_positive(env, "DIGIT_LAB_MAX_TRAIN_IMAGES", cls.max_train_images))

    def is_admin_token(self, token: str) -> bool:
        """Whether `token` is the admin token (constant-time comparison; never true without a configured token)."""
        return bool(self.admin_token) and hmac.compare_digest(token.encode(), self.admin_token.encode())

    def may_manage(self, config: Mapping[str, Any], visitor: str, admin: bool) -> bool:
        """Whether `visitor` may stop, resume, rename or delete the run with this config."""
        if not self.shared or admin:
            return True
        return (config.get("extra") or {}).get(VISITOR_KEY) == visitor

    def check_start(self, epochs: int, train_images: int, queued_by_visitor: int, admin: bool) -> None:
        """Refuse, with a sentence, a run that breaks the server's caps (nothing is refused when not shared)."""
        if not self.shared or admin:
            return
        if epochs > self.max_epochs:
            raise ConfigError(f"This shared server allows at most {self.max_epochs} epochs per run (asked for "
                              f"{epochs}).", field="epochs")
        if train_images > self.max_train_images:
            raise ConfigError(f"This shared server allows at most {self.max_train_images:,} training images per "
                              f"epoch (this run would use {train_images:,}).", field="train_size")
        if queued_by_visitor >= self.max_queued:
            raise ConfigError(f"You already have {queued_by_visitor} run{'s' if queued_by_visitor > 1 else ''} "
                              f"queued or training; this shared server allows {self.max_queued} at a time. Wait for "
                              "one to finish or stop one.")

    def check_experiment(self, admin: bool) -> None:
        """A transfer experiment queues dozens of runs: on a shared server only the admin launches one."""
        if self.shared and not admin:
            raise ConfigError("A transfer experiment queues dozens of runs, so on this shared server only the admin "
                              "can launch, stop or continue one. Enter the admin token in the sidebar.")
