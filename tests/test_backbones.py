"""Backbones, registry-driven: every registered model builds with its pinned parameter count, gives (N, classes)
outputs (on the meta device for all, a real forward/backward on CPU for the small ones), is reachable through timm as
clrepro_<name>; resnet20 is bit-identical to its construction before the variant table; bad options are refused."""
from __future__ import annotations

import hashlib

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from models import count_parameters, create_model, list_models, model_entry
from models.densenet import DenseNetBC
from models.resnet_cifar import DEPTHS, CifarResNet
from models.timm_bridge import PREFIX, register_timm_models
from models.wide_resnet import WideResNet

IMAGE = (3, 32, 32)
MNIST = (1, 28, 28)
TEXT = (64,)
VOCAB = 1000
SMALL = 10_000_000  # real CPU forward/backward below this many parameters; the meta device above

# name -> (10 classes, 100 classes) at 3x32x32 (text: sequence 64, vocabulary 1000)
PARAMS = {
    "resnet8": (75_290, 81_140),
    "resnet20": (269_722, 275_572),  # He et al. Table 6: 0.27M
    "resnet32": (464_154, 470_004),  # 0.46M
    "resnet56": (853_018, 858_868),  # 0.85M
    "resnet110": (1_727_962, 1_733_812),  # 1.7M
    "wrn28_10": (36_489_290, 36_546_980),  # Zagoruyko & Komodakis: 36.5M
    "wrn40_10": (55_856_330, 55_914_020),  # 55.8M
    "densenet_bc_100_12": (769_162, 800_032),  # Huang et al. Table 2: 0.8M
    "densenet_bc_190_40": (25_624_430, 25_821_620),  # 25.6M
    "vgg11_bn": (9_231_114, 9_277_284),
    "vgg16_bn": (14_728_266, 14_774_436),
    "resnet18": (11_181_642, 11_227_812),  # torchvision's 11,689,512 less 1000-class head plus a 10-class one
    "mlp500": (1_541_510, 1_586_600),
    "wordcnn": (663_310, 690_400),
}
# image models at 1x28x28, 10 classes: the stem has (3 - 1) * out * k * k fewer weights
PARAMS_MNIST = {
    "resnet8": 75_002, "resnet20": 269_434, "resnet32": 463_866, "resnet56": 852_730, "resnet110": 1_727_674,
    "wrn28_10": 36_489_002, "wrn40_10": 55_856_042, "densenet_bc_100_12": 768_730,
    "densenet_bc_190_40": 25_622_990, "vgg11_bn": 9_229_962, "vgg16_bn": 14_727_114, "resnet18": 11_175_370,
    "mlp500": 397_510,
}

# resnet20 built under torch.manual_seed(0) with the code before the variant table (git c243cda): the sha256 over
# (key, bytes) of its state_dict, and the next torch.rand(1) draw after it (what the runs drew next). Committed
# results depend on this construction.
RESNET20_REF = {
    (10, IMAGE): ("c027d803e59993cf411c2dc61f5ced0b7eb5d6b2bcced7465172d62203de431a", 0.27564483880996704),
    (10, MNIST): ("89a9fb1d59a14063c35f8d8b568afacdfae6a12a7f7b2da7d55b60e8393cfad2", 0.37198442220687866),
    (100, IMAGE): ("c75cae27d2a41f8c0d79a5d73dd11fddc268ffb9eea04c062fe2fa6d1be27b3f", 0.11657226085662842),
}


def facts(name: str, in_shape: tuple[int, ...] = IMAGE) -> dict:
    if model_entry(name).input_kind == "text":
        return {"in_shape": TEXT, "vocab_size": VOCAB}
    return {"in_shape": in_shape}


def build(name: str, num_classes: int = 10, in_shape: tuple[int, ...] = IMAGE, **kw) -> nn.Module:
    f = facts(name, in_shape)
    return create_model(name, num_classes, f.pop("in_shape"), **f, **kw)


def batch(name: str, in_shape: tuple[int, ...] = IMAGE, n: int = 2) -> torch.Tensor:
    if model_entry(name).input_kind == "text":
        return torch.randint(0, VOCAB, (n, *TEXT))
    return torch.rand(n, *in_shape)


def state_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def image_shapes(name: str) -> list[tuple[int, ...]]:
    return [IMAGE, MNIST] if model_entry(name).input_kind == "image" else [TEXT]


def small(name: str) -> bool:
    return PARAMS[name][0] < SMALL


SMALL_MODELS = [n for n in list_models() if n in PARAMS and small(n)]


def test_every_registered_model_has_pinned_counts():
    assert set(list_models()) == set(PARAMS)
    image = {n for n in list_models() if model_entry(n).input_kind == "image"}
    assert image == set(PARAMS_MNIST)


def test_expected_models_registered():
    want = {"resnet8", "resnet20", "resnet32", "resnet56", "resnet110", "wrn28_10", "wrn40_10",
            "densenet_bc_190_40", "densenet_bc_100_12", "vgg11_bn", "vgg16_bn", "resnet18"}
    assert want <= set(list_models())
    assert all(model_entry(n).input_kind == "image" for n in want)


@pytest.mark.parametrize("name", list_models())
def test_parameter_count(name):
    with torch.device("meta"):
        assert count_parameters(build(name, 10)) == PARAMS[name][0]
        assert count_parameters(build(name, 100)) == PARAMS[name][1]
        if name in PARAMS_MNIST:
            assert count_parameters(build(name, 10, MNIST)) == PARAMS_MNIST[name]


@pytest.mark.parametrize("name", list_models())
def test_output_shape_on_meta(name):
    for in_shape in image_shapes(name):
        with torch.device("meta"):
            m = build(name, 7, in_shape)
            out = m(batch(name, in_shape, 3))
            assert out.shape == (3, 7)
            out.sum().backward()
        assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_forward_backward_small(name):
    for in_shape in image_shapes(name):
        torch.manual_seed(0)
        m = build(name, 10, in_shape)
        out = m(batch(name, in_shape))
        assert out.shape == (2, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters()), in_shape
        assert m.eval()(batch(name, in_shape)).shape == (2, 10)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_construction_deterministic_under_seed(name):
    torch.manual_seed(0)
    a = state_sha256(build(name))
    torch.manual_seed(0)
    assert state_sha256(build(name)) == a


@pytest.mark.parametrize("num_classes,in_shape", sorted(RESNET20_REF))
def test_resnet20_bit_identical_to_reference(num_classes, in_shape):
    sha, next_draw = RESNET20_REF[(num_classes, in_shape)]
    torch.manual_seed(0)
    m = create_model("resnet20", num_classes, in_shape)
    assert torch.rand(1).item() == next_draw  # same number of RNG draws
    assert state_sha256(m) == sha
    assert isinstance(m, CifarResNet)


@pytest.mark.parametrize("name,depth", sorted(DEPTHS.items()))
def test_cifar_resnet_depth_table(name, depth):
    with torch.device("meta"):
        m = create_model(name, 10, IMAGE)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(convs) + len(linears) == depth  # option A: no projection convs
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert model_entry(name).options() == set()


def test_cifar_resnet_bad_depth():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21, 10, 3)


def test_wrn_structure():
    with torch.device("meta"):
        m = create_model("wrn28_10", 10, IMAGE)
    assert model_entry("wrn28_10").options() == {"dropout"}
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 1 + 12 * 2 + 3  # stem, 4 blocks x 3 stages x 2, one 1x1 shortcut per stage
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1)] == [160, 320, 640]
    assert all(c.bias is not None for c in convs)  # as in the Data Parameters code
    drops = [x for x in m.modules() if isinstance(x, nn.Dropout)]
    assert len(drops) == 12 and all(d.p == 0.0 for d in drops)
    assert m.bn.num_features == 640 and m.bn.momentum == 0.9
    assert m.fc.in_features == 640
    with torch.device("meta"):
        m = create_model("wrn40_10", 100, IMAGE, dropout=0.3)
    assert {x.p for x in m.modules() if isinstance(x, nn.Dropout)} == {0.3}
    assert len([x for x in m.modules() if isinstance(x, nn.Dropout)]) == 18


def test_wrn_preactivation_block_order():
    torch.manual_seed(0)
    m = create_model("wrn28_10", 10, IMAGE)
    block = m.layers[4]  # first block of stage 2: 160 -> 320, stride 2, 1x1 shortcut on the raw input
    x = torch.randn(2, 160, 8, 8)
    block.eval()
    with torch.no_grad():
        y = block.conv1(F.relu(block.bn1(x)))
        y = block.conv2(F.relu(block.bn2(y)))
        want = y + block.shortcut(x)
        assert torch.allclose(block(x), want)
        assert want.shape == (2, 320, 4, 4)


def test_densenet_bc_structure():
    with torch.device("meta"):
        m = create_model("densenet_bc_190_40", 10, IMAGE)
        s = create_model("densenet_bc_100_12", 10, IMAGE)
    # 80 + 31*40 = 1320 -> 660; 660 + 1240 = 1900 -> 950; 950 + 1240 = 2190
    assert m.bn.num_features == 2190 and m.fc.in_features == 2190
    # 24 + 16*12 = 216 -> 108; 300 -> 150; 342
    assert s.bn.num_features == 342
    convs = [x for x in s.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) + 1 == 100  # depth: stem + 3 blocks x 16 bottlenecks x 2 + 2 transitions + fc
    assert all(c.bias is None for c in convs)
    assert [c.out_channels for c in convs if c.kernel_size == (1, 1) and c.out_channels != 48] == [108, 150]
    assert model_entry("densenet_bc_190_40").options() == {"dropout"}


def test_vgg_head_and_cfg():
    for name, n_conv in (("vgg11_bn", 8), ("vgg16_bn", 13)):
        with torch.device("meta"):
            m = create_model(name, 10, IMAGE)
        assert len([x for x in m.modules() if isinstance(x, nn.Conv2d)]) == n_conv
        assert len([x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]) == n_conv
        assert len([x for x in m.modules() if isinstance(x, nn.MaxPool2d)]) == 5
        linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
        assert len(linears) == 1 and linears[0].in_features == 512  # the single-Linear CIFAR head
        assert model_entry(name).options() == set()


def test_resnet18_is_torchvisions():
    torch.manual_seed(0)
    ours = create_model("resnet18", 10, IMAGE)
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=10)
    assert type(ours) is type(ref)
    assert state_sha256(ours) == state_sha256(ref)
    with torch.device("meta"):
        one = create_model("resnet18", 10, MNIST)
    assert one.conv1.in_channels == 1 and one.conv1.kernel_size == (7, 7) and one.conv1.stride == (2, 2)
    assert model_entry("resnet18").options() == set()


# ---- timm ----

@pytest.mark.parametrize("name", list_models())
def test_timm_create_model_same_count(name):
    assert PREFIX + name in timm.list_models(PREFIX + "*")
    f = facts(name)
    kw = f if model_entry(name).input_kind == "text" else {}  # image: timm's default in_shape is 3x32x32
    m = timm.create_model(PREFIX + name, num_classes=10, device="meta", **kw)
    assert count_parameters(m) == PARAMS[name][0]
    if name in PARAMS_MNIST:
        m = timm.create_model(PREFIX + name, num_classes=10, in_shape=MNIST, device="meta")
        assert count_parameters(m) == PARAMS_MNIST[name]


def test_timm_resnet20_identical_to_ours():
    torch.manual_seed(0)
    m = timm.create_model("clrepro_resnet20", num_classes=10)
    assert state_sha256(m) == RESNET20_REF[(10, IMAGE)][0]
    torch.manual_seed(0)
    m = timm.create_model("clrepro_resnet20", num_classes=10, in_shape=MNIST, pretrained=False)
    assert state_sha256(m) == RESNET20_REF[(10, MNIST)][0]
    assert count_parameters(timm.create_model("clrepro_resnet20", num_classes=10, in_chans=1)) == 269_434


def test_timm_options_pass_through():
    m = timm.create_model("clrepro_wrn28_10", num_classes=10, dropout=0.3, device="meta")
    assert {x.p for x in m.modules() if isinstance(x, nn.Dropout)} == {0.3}
    m = timm.create_model("clrepro_resnet20", num_classes=10, dtype=torch.float64)
    assert m.fc.weight.dtype == torch.float64


def test_timm_errors_name_the_argument():
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("clrepro_resnet20", num_classes=10, pretrained=True)
    with pytest.raises(KeyError, match="drop_rate"):
        timm.create_model("clrepro_resnet20", num_classes=10, drop_rate=0.2)
    with pytest.raises(ValueError, match="num_classes"):
        timm.create_model("clrepro_resnet20")
    with pytest.raises(ValueError, match="in_chans"):
        timm.create_model("clrepro_resnet20", num_classes=10, in_chans=1, in_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="vocab_size"):
        timm.create_model("clrepro_wordcnn", num_classes=2, in_shape=TEXT)
    with pytest.raises(KeyError, match="vocab_size"):
        timm.create_model("clrepro_resnet20", num_classes=10, vocab_size=5)


def test_timm_registration_idempotent():
    assert register_timm_models() == []
    entry = timm.models.model_entrypoint("clrepro_resnet20")
    assert entry.__name__ == "clrepro_resnet20" and entry.__module__ == "models.timm_bridge"
    assert len({timm.models.model_entrypoint(PREFIX + n).__name__ for n in list_models()}) == len(list_models())


# ---- bad options ----

@pytest.mark.parametrize("name,kw,exc,match", [
    ("wrn28_10", {"dropout": 1.5}, ValueError, "dropout"),
    ("wrn40_10", {"dropout": -0.1}, ValueError, "dropout"),
    ("densenet_bc_100_12", {"dropout": 1.0}, ValueError, "dropout"),
    ("wrn28_10", {"drop_rate": 0.3}, KeyError, "drop_rate"),
    ("vgg16_bn", {"batch_norm": False}, KeyError, "batch_norm"),
    ("resnet18", {"weights": "IMAGENET1K_V1"}, KeyError, "weights"),
    ("resnet110", {"depth": 20}, KeyError, "depth"),
    ("densenet_bc_190_40", {"growth": 12}, KeyError, "growth"),
])
def test_bad_options_raise_naming_them(name, kw, exc, match):
    with torch.device("meta"), pytest.raises(exc, match=match):
        build(name, **kw)


def test_bad_depths_raise():
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(30, 10, 10, 3)
    with pytest.raises(ValueError, match="6n\\+4"):
        DenseNetBC(101, 12, 10, 3)
    with pytest.raises(ValueError, match="compression"):
        DenseNetBC(100, 12, 10, 3, compression=0.0)
