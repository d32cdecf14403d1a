"""UpKern (spec c): copied tensors are equal, differing kernels follow the trilinear/bilinear
align_corners=False rule, and incompatible pairs raise naming the tensor and both shapes."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

import mednext
from mednext import create_mednext, upkern


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# 3 -> 5 taps, align_corners=False: [w0, .6 w0 + .4 w1, w1, .4 w1 + .6 w2, w2]
RULE = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.4, 0.6],
                     [0.0, 0.0, 1.0]], dtype=torch.float64)


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor random, so that a wrong copy cannot pass by matching a default init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def test_s_k3_to_k5_copies_everything_and_resamples_the_depthwise_kernels():
    torch.manual_seed(0)
    src = randomised(create_mednext("S", 3, 1, 14, deep_supervision=False), 1)
    dst = create_mednext("S", 5, 1, 14, deep_supervision=False)
    before = {k: v.clone() for k, v in src.state_dict().items()}
    assert upkern(src, dst) is dst
    s, t = src.state_dict(), dst.state_dict()
    resampled = [k for k in t if s[k].shape != t[k].shape]
    copied = [k for k in t if s[k].shape == t[k].shape]
    assert len(resampled) == 26 and len(copied) == 203  # spec c, MedNeXt-S without DS
    assert all(k.endswith("conv1.weight") for k in resampled)
    for key in copied:
        assert torch.equal(s[key], t[key]), key
    for key in resampled:
        w, big = s[key].double(), t[key].double()
        assert w.shape[1] == 1 and big.shape[2:] == (5, 5, 5)
        expected = torch.einsum("ai,bj,ck,nmijk->nmabc", RULE, RULE, RULE, w)
        torch.testing.assert_close(big, expected, rtol=1e-5, atol=1e-5)
        # corner and centre taps are preserved exactly
        for (a, b, c), (i, j, k) in [((0, 0, 0), (0, 0, 0)), ((4, 4, 4), (2, 2, 2)),
                                     ((2, 2, 2), (1, 1, 1)), ((0, 4, 2), (0, 2, 1))]:
            assert torch.equal(t[key][..., a, b, c], s[key][..., i, j, k])
    assert all(torch.equal(before[k], v) for k, v in src.state_dict().items())  # source untouched


def test_one_dimensional_rule_on_a_kernel_varying_along_one_axis():
    w = torch.tensor([1.0, 3.0, -2.0]).view(1, 1, 3, 1, 1).expand(2, 1, 3, 3, 3).contiguous()
    out = mednext.resample_kernel(w, (5, 5, 5))
    w0, w1, w2 = 1.0, 3.0, -2.0
    line = torch.tensor([w0, .6 * w0 + .4 * w1, w1, .4 * w1 + .6 * w2, w2])
    torch.testing.assert_close(out, line.view(1, 1, 5, 1, 1).expand(2, 1, 5, 5, 5))


def test_state_dicts_paths_and_2d_bilinear(tmp_path):
    src = randomised(create_mednext("S", 3, 1, 4, dim="2d", block_counts=[1] * 9), 2)
    dst = create_mednext("S", 5, 1, 4, dim="2d", block_counts=[1] * 9)
    wrapped = {"network_weights": {"module." + k: v for k, v in src.state_dict().items()}}
    path = tmp_path / "k3.pth"
    torch.save(wrapped, path)
    from_path = upkern(path, dst.state_dict())
    from_dict = upkern(src.state_dict(), dst.state_dict())
    assert isinstance(from_dict, OrderedDict) and list(from_dict) == list(dst.state_dict())
    assert all(torch.equal(from_path[k], from_dict[k]) for k in from_dict)
    w, big = src.up_2.conv1.weight.double(), from_dict["up_2.conv1.weight"].double()
    assert big.shape == (256, 1, 5, 5)  # up_2: 8C -> 4C
    torch.testing.assert_close(big, torch.einsum("ai,bj,nmij->nmab", RULE, RULE, w), rtol=1e-5,
                               atol=1e-5)
    dst.load_state_dict(from_dict)
    out = dst(torch.randn(1, 1, 32, 32))
    assert len(out) == 5 and torch.isfinite(out[0]).all()


def test_same_kernel_is_a_plain_copy():
    src = randomised(create_mednext("S", 3, 1, 2, block_counts=[1] * 9), 3)
    dst = upkern(src, create_mednext("S", 3, 1, 2, block_counts=[1] * 9))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(),
                                                  dst.state_dict().values()))


@pytest.mark.parametrize("src_kwargs,dst_kwargs,match", [
    ({"num_classes": 3}, {"num_classes": 4},
     r"'out_0\.conv_out\.weight'.*\(32, 3, 1, 1, 1\).*\(32, 4, 1, 1, 1\)"),
    ({"in_channels": 2}, {}, r"'stem\.weight'.*\(32, 2, 1, 1, 1\).*\(32, 1, 1, 1, 1\)"),
    ({"block_counts": [1] * 9}, {"block_counts": [1, 2] + [1] * 7}, r"'enc_block_1\.1\."),
    ({"block_counts": [1, 2] + [1] * 7}, {"block_counts": [1] * 9}, r"source tensor 'enc_block_1\.1"),
    ({}, {"deep_supervision": False}, r"source tensor 'out_1\.conv_out\.weight'"),
    ({"deep_supervision": False}, {}, r"target tensor 'out_1\.conv_out\.weight'.*missing"),
    ({"exp_r": 2}, {"exp_r": 3}, r"'enc_block_0\.0\.conv2\.weight'.*\(64, 32, 1, 1, 1\)"),
    ({"dim": "2d"}, {}, r"'stem\.weight'.*\(32, 1, 1, 1\).*\(32, 1, 1, 1, 1\)"),
])
def test_incompatible_pairs_raise_naming_the_first_tensor(src_kwargs, dst_kwargs, match):
    def make(kw, k):
        args = {"in_channels": 1, "num_classes": 3, "block_counts": [1] * 9, **kw}
        with torch.device("meta"):
            return create_mednext("S", k, args.pop("in_channels"), args.pop("num_classes"), **args)
    with pytest.raises(ValueError, match=match):
        upkern(make(src_kwargs, 3).state_dict(), make(dst_kwargs, 5).state_dict())
