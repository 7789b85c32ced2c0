"""Layer analysis works for every zoo model, shows the real forward pass, and leaves the model alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data.datasets import to_float
from core.errors import ExplanationError
from core.insight.layers import activations, input_filters, vit_tokens
from core.models.zoo import ZOO, build_model

EXPECTED = {  # (layer name, output shape) for each zoo model
    "seed-mlp": [("net.1", (128,)), ("net.2", (128,)), ("net.4", (10,))],
    "seed-cnn": [("net.0", (32, 26, 26)), ("net.1", (32, 26, 26)), ("net.2", (32, 13, 13)), ("net.3", (64, 11, 11)),
                 ("net.4", (64, 11, 11)), ("net.5", (64, 5, 5)), ("net.6", (64, 3, 3)), ("net.7", (64, 3, 3)),
                 ("net.9", (64,)), ("net.10", (64,)), ("net.12", (10,))],
    "resnet": [("net.0", (32, 28, 28)), ("net.1", (32, 28, 28)), ("net.2", (32, 28, 28)), ("net.3", (32, 14, 14)),
               ("net.4", (32, 14, 14)), ("net.5", (64, 7, 7)), ("net.6", (64, 7, 7)), ("net.7", (64, 1, 1)),
               ("net.10", (10,))],
    "dp-cnn": [("net.0", (16, 14, 14)), ("net.1", (16, 14, 14)), ("net.2", (16, 13, 13)), ("net.3", (32, 5, 5)),
               ("net.4", (32, 5, 5)), ("net.5", (32, 4, 4)), ("net.7", (32,)), ("net.8", (32,)), ("net.10", (10,))],
    "speed-cnn": [("net.0", (24, 24, 24)), ("net.1", (24, 12, 12)), ("net.2", (24, 12, 12)), ("net.3", (32, 10, 10)),
                  ("net.4", (32, 5, 5)), ("net.5", (32, 5, 5)), ("net.7", (256,)), ("net.8", (256,)), ("net.10", (10,))],
    "vit-tiny": [("net.patch_embed", (64, 7, 7))] + [(f"net.encoder.layers.{i}", (50, 64)) for i in range(4)]
                + [("net.norm", (50, 64)), ("net.head", (10,))],
}
FILTERS = {"seed-mlp": ("dense", (128, 28, 28)), "seed-cnn": ("conv", (32, 3, 3)), "dp-cnn": ("conv", (16, 8, 8)), "resnet": ("conv", (32, 3, 3)),
           "speed-cnn": ("conv", (24, 5, 5)), "vit-tiny": ("patch", (64, 4, 4))}


def test_every_zoo_model_is_covered():
    assert set(EXPECTED) == set(ZOO) == set(FILTERS)


@pytest.mark.parametrize("name", list(ZOO))
def test_activations_follow_the_real_forward_pass(name, digits):
    torch.manual_seed(0)
    model = build_model(name).eval()
    image = digits.test_x[0]
    layers = activations(model, image)
    assert [(a.name, a.shape) for a in layers] == EXPECTED[name]
    with torch.no_grad():
        logits = model(to_float(image[None]))[0].numpy()
    np.testing.assert_allclose(layers[-1].values, logits, rtol=1e-5, atol=1e-5)  # the last layer is the output
    assert all(np.isfinite(a.values).all() for a in layers)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def _manual_forward(model, x):
    """Every unit's output from calling the model's modules by hand, in the order its forward uses them."""
    net, out = model.net, {}
    h = model.normalize(x)
    if isinstance(net, torch.nn.Sequential):
        for i, module in enumerate(net):
            h = out[f"net.{i}"] = module(h)
        return out
    h = out["net.patch_embed"] = net.patch_embed(h)  # TinyViT, step by step as in its forward
    h = torch.cat([net.cls_token.expand(1, -1, -1), h.flatten(2).transpose(1, 2)], dim=1) + net.pos_embed
    for i, block in enumerate(net.encoder.layers):
        h = out[f"net.encoder.layers.{i}"] = block(h)
    h = out["net.norm"] = net.norm(h)
    out["net.head"] = net.head(h[:, 0])
    return out


@pytest.mark.parametrize("name", list(ZOO))
def test_activations_equal_a_manual_forward_through_the_same_modules(name, digits):
    torch.manual_seed(1)
    model = build_model(name).eval()
    with torch.no_grad():
        for m in model.modules():  # non-trivial BatchNorm statistics, so a skipped or misplaced layer shows
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        expected = _manual_forward(model, to_float(digits.test_x[5][None]))
    layers = activations(model, digits.test_x[5])
    assert [a.name for a in layers] == [n for n, _ in EXPECTED[name]]
    for layer in layers:
        np.testing.assert_allclose(layer.values, expected[layer.name][0].numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=layer.name)
        assert layer.kind == type(model.get_submodule(layer.name)).__name__


@pytest.mark.parametrize("name", list(ZOO))
def test_input_filters_show_what_the_first_layer_looks_for(name):
    torch.manual_seed(0)
    model = build_model(name)
    filters = input_filters(model)
    assert (filters.kind, filters.images.shape) == FILTERS[name]
    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert model.get_submodule(filters.name) is first
    np.testing.assert_allclose(filters.images.reshape(-1), first.weight.detach().reshape(-1).numpy())


def test_relu_layers_show_no_negative_activations(digits):
    layers = {a.name: a for a in activations(build_model("seed-cnn"), digits.test_x[3])}
    assert layers["net.1"].kind == "ReLU" and layers["net.1"].is_map and layers["net.1"].values.min() >= 0
    np.testing.assert_allclose(layers["net.1"].values, np.maximum(layers["net.0"].values, 0))


def test_vit_tokens_give_norms_per_block_and_attention_that_sums_to_one(digits):
    torch.manual_seed(0)
    model = build_model("vit-tiny").eval()
    tokens = vit_tokens(model, digits.test_x[0])
    assert tokens.blocks == tuple(f"net.encoder.layers.{i}" for i in range(4))
    assert tokens.token_norms.shape == (4, 50) and tokens.patch_norm_maps.shape == (4, 7, 7)
    assert tokens.attention.shape == (4, 4, 50, 50) and tokens.cls_attention_maps.shape == (4, 4, 7, 7)
    np.testing.assert_allclose(tokens.attention.sum(-1), 1.0, atol=1e-5)
    blocks = {a.name: a.values for a in activations(model, digits.test_x[0])}
    np.testing.assert_allclose(tokens.token_norms[2], np.linalg.norm(blocks["net.encoder.layers.2"], axis=-1),
                               rtol=1e-4)


def test_token_views_are_refused_for_models_without_transformer_blocks(digits):
    with pytest.raises(ExplanationError, match="no transformer blocks"):
        vit_tokens(build_model("seed-cnn"), digits.test_x[0])
