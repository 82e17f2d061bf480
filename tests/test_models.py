"""Backbones: pinned parameter counts, forward shapes, WordCNN constraints and init, registry errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from models import count_parameters, create_model, list_models, model_entry


def test_mlp500_parameter_count():
    # 784*500 + 500 + 500*10 + 10
    assert count_parameters(create_model("mlp500", 10, (1, 28, 28))) == 397_510


def test_mlp500_default_activation_is_tanh_and_relu_selectable():
    m = create_model("mlp500", 10, (1, 28, 28))
    assert any(isinstance(x, nn.Tanh) for x in m.modules())
    m = create_model("mlp500", 10, (1, 28, 28), activation="relu", hidden=7)
    assert any(isinstance(x, nn.ReLU) for x in m.modules())
    assert count_parameters(m) == 784 * 7 + 7 + 7 * 10 + 10


def test_mlp500_bad_activation():
    with pytest.raises(ValueError, match="gelu"):
        create_model("mlp500", 10, (1, 28, 28), activation="gelu")


def test_resnet20_parameter_count_cifar():
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters (option-A shortcuts add none)
    assert count_parameters(create_model("resnet20", 10, (3, 32, 32))) == 269_722


def test_resnet20_parameter_count_one_channel():
    # the stem conv has 16 * 3 * 3 * (3 - 1) = 288 fewer weights with one input channel
    assert count_parameters(create_model("resnet20", 10, (1, 28, 28))) == 269_722 - 288 == 269_434


def test_resnet20_option_a_has_no_projection_convs():
    m = create_model("resnet20", 10, (3, 32, 32))
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 19  # stem + 9 blocks * 2; plus the fc layer = 20 weighted layers
    assert all(c.kernel_size == (3, 3) for c in convs)


def test_wordcnn_parameter_count():
    V = 1234
    embed = V * 300
    convs = (300 * 100 * 3 + 100) + (300 * 100 * 4 + 100) + (300 * 100 * 5 + 100)  # 360,300
    fc = 300 * 2 + 2
    expected = embed + convs + fc
    assert expected == 370_200 + 360_300 + 602
    assert count_parameters(create_model("wordcnn", 2, (64,), vocab_size=V)) == expected


def test_forward_shapes():
    torch.manual_seed(0)
    assert create_model("mlp500", 10, (1, 28, 28))(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert create_model("mlp500", 3, (3, 8, 8))(torch.rand(2, 3, 8, 8)).shape == (2, 3)
    r = create_model("resnet20", 10, (3, 32, 32)).eval()
    assert r(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    w = create_model("wordcnn", 2, (20,), vocab_size=50).eval()
    out = w(torch.randint(0, 50, (3, 20)))
    assert out.shape == (3, 2) and out.dtype == torch.float32


def test_resnet20_on_mnist_input():
    torch.manual_seed(0)
    r = create_model("resnet20", 10, (1, 28, 28))
    out = r(torch.rand(4, 1, 28, 28))  # 28 -> 14 -> 7 through the stride-2 stages
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert r.conv1.weight.grad is not None


def test_wordcnn_apply_constraints_renormalises_large_rows_only():
    torch.manual_seed(0)
    m = create_model("wordcnn", 3, (20,), vocab_size=50)
    with torch.no_grad():
        w = torch.randn(3, 300)
        w[0] *= 6.0 / w[0].norm()  # norm 6 -> must become 3
        w[1] *= 1.0 / w[1].norm()  # norm 1 -> unchanged
        w[2] *= 2.999 / w[2].norm()  # just under the limit -> unchanged
        m.fc.weight.copy_(w)
    bias_before = m.fc.bias.clone()
    m.apply_constraints()
    got = m.fc.weight
    assert got[0].norm().item() == pytest.approx(3.0, abs=1e-5)
    assert torch.allclose(got[0], w[0] / 2, atol=1e-6)  # same direction, scaled by 3/6
    assert torch.equal(got[1], w[1])
    assert torch.equal(got[2], w[2])
    assert torch.equal(m.fc.bias, bias_before)


def test_wordcnn_constraint_is_per_class_row():
    # the l2 <= 3 constraint is on each class's weight vector (a row of fc.weight), not on columns
    m = create_model("wordcnn", 2, (20,), vocab_size=50)
    with torch.no_grad():
        m.fc.weight.fill_(1.0)  # each row has norm sqrt(300) ~ 17.3, each column sqrt(2)
    m.apply_constraints()
    assert m.fc.weight.norm(dim=1).tolist() == pytest.approx([3.0, 3.0], abs=1e-5)


def test_wordcnn_no_constraint_when_disabled():
    m = create_model("wordcnn", 2, (20,), vocab_size=50, max_norm=None)
    with torch.no_grad():
        m.fc.weight.fill_(1.0)
    m.apply_constraints()
    assert bool((m.fc.weight == 1.0).all())


def test_wordcnn_padding_row_zero_and_embedding_range():
    torch.manual_seed(0)
    m = create_model("wordcnn", 2, (20,), vocab_size=500)
    e = m.embed.weight.detach()
    assert bool((e[0] == 0).all())
    assert float(e[1:].abs().max()) <= 0.25  # CNN-rand: U[-0.25, 0.25]
    assert float(e[1:].abs().max()) > 0.2
    assert m.embed.padding_idx == 0


def test_wordcnn_padding_row_gets_no_gradient():
    torch.manual_seed(0)
    m = create_model("wordcnn", 2, (12,), vocab_size=30, dropout=0.0)
    tokens = torch.tensor([[0, 0, 0, 0, 5, 6, 7, 8, 0, 0, 0, 0]])
    m(tokens).sum().backward()
    assert bool((m.embed.weight.grad[0] == 0).all())
    assert m.embed.weight.grad[5].abs().sum() > 0


def test_create_model_unknown_option_raises_keyerror_naming_it():
    with pytest.raises(KeyError, match="hiden"):
        create_model("mlp500", 10, (1, 28, 28), hiden=100)
    with pytest.raises(KeyError, match="depth"):
        create_model("resnet20", 10, (3, 32, 32), depth=32)


def test_unknown_model_raises_keyerror_listing_known():
    with pytest.raises(KeyError) as e:
        create_model("vgg16", 10, (3, 32, 32))
    msg = str(e.value)
    assert "vgg16" in msg
    for name in ("mlp500", "resnet20", "wordcnn"):
        assert name in msg


def test_registry_input_kinds_and_options():
    assert {"mlp500", "resnet20", "wordcnn"} <= set(list_models())
    assert model_entry("wordcnn").input_kind == "text"
    assert model_entry("mlp500").input_kind == "image" and model_entry("resnet20").input_kind == "image"
    assert model_entry("mlp500").options() == {"hidden", "activation"}
    assert model_entry("resnet20").options() == set()
    assert "vocab_size" not in model_entry("wordcnn").options()
