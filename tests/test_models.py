"""The zoo: every model's shape, size, trainability, and the DeepExplainer-safety rules."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.models import zoo
from core.models.zoo import ZOO, build_model, count_params
from tests.conftest import REPO


@pytest.mark.parametrize("name", list(ZOO))
def test_forward_gives_ten_logits_per_image(name):
    model = build_model(name).eval()
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()


README_SIZES = {  # the README's model table: parameters, forward MFLOPs as printed there
    "seed-mlp": (101_770, "0.20"),
    "seed-cnn": (93_322, "5.59"),
    "dp-cnn": (26_010, "0.84"),
    "resnet": (151_274, "20.5"),
    "vit-tiny": (139_018, "13.2"),
    "speed-cnn": (215_194, "2.49"),
}


def test_readme_lists_every_zoo_model():
    assert set(README_SIZES) == set(ZOO)


@pytest.mark.parametrize("name", list(ZOO))
def test_parameters_and_flops_are_the_ones_the_readme_states(name):
    params, mflops = README_SIZES[name]
    assert count_params(build_model(name)) == ZOO[name].params == params
    decimals = len(mflops.split(".")[1])
    assert f"{ZOO[name].flops / 1e6:.{decimals}f}" == mflops


@pytest.mark.parametrize("name", list(ZOO))
def test_the_stored_sizes_are_a_fresh_count(name):
    """core/assets/zoo_measures.json spares every process FlopCounterMode (and the torch._dynamo it imports): it must
    equal a fresh count of every zoo model; after changing a model, `python -m core.models.zoo` rewrites it."""
    assert tuple(zoo._stored_measures()[name]) == zoo.count_measures(name)


def test_a_process_that_reads_the_sizes_does_not_import_torch_dynamo():
    code = ("import sys; from core.models.zoo import ZOO; [s.flops for s in ZOO.values()]; "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"  # about 170 MB less in the server and in every training process


def _layer_params(model):
    return [count_params(m) for m in model.net if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_seed_models_have_the_articles_layer_sizes():
    # The article's 784-128-10 MLP and its Keras CNN summary (Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense10).
    assert _layer_params(build_model("seed-mlp")) == [784 * 128 + 128, 128 * 10 + 10]
    assert _layer_params(build_model("seed-cnn")) == [320, 18_496, 36_928, 36_928, 650]
    assert [m.out_channels for m in build_model("seed-cnn").net if isinstance(m, nn.Conv2d)] == [32, 64, 64]
    assert [(m.in_features, m.out_features) for m in build_model("seed-cnn").net if isinstance(m, nn.Linear)] \
        == [(3 * 3 * 64, 64), (64, 10)]


@pytest.mark.parametrize("name", list(ZOO))
def test_one_training_step_lowers_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = build_model(name)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    before = F.cross_entropy(model(x), y).item()
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert after < before


@pytest.mark.parametrize("name", [n for n, s in ZOO.items() if "deep" in s.explainers])
def test_deep_explainer_models_reuse_no_activation_and_do_nothing_in_place(name):
    model = build_model(name)
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
            assert id(module) not in seen
            seen.add(id(module))
            assert not getattr(module, "inplace", False)
    calls = {}
    for module in model.modules():  # each activation instance runs exactly once per forward
        if isinstance(module, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
            module.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
    model.eval()(torch.rand(2, 1, 28, 28))
    assert calls and set(calls.values()) == {1}


def test_dropout_does_not_change_weight_names():
    assert build_model("seed-cnn").state_dict().keys() == build_model("seed-cnn", dropout=0.5).state_dict().keys()


def test_normalisation_is_part_of_the_model():
    model = build_model("seed-mlp", mean=0.5, std=0.25)
    assert model.normalize(torch.full((1, 1, 28, 28), 0.75)).flatten()[0].item() == pytest.approx(1.0)
    assert "normalize.mean" in model.state_dict()


def test_a_glow_gives_the_pixels_beside_a_stroke_its_share_of_the_ink():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 10] = 1.0
    out = zoo.Glow(0.2)(x)[0, 0]
    assert out[10, 10] == 1.0 and out[9:12, 9:12].sum().item() == pytest.approx(1.0 + 8 * 0.2)
    assert out.sum().item() == pytest.approx(2.6)  # nothing beyond the 3×3 neighbourhood
    plain = build_model("seed-cnn")
    assert "glow.amount" not in plain.state_dict() and plain.glow_amount == 0.0


def test_a_model_read_with_a_glow_shares_its_network_and_keeps_the_amount_in_its_weights(tmp_path):
    from core.errors import CheckpointError
    from core.inference.weights import load_model, save_model

    torch.manual_seed(0)
    model = build_model("seed-cnn").eval()
    glowing = zoo.with_glow(model, 0.2)
    assert glowing.net is model.net and not glowing.training
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(glowing(x), model(zoo.Glow(0.2)(x)))
    save_model(tmp_path / "w.safetensors", glowing, "seed-cnn")
    loaded = load_model(tmp_path / "w.safetensors")
    assert loaded.glow_amount == pytest.approx(0.2)
    with torch.no_grad():
        assert torch.allclose(loaded(x), glowing(x))
    for amount in (1.0, 0.0, -0.1):  # 0 would build no glow and then refuse its key with a puzzling message
        glowing.glow.amount.fill_(amount)
        save_model(tmp_path / "bad.safetensors", glowing, "seed-cnn")
        with pytest.raises(CheckpointError, match="read through a glow of"):
            load_model(tmp_path / "bad.safetensors")
    glowing.glow.amount = torch.tensor([0.2, 0.3])
    save_model(tmp_path / "bad.safetensors", glowing, "seed-cnn")
    with pytest.raises(CheckpointError, match="one number above 0 and below 1"):
        load_model(tmp_path / "bad.safetensors")
