"""Inside a model: each layer's activations for one image, first-layer filters, and a ViT's tokens and attention.

`activations(model, image)` -> [LayerActivation(name, kind, values)], `input_filters(model)` -> Filters,
`vit_tokens(model, image)` -> TokenAnalysis (TinyViT only). All work on a private copy of the model.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import ExplanationError
from core.insight.explain import as_image, readonly

SKIPPED = (nn.Dropout, nn.Identity, nn.Flatten)  # they show nothing their neighbour does not


@dataclass(frozen=True)
class LayerActivation:
    """One layer's output for one image."""

    name: str  # module path in the model, e.g. "net.0" or "net.encoder.layers.2"
    kind: str  # module class, e.g. "Conv2d", "ReLU", "ResidualBlock", "TransformerEncoderLayer"
    values: np.ndarray  # feature maps (C, H, W), a vector (D,), or tokens (T, D)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def is_map(self) -> bool:
        return self.values.ndim == 3


@dataclass(frozen=True)
class Filters:
    """What the first layer looks for, as small grey images."""

    name: str  # module path of the layer
    kind: str  # "conv" (kernels, e.g. 32×3×3), "patch" (ViT patch embedding) or "dense" (hidden units' 28×28 weights)
    images: np.ndarray  # (K, h, w); signed weights, show with a diverging colour map


@dataclass(frozen=True)
class TokenAnalysis:
    """A ViT's tokens per block: their norms and the attention of every head."""

    blocks: tuple[str, ...]  # module path of each transformer block
    token_norms: np.ndarray  # (blocks, tokens) L2 norm of each token after each block; token 0 is CLS
    patch_norm_maps: np.ndarray  # (blocks, g, g) the patch tokens' norms laid out on the image grid
    attention: np.ndarray  # (blocks, heads, tokens, tokens) softmax attention weights
    cls_attention_maps: np.ndarray  # (blocks, heads, g, g) how much CLS attends to each patch


def layer_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers worth showing, in forward order: the network's children, transformer blocks one by one."""
    net, prefix = (model.net, "net.") if isinstance(getattr(model, "net", None), nn.Module) else (model, "")
    units: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        if isinstance(child, nn.TransformerEncoder):
            units += [(f"{prefix}{name}.layers.{i}", layer) for i, layer in enumerate(child.layers)]
        elif not isinstance(child, SKIPPED):
            units.append((prefix + name, child))
    return units


def activations(model: nn.Module, image: Any) -> list[LayerActivation]:
    """Every layer's output for one image (uint8 or [0, 1] float, 28×28), computed on a private copy."""
    private = copy.deepcopy(model).cpu().eval()  # .cpu()/.eval() on a copy: the original may be in use elsewhere
    units = layer_units(private)
    x = as_image(image)
    traceable = not any(isinstance(m, nn.TransformerEncoder) for m in private.modules())
    found = _traced_outputs(private, units, x) if traceable else _hooked_outputs(private, units, x)
    return [LayerActivation(name, type(module).__name__, readonly(found[name][0]))
            for name, module in units if name in found]


def _traced_outputs(model: nn.Module, units: list[tuple[str, nn.Module]], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Layer outputs through torchvision's FX feature extractor (a module name selects its last node)."""
    from torchvision.models.feature_extraction import create_feature_extractor  # slow import; only here

    extractor = create_feature_extractor(model, return_nodes={name: name for name, _ in units})
    with torch.no_grad():
        return {name: out.detach() for name, out in extractor(x).items()}


def _hooked_outputs(model: nn.Module, units: list[tuple[str, nn.Module]], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Layer outputs through forward hooks, for models FX cannot see inside."""
    # FX keeps nn.TransformerEncoder as one leaf, and cannot trace into it (its fast-path checks branch on
    # tensor properties: "symbolically traced variables cannot be used as inputs to control flow"), so a
    # ViT's blocks have no graph nodes; hooks on the blocks see them.
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in units:
        def keep(_module: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
            found[name] = (output[0] if isinstance(output, tuple) else output).detach()
        handles.append(module.register_forward_hook(keep))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


def input_filters(model: nn.Module) -> Filters:
    """The first conv layer's kernels, a ViT's patch filters, or an MLP's hidden units' incoming weights."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            weights = module.weight.detach().cpu().mean(1)  # (out, kh, kw); grey input has one channel
            kind = "patch" if module.stride == module.kernel_size and module.kernel_size[0] > 1 else "conv"
            return Filters(name, kind, readonly(weights))
        if isinstance(module, nn.Linear):
            if module.in_features != 784:
                break
            return Filters(name, "dense", readonly(module.weight.detach().cpu().view(-1, 28, 28)))
    raise ExplanationError("This model's first layer is neither a convolution nor a dense layer on the 28×28 "
                           "pixels, so it has no input filters to show.")


def vit_tokens(model: nn.Module, image: Any) -> TokenAnalysis:
    """Token norms and per-head attention for each transformer block of a ViT (e.g. the zoo's vit-tiny)."""
    private = copy.deepcopy(model).cpu().eval()
    blocks = [(n, m) for n, m in private.named_modules() if isinstance(m, nn.TransformerEncoderLayer)]
    if not blocks:
        raise ExplanationError("This model has no transformer blocks; token and attention views are for the ViT.")
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, block in blocks:
        def before(_m: nn.Module, args: tuple, name: str = name) -> None:
            inputs[name] = args[0].detach()

        def after(_m: nn.Module, _args: tuple, out: torch.Tensor, name: str = name) -> None:
            outputs[name] = out.detach()
        handles += [block.register_forward_pre_hook(before), block.register_forward_hook(after)]
    try:
        with torch.no_grad():
            private(as_image(image))
            attention = []
            for name, block in blocks:
                # The block's fused fast path does not return weights: recompute its attention explicitly.
                h = block.norm1(inputs[name]) if block.norm_first else inputs[name]
                _, weights = block.self_attn(h, h, h, need_weights=True, average_attn_weights=False)
                attention.append(weights[0])
    finally:
        for handle in handles:
            handle.remove()
    norms = torch.stack([outputs[name][0].norm(dim=-1) for name, _ in blocks])  # (blocks, tokens)
    att = torch.stack(attention)  # (blocks, heads, tokens, tokens)
    grid = int(round((norms.shape[1] - 1) ** 0.5))
    return TokenAnalysis(tuple(n for n, _ in blocks), readonly(norms),
                         readonly(norms[:, 1:].reshape(len(blocks), grid, grid)), readonly(att),
                         readonly(att[:, :, 0, 1:].reshape(len(blocks), att.shape[1], grid, grid)))
