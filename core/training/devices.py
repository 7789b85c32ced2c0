"""Where a run trains and in what number format: the device, bf16 autocast where the hardware has it and the model
trains faster in it, and the memory layout of the model's weights."""
from __future__ import annotations

import os

import torch

from core.errors import ConfigError
from core.training.config import TrainConfig


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's cpuset or `taskset`), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pick_device(requested: str = "auto") -> torch.device:
    """auto -> cuda, then mps, then cpu; an explicit device that is absent is an error."""
    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if requested == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    if not has.get(requested, False):
        raise ConfigError(f"device {requested!r} is not available on this machine; use auto or cpu.")
    return torch.device(requested)


# Zoo models that train faster in bf16 autocast than in fp32 where the hardware computes bf16 natively. Measured on
# 2 cores of an Intel Xeon with AMX (images/s, bf16 / fp32): speed-cnn 1.4–1.8×, seed-cnn 1.5×, resnet 1.5×, all at
# the same accuracy; the tiny ViT (0.37×) and the MLP (0.84×) were slower there, so they stay in fp32. On an H200 with
# the steps replayed from a CUDA graph the ResNet was 1.13× faster in bf16 and the speed CNN 0.78× as fast, but the
# speed CNN keeps bf16 there: `fast` in fp32 read 98.91% with seed 2, below its 99% floor (README, Performance).
BF16_FASTER = frozenset({"seed-cnn", "speed-cnn", "resnet"})


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AMX tiles (Intel Xeon
    from Sapphire Rapids on). A CPU with only AVX-512 BF16 is not counted: not measured here, so it stays fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def auto_precision(model: str, device: torch.device, private: bool = False) -> str:
    """What `auto` means for `model` on `device`: bf16 autocast for the models measured faster in it (BF16_FASTER),
    on a device with native bf16, outside private training (DP-SGD stays fp32); fp32 otherwise."""
    return "bf16" if model in BF16_FASTER and not private and native_bf16(device) else "fp32"


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """The precision a run trains in: its setting, with `auto` resolved for its model on `device`."""
    return auto_precision(cfg.model, device, cfg.dp) if cfg.precision == "auto" else cfg.precision


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` on `device` in the layout it trains in (a fresh run and a resumed one alike, so a resumed run still
    ends with the very weights an uninterrupted one has). Convolution weights are channels-last (NHWC; dense layers
    are unchanged): oneDNN's convolutions run much faster in that layout, forward and backward, and the activations
    follow the weights. On this project's 2-core CPU, training images/s went: speed CNN at batch 256 3,600 -> 6,300,
    seed CNN at 64 1,730 -> 2,830, ResNet at 128 780 -> 1,010. Saved weights are written contiguous as before."""
    return model.to(device, memory_format=torch.channels_last)
