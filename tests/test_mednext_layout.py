"""MedNeXt's channels-last path against the channels-first (official) one: outputs within 1e-4 and
parameter gradients close, in 3D and 2D, k3 and k5, with and without activation checkpointing and
deep supervision, with the layer norm, GRN and the standard-resampling ablation; the state dict is
the same; "auto" picks the layout per device; the trainer's builder takes the channels-last path on
the CPU; the channels-last instance norm is accurate where torch's own kernel is not; the
depthwise convolution's hand-written backward is exact."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness import registry
from mednext import MedNeXt, create_mednext
from mednext.blocks import conv_class
from mednext.depthwise import depthwise_conv_same
from mednext.layout import LAYOUTS, channels_last, norm_channels_last, resolve_layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"block_counts": [1, 1, 1, 1, 1, 1, 1, 1, 1]}
OUTPUT_TOL = 1e-4      # of the output's scale (max |output|, at least 1)
GRAD_RTOL = 1e-3       # of each parameter's largest gradient ...
GRAD_ATOL = 1e-4       # ... plus this fraction of the largest gradient of the whole network.
# Both are measured against the float64 channels-first computation, not against the float32 one:
# float32 rounding over thousands of voxels differs by CPU (oneDNN picks other kernels with
# AVX-512), and the official layer order itself is ~7e-5 of the largest gradient off the float64
# result on an AVX-512 EPYC, where the channels-last path is ~2e-5 off. The depthwise biases' exact
# gradient is 0 (a constant per channel before an instance norm): only the absolute term holds them.


def run(model: MedNeXt, x: torch.Tensor, layout: str):
    model.layout = layout
    model.zero_grad(set_to_none=True)
    out = model(x)
    outs = out if isinstance(out, list) else [out]
    # a loss that weights every voxel differently, so that no gradient is trivially symmetric
    gen = torch.Generator().manual_seed(1)
    sum((o * torch.randn(o.shape, generator=gen)).sum() / o.numel() for o in outs).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [o.detach() for o in outs], grads


def assert_layouts_agree(model: MedNeXt, x: torch.Tensor) -> None:
    """Channels-last (float32) against the float64 channels-first computation of the same
    weights; the float32 channels-first path runs too, so that both layouts see the same input."""
    import copy

    out_ref, grad_ref = run(copy.deepcopy(model).double(), x.double(), "channels_first")
    out_cf, grad_cf = run(model, x, "channels_first")
    out_cl, grad_cl = run(model, x, "channels_last")
    assert [o.shape for o in out_cf] == [o.shape for o in out_cl] == [o.shape for o in out_ref]
    for ref, b in zip(out_ref, out_cl):
        assert b.is_contiguous(), "outputs leave the channels-last path contiguous"
        scale = max(1.0, ref.abs().max().item())
        assert (ref - b.double()).abs().max().item() <= OUTPUT_TOL * scale
    assert grad_cf.keys() == grad_cl.keys() == grad_ref.keys()
    assert "dummy_tensor" not in grad_cf
    overall = max(g.abs().max().item() for g in grad_ref.values())
    for name, g in grad_ref.items():
        err = (g - grad_cl[name].double()).abs().max().item()
        assert err <= GRAD_RTOL * g.abs().max().item() + GRAD_ATOL * overall, (name, err)


@pytest.mark.parametrize("dim,shape", [("3d", (2, 1, 32, 16, 16)), ("2d", (2, 1, 32, 48))])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("deep_supervision", [True, False])
def test_channels_last_matches_channels_first(dim, shape, k, checkpointing, deep_supervision):
    torch.manual_seed(0)
    model = create_mednext("S", k, 1, 3, dim=dim, deep_supervision=deep_supervision,
                           checkpointing=checkpointing, **SMALL)
    assert_layouts_agree(model, torch.randn(*shape))


@pytest.mark.parametrize("overrides", [
    {"exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2]},                 # B ratios: channel counts change
    {"norm_type": "layer"},
    {"grn": True},
    {"resampling": "standard"},
    {"enc_kernel_size": 3, "dec_kernel_size": 5, "kernel_size": None},
])
def test_channels_last_matches_in_other_configurations(overrides):
    overrides = dict(overrides)
    torch.manual_seed(0)
    model = create_mednext("S", overrides.pop("kernel_size", 3), 2, 4, **SMALL, **overrides)
    with torch.no_grad():                   # GRN is identity at init: give it a job
        for name, p in model.named_parameters():
            if "grn" in name:
                p.normal_(0, 0.5)
    assert_layouts_agree(model, torch.randn(1, 2, 16, 32, 16))


def test_channels_last_under_autocast_is_as_close_to_float32_as_channels_first():
    """Mixed precision (CPU bfloat16 here; CUDA float16 works the same way): the hand-written
    backward passes follow the forward's lower precision, the norm computes in float32."""
    torch.manual_seed(0)
    model = create_mednext("S", 3, 1, 3, **SMALL)
    x = torch.randn(1, 1, 32, 32, 32)
    exact = run(model, x, "channels_first")[0]
    errors = {}
    for layout in ("channels_first", "channels_last"):
        model.layout = layout
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        assert all(o.dtype == torch.bfloat16 for o in out)
        sum(o.float().mean() for o in out).backward()
        assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
                   for p in model.parameters() if p.requires_grad)
        errors[layout] = max((a - b.float()).abs().max().item() for a, b in zip(exact, out))
    assert errors["channels_last"] <= 2 * errors["channels_first"]


def test_the_state_dict_does_not_depend_on_the_layout():
    sds = []
    for layout in LAYOUTS:
        torch.manual_seed(0)
        sds.append(create_mednext("S", 3, 1, 3, layout=layout, **SMALL).state_dict())
    for sd in sds[1:]:
        assert list(sd) == list(sds[0])
        assert all(torch.equal(sd[k], sds[0][k]) for k in sd)
    fast = create_mednext("S", 3, 1, 3, layout="channels_last", **SMALL)
    fast.load_state_dict(sds[0], strict=True)


def test_auto_picks_the_layout_per_device_and_bad_values_are_refused():
    assert resolve_layout("auto", torch.device("cpu")) == "channels_last"
    assert resolve_layout("auto", torch.device("cuda", 0)) == "channels_first"
    assert resolve_layout("auto", torch.device("meta")) == "channels_first"
    assert resolve_layout("channels_first", torch.device("cpu")) == "channels_first"
    model = create_mednext("S", 3, 1, 3, **SMALL)
    assert model.layout == "auto" and "layout='auto'" in repr(model)
    with pytest.raises(ValueError, match="layout"):
        model.layout = "nhwc"
    with pytest.raises(ValueError, match="layout"):
        MedNeXt(1, 2, layout=None)


def count_fast_calls(model: MedNeXt) -> list[int]:
    calls = [0]
    block = model.enc_block_0[0]
    method = block.forward_channels_last

    def counting(x):
        calls[0] += 1
        return method(x)
    block.forward_channels_last = counting      # instance attribute shadows the method
    return calls


def test_the_trainers_builder_takes_the_channels_last_path_on_the_cpu():
    """``BenchTrainer.build_network_architecture`` builds through ``registry.build_model``."""
    model = registry.build_model("mednext-s-k3", 1, 3, (32, 32, 32))
    assert model.layout == "auto"
    calls = count_fast_calls(model)
    x = torch.zeros(1, 1, 32, 32, 32)
    model(x)
    assert calls[0] == 1
    model.layout = "channels_first"
    model(x)
    assert calls[0] == 1


def test_channels_last_instance_norm_is_accurate_where_torch_is_not():
    """torch's channels-last GroupNorm accumulates naively in float32 (1e-4 off at this size);
    the path's own norm must stay within the channels-first kernel's error."""
    gen = torch.Generator().manual_seed(0)
    c = 8
    x = (3 + 2 * torch.randn(2, c, 48, 48, 48, generator=gen)).contiguous(
        memory_format=torch.channels_last_3d)
    norm = torch.nn.GroupNorm(c, c)
    with torch.no_grad():
        norm.weight.normal_(generator=gen)
        norm.bias.normal_(generator=gen)
        exact = F.group_norm(x.double(), c, norm.weight.double(), norm.bias.double())
        err = (norm_channels_last(norm, x).double() - exact).abs().max().item()
        ref = (norm(x.contiguous()).double() - exact).abs().max().item()
    assert err < max(5e-6, 3 * ref)


def test_channels_last_instance_norm_gradients_are_exact():
    gen = torch.Generator().manual_seed(0)
    norm = torch.nn.GroupNorm(3, 3).double()
    with torch.no_grad():
        norm.weight.normal_(generator=gen)
        norm.bias.normal_(generator=gen)
    x = torch.randn(2, 3, 4, 5, 3, generator=gen, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    # gradcheck perturbs the tensors it is given in place: w and b are the norm's own parameters
    assert torch.autograd.gradcheck(lambda t, w, b: norm_channels_last(norm, t),
                                     (x, norm.weight, norm.bias))


@pytest.mark.parametrize("dim,k,shape", [("3d", 3, (2, 3, 5, 4, 3)), ("3d", 5, (1, 2, 3, 6, 5)),
                                         ("3d", 1, (1, 2, 3, 3, 3)), ("2d", 3, (2, 3, 5, 4))])
def test_depthwise_backward_is_exact(dim, k, shape):
    """Input gradient by the flipped kernel, weight gradient by slabs of planes (odd plane
    counts leave a thinner last slab): checked against finite differences in float64."""
    gen = torch.Generator().manual_seed(0)
    conv = conv_class(dim)(shape[1], shape[1], k, padding=k // 2, groups=shape[1]).double()
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    x = channels_last(x).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, w, b: depthwise_conv_same(t, conv),
                                    (x, conv.weight, conv.bias))
    with pytest.raises(ValueError, match="depthwise"):
        depthwise_conv_same(x, conv_class(dim)(shape[1], shape[1], 3, stride=2, padding=1,
                                               groups=shape[1]).double())
