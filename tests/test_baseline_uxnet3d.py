"""3D UX-Net: shapes at any /16 size, gradients, exact parameter count, official key names and
shapes (grouped pointwise convs), the channels-first LayerNorm, input checks, official state dicts."""
from __future__ import annotations

import pytest
import torch

from baselines import uxnet3d
from baselines.uxnet3d import UXNET, LayerNorm, build

torch.set_num_threads(1)


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build(2, 3, (32, 32, 32))


@pytest.fixture(scope="module")
def reference_on_meta():
    ref = uxnet3d.REFERENCE_PARAMS
    with torch.device("meta"):
        return build(ref["in_channels"], ref["num_classes"], ref["patch_size"])


def test_forward_backward_every_parameter_gets_a_gradient(small):
    small.train()
    y = small(torch.randn(1, 2, 32, 32, 32))
    assert y.shape == (1, 3, 32, 32, 32)
    y.float().pow(2).mean().backward()
    missing = [n for n, p in small.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in small.parameters())
    small.zero_grad(set_to_none=True)


def test_any_size_divisible_by_16(small):
    small.eval()
    with torch.no_grad():
        assert small(torch.randn(1, 2, 48, 32, 16)).shape == (1, 3, 48, 32, 16)


def test_reference_parameter_count(reference_on_meta):
    assert _count(reference_on_meta) == uxnet3d.REFERENCE_PARAMS["params"] == 53_006_510
    assert _count(reference_on_meta.uxnet_3d) == 1_311_936          # encoder: 1.31 M (spec section 9)


def test_parameter_count_formula_for_channels():
    # in_channels sizes the 7^3 stem (48 out) and encoder1's residual block (two 3^3 convs
    # in->48, one 1^3 projection in->48; MONAI convs there have no bias); num_classes the 1^3 head.
    with torch.device("meta"):
        net = build(4, 4, (64, 64, 64))
    per_input_channel = 48 * 343 + 48 * 27 + 48
    assert _count(net) == 53_006_510 + 3 * per_input_channel - 10 * (48 + 1)


def test_official_key_names_and_shapes(reference_on_meta):
    shapes = {k: tuple(v.shape) for k, v in reference_on_meta.state_dict().items()}
    expected = {
        "uxnet_3d.downsample_layers.0.0.weight": (48, 1, 7, 7, 7),
        "uxnet_3d.downsample_layers.0.1.weight": (48,),
        "uxnet_3d.downsample_layers.1.0.weight": (48,),
        "uxnet_3d.downsample_layers.1.1.weight": (96, 48, 2, 2, 2),
        "uxnet_3d.downsample_layers.3.1.weight": (384, 192, 2, 2, 2),
        "uxnet_3d.stages.0.0.dwconv.weight": (48, 1, 7, 7, 7),
        "uxnet_3d.stages.0.0.norm.weight": (48,),
        "uxnet_3d.stages.0.0.pwconv1.weight": (192, 1, 1, 1, 1),       # groups = C
        "uxnet_3d.stages.3.1.pwconv2.weight": (384, 4, 1, 1, 1),
        "uxnet_3d.stages.3.1.gamma": (384,),
        "uxnet_3d.norm3.bias": (384,),
        "encoder1.layer.conv1.conv.weight": (48, 1, 3, 3, 3),
        "encoder1.layer.conv3.conv.weight": (48, 1, 1, 1, 1),
        "encoder5.layer.conv1.conv.weight": (768, 384, 3, 3, 3),
        "decoder5.transp_conv.conv.weight": (768, 384, 2, 2, 2),
        "decoder5.conv_block.conv1.conv.weight": (384, 768, 3, 3, 3),
        "decoder2.transp_conv.conv.weight": (96, 48, 2, 2, 2),
        "decoder1.layer.conv2.conv.weight": (48, 48, 3, 3, 3),
        "out.conv.conv.weight": (14, 48, 1, 1, 1),
        "out.conv.conv.bias": (14,),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, f"{key}: {shapes.get(key)} != {shape}"
    assert "decoder1.layer.conv3.conv.weight" not in shapes           # 48 -> 48: no projection


def test_layer_norm_matches_explicit_statistics():
    torch.manual_seed(0)
    norm = LayerNorm(6, channels_first=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 3, 4, 5) * 3 + 1
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    want = norm.weight.view(1, -1, 1, 1, 1) * (x - mean) / torch.sqrt(var + 1e-6) \
        + norm.bias.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(norm(x), want, rtol=1e-5, atol=1e-5)
    last = LayerNorm(6)
    torch.testing.assert_close(last(x.movedim(1, -1)), torch.nn.functional.layer_norm(
        x.movedim(1, -1), (6,), eps=1e-6))


def test_layer_scale_starts_small_and_can_be_disabled():
    net = UXNET(in_channels=1, num_classes=2, feat_size=(8, 16, 24, 32), hidden_size=32,
                layer_scale_init_value=0.0)
    assert all(blk.gamma is None for stage in net.uxnet_3d.stages for blk in stage)
    assert not any(k.endswith("gamma") for k in net.state_dict())
    default = UXNET(in_channels=1, num_classes=2, feat_size=(8, 16, 24, 32), hidden_size=32)
    assert torch.equal(default.uxnet_3d.stages[0][0].gamma, torch.full((8,), 1e-6))


def test_wrong_input_raises_value_error_naming_the_divisor(small):
    with pytest.raises(ValueError, match="multiples of 16"):
        small(torch.zeros(1, 2, 40, 32, 32))
    with pytest.raises(ValueError, match="N, 2"):
        small(torch.zeros(1, 1, 32, 32, 32))
    with pytest.raises(ValueError):
        small(torch.zeros(2, 32, 32, 32))


@pytest.mark.parametrize("patch", [(40, 32, 32), (32, 32), (0, 32, 32), (32.0, 32, 32)])
def test_build_rejects_bad_patch_sizes(patch):
    with pytest.raises(ValueError, match="patch_size"):
        build(1, 2, patch)


@pytest.mark.parametrize("kwargs, name", [
    (dict(in_channels=0), "in_channels"),
    (dict(num_classes=-1), "num_classes"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(depths=(2, 2, 2)), "depths"),
    (dict(feat_size=(48, 96, 0, 384)), "feat_size"),
    (dict(drop_path_rate=-0.1), "drop_path_rate"),
    (dict(layer_scale_init_value=-1.0), "layer_scale_init_value"),
])
def test_constructor_validates_arguments(kwargs, name):
    args = dict(in_channels=1, num_classes=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        UXNET(**args)


def test_official_state_dict_round_trip(small):
    # the official class creates no unused tensors: its state dict passes through unchanged
    assert uxnet3d.UNUSED_OFFICIAL_KEYS == ()
    official = dict(small.state_dict())
    cleaned = uxnet3d.drop_unused_official_keys(official)
    assert cleaned.keys() == official.keys() and cleaned is not official
    other = build(2, 3, (32, 32, 32))
    other.load_state_dict(cleaned, strict=True)
    for key, value in small.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value)
