"""MedNeXt network: every S/B/M/L x k3/k5 variant in 3D and 2D (forward, backward, gradients, DS
shapes), exact parameter counts of the official implementation (spec b.3/b.4) and of an independent
analytic formula (spec b.2), deep-supervision switching, activation checkpointing, GRN, the
standard-resampling ablation and argument validation."""
from __future__ import annotations

import pytest
import torch

import mednext
from mednext import MedNeXt, create_mednext


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZES = ["S", "B", "M", "L"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_meta(*args, **kwargs) -> MedNeXt:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return create_mednext(*args, **kwargs)


# -- analytic parameter formula, written from spec b.2 independently of the implementation ------
def f_block(cin, cout, e, k, d, grn=False):
    return cin * k ** d + cin + 2 * cin + cin * e * cin + e * cin + e * cin * cout + cout + (
        2 * e * cin if grn else 0)


def f_network(exp_r, blocks, k_enc, k_dec, d=3, cin=1, n=14, ds=True, grn=False, c=32,
              standard=False):
    total = cin * c + c + 1  # stem + dummy_tensor
    for i in range(4):
        w = c * 2 ** i
        total += blocks[i] * f_block(w, w, exp_r[i], k_enc, d, grn)
        if standard:
            total += w * 2 * w * 2 ** d + 2 * w
        else:
            total += f_block(w, 2 * w, exp_r[i + 1], k_enc, d, grn and i > 0) + w * 2 * w + 2 * w
    total += blocks[4] * f_block(16 * c, 16 * c, exp_r[4], k_dec, d, grn)
    for i in (3, 2, 1, 0):
        w, e = c * 2 ** i, exp_r[8 - i]
        if standard:
            total += 2 * w * w * 2 ** d + w
        else:
            total += f_block(2 * w, w, e, k_dec, d, grn) + 2 * w * w + w
        total += blocks[8 - i] * f_block(w, w, e, k_dec, d, grn)
    heads = [c] + ([2 * c, 4 * c, 8 * c, 16 * c] if ds else [])
    return total + sum(h * n + n for h in heads)


def test_analytic_formula_reproduces_the_spec_sanity_example():
    assert f_block(32, 32, 2, 3, 3) == 5152


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("k", [3, 5])
def test_parameter_counts_equal_the_official_implementation(size, k):
    v = mednext.VARIANTS[size]
    for n in (14, 13):
        for ds in (False, True):
            model = build_meta(size, k, 1, n, deep_supervision=ds)
            expected = mednext.reference_parameter_count(size, k, n, ds)
            assert n_params(model) == expected, (size, k, n, ds)
            assert f_network(v.exp_r, v.block_counts, k, k, n=n, ds=ds) == expected
            assert hasattr(model, "out_4") == ds and hasattr(model, "out_1") == ds


BREAKDOWN = {  # spec b.4: k3, in 1, n 14, DS on
    "stem": (64, 64, 64, 64),
    "enc_block_0": (10_304, 10_304, 15_456, 21_696), "down_0": (9_344, 12_448, 12_448, 15_552),
    "enc_block_1": (36_992, 53_504, 107_008, 140_032), "down_1": (35_072, 59_776, 59_776, 109_184),
    "enc_block_2": (139_520, 271_104, 542_208, 2_137_088),
    "down_2": (135_680, 234_240, 234_240, 431_360),
    "enc_block_3": (541_184, 1_066_496, 2_132_992, 8_468_480),
    "down_3": (533_504, 927_232, 927_232, 1_714_688),
    "bottleneck": (2_130_944, 4_230_144, 8_460_288, 33_714_176),
    "up_3": (934_400, 1_721_856, 1_721_856, 3_296_768),
    "dec_block_3": (541_184, 1_066_496, 2_132_992, 8_468_480),
    "up_2": (237_824, 434_944, 434_944, 829_184),
    "dec_block_2": (139_520, 271_104, 542_208, 2_137_088),
    "up_1": (61_568, 86_272, 86_272, 110_976),
    "dec_block_1": (36_992, 53_504, 107_008, 140_032),
    "up_0": (16_448, 16_448, 16_448, 22_656),
    "dec_block_0": (10_304, 10_304, 15_456, 21_696),
    "out_0": (462,) * 4, "out_1": (910,) * 4, "out_2": (1_806,) * 4, "out_3": (3_598,) * 4,
    "out_4": (7_182,) * 4,
}


@pytest.mark.parametrize("column,size", list(enumerate(SIZES)))
def test_per_module_breakdown(column, size):
    model = build_meta(size, 3, 1, 14)
    found = {name: n_params(module) for name, module in model.named_children()}
    assert found == {name: counts[column] for name, counts in BREAKDOWN.items()}
    assert model.dummy_tensor.numel() == 1
    if size == "S":
        assert len(model.state_dict()) == 237  # spec b.4: official S+DS state dict


@pytest.mark.parametrize("overrides,dim,kernels", [
    ({}, "2d", (3, 3)),                                     # S k3 2D, spec: ~5.47M
    ({"grn": True}, "3d", (3, 3)),                          # L k3 + GRN, spec: ~61.97M
    ({}, "3d", (7, 7)),                                     # L k7, spec: ~65.69M
    ({"enc_kernel_size": 3, "dec_kernel_size": 5}, "3d", (3, 5)),
    ({"norm_type": "layer"}, "3d", (5, 5)),
    ({"resampling": "standard"}, "3d", (3, 3)),
    ({"resampling": "standard"}, "2d", (5, 5)),
])
@pytest.mark.parametrize("size", ["S", "L"])
def test_parameter_counts_of_other_configurations_follow_the_formula(size, overrides, dim,
                                                                     kernels):
    v = mednext.VARIANTS[size]
    model = build_meta(size, kernels[0], 2, 5, dim=dim, **overrides)
    assert (model.enc_kernel_size, model.dec_kernel_size) == kernels
    expected = f_network(v.exp_r, v.block_counts, *kernels, d=int(dim[0]), cin=2, n=5,
                         grn=overrides.get("grn", False),
                         standard=overrides.get("resampling") == "standard")
    assert n_params(model) == expected


def test_standard_resampling_counts_stated_in_the_docstring():
    counts = [n_params(build_meta("B", k, 1, 14, deep_supervision=ds, resampling="standard"))
              for k in (3, 5) for ds in (False, True)]
    assert counts == [9_820_207, 9_833_703, 10_108_719, 10_122_215]
    for count in counts:
        assert f"{count:,}" in MedNeXt.__doc__


# -- the sweep: every variant, forward + backward ---------------------------------------------
@pytest.mark.parametrize("dim,shape", [("3d", (1, 1, 32, 16, 16)), ("2d", (2, 1, 32, 32))])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("size", SIZES)
def test_every_variant_trains(size, k, dim, shape):
    torch.manual_seed(0)
    model = create_mednext(size, k, in_channels=1, num_classes=3, dim=dim)
    assert model.checkpointing == (size in ("M", "L"))  # official default: M and L only
    outputs = model(torch.randn(*shape))
    assert isinstance(outputs, list) and len(outputs) == 5
    for level, out in enumerate(outputs):
        assert out.shape == shape[:1] + (3,) + tuple(s // 2 ** level for s in shape[2:])
    sum(out.pow(2).mean() for out in outputs).backward()
    for name, p in model.named_parameters():
        if name == "dummy_tensor":  # frozen: official key, used by no computation
            assert not p.requires_grad and p.grad is None
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_deep_supervision_switch():
    torch.manual_seed(0)
    model = create_mednext("S", 3, 1, 2, dim="2d").eval()
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        full = model(x)  # eval mode: still the list while do_ds is True
        assert [tuple(o.shape[2:]) for o in full] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
        model.do_ds = False
        single = model(x)
    assert torch.is_tensor(single) and torch.equal(single, full[0])
    with pytest.raises(ValueError, match="do_ds"):
        model.do_ds = "yes"


def test_without_deep_supervision_heads_are_absent_and_all_parameters_train():
    torch.manual_seed(0)
    model = create_mednext("S", 3, 1, 2, deep_supervision=False, dim="2d")
    assert not any(hasattr(model, f"out_{i}") for i in range(1, 5)) and not model.do_ds
    with pytest.raises(ValueError, match="deep_supervision=True"):
        model.do_ds = True
    out = model(torch.randn(1, 1, 32, 32))
    assert torch.is_tensor(out) and out.shape == (1, 2, 32, 32)
    out.pow(2).mean().backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_checkpointing_gives_identical_outputs_and_gradients():
    torch.manual_seed(0)
    model = create_mednext("S", 3, 1, 3, block_counts=[1, 2, 1, 1, 1, 1, 1, 2, 1])
    x = torch.randn(1, 1, 32, 16, 16)
    results = []
    for on in (False, True):
        model.checkpointing = on
        model.zero_grad(set_to_none=True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            outputs = model(x)
        sum(o.pow(2).mean() for o in outputs).backward()
        results.append(([o.detach() for o in outputs], {n: p.grad.clone() for n, p in
                                                        model.named_parameters() if p.requires_grad},
                        len(saved)))
    (out_off, grad_off, saved_off), (out_on, grad_on, saved_on) = results
    assert all(torch.equal(a, b) for a, b in zip(out_off, out_on))
    assert grad_off.keys() == grad_on.keys()
    assert all(torch.equal(grad_off[n], grad_on[n]) for n in grad_off), "gradients differ"
    assert saved_on < saved_off / 2  # activations are really dropped and recomputed
    with pytest.raises(ValueError, match="checkpointing"):
        model.checkpointing = 1


def test_grn_is_identity_at_init_and_absent_from_down_0():
    torch.manual_seed(0)
    plain = create_mednext("S", 3, 1, 2, block_counts=[1] * 9)
    with_grn = create_mednext("S", 3, 1, 2, block_counts=[1] * 9, grn=True)
    assert not hasattr(with_grn.down_0, "grn_gamma")  # official quirk a.11.1
    for name in ("down_1", "down_3", "up_0", "up_3", "enc_block_0.0", "bottleneck.0"):
        module = with_grn.get_submodule(name)
        assert module.grn_gamma.shape == (1, module.conv2.out_channels, 1, 1, 1)
    missing, unexpected = with_grn.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all("grn_" in key for key in missing)
    x = torch.randn(1, 1, 16, 16, 32)
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain(x), with_grn(x)))


def test_grn_formula():
    torch.manual_seed(0)
    block = mednext.MedNeXtBlock(4, 4, exp_r=2, kernel_size=3, dim="2d", grn=True)
    with torch.no_grad():
        block.grn_gamma.normal_()
        block.grn_beta.normal_()
    x = torch.randn(2, 4, 6, 5)
    h = block.act(block.conv2(block.norm(block.conv1(x))))
    g = h.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
    n = g / (g.mean(dim=1, keepdim=True) + 1e-6)
    expected = x + block.conv3(block.grn_gamma * (h * n) + block.grn_beta + h)
    torch.testing.assert_close(block(x), expected)


def test_layer_norm_works_in_2d_and_3d():
    for shape in ((2, 6, 5, 4), (2, 6, 3, 4, 5)):
        norm = mednext.blocks.ChannelsFirstLayerNorm(6)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2)
            norm.bias.normal_()
        x = torch.randn(shape)
        moved = torch.movedim(x, 1, -1)
        ref = torch.nn.functional.layer_norm(moved, (6,), norm.weight, norm.bias, 1e-5)
        torch.testing.assert_close(norm(x), torch.movedim(ref, -1, 1))


def test_standard_resampling_layers():
    model = create_mednext("B", 5, 1, 2, resampling="standard", dim="2d")
    for i in range(4):
        down, up = model.get_submodule(f"down_{i}.conv"), model.get_submodule(f"up_{i}.conv")
        assert isinstance(down, torch.nn.Conv2d) and isinstance(up, torch.nn.ConvTranspose2d)
        assert down.kernel_size == up.kernel_size == (2, 2) and down.stride == up.stride == (2, 2)
        assert (down.in_channels, down.out_channels) == (32 * 2 ** i, 64 * 2 ** i)
        assert (up.in_channels, up.out_channels) == (64 * 2 ** i, 32 * 2 ** i)
    out = model(torch.randn(1, 1, 32, 16))
    assert [tuple(o.shape[2:]) for o in out] == [(32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]


# -- up block: the one-voxel low-side zero pad (spec a.4) ---------------------------------------
@pytest.mark.parametrize("dim,k", [("3d", 3), ("3d", 5), ("2d", 3), ("2d", 7)])
def test_up_block_pads_one_zero_voxel_at_the_low_side(dim, k):
    torch.manual_seed(0)
    d = int(dim[0])
    body = mednext.MedNeXtUpBlock(8, 4, exp_r=2, kernel_size=k, do_res=False, dim=dim)
    x = torch.randn((1, 8) + (4,) * d)
    with torch.no_grad():
        y = body(x)
        assert y.shape == (1, 4) + (8,) * d
        for axis in range(2, 2 + d):
            assert torch.count_nonzero(y.select(axis, 0)) == 0
            assert torch.count_nonzero(y.select(axis, 1)) > 0
        # with the residual: transposed 1x1 stride-2 conv, padded the same way
        res = mednext.MedNeXtUpBlock(8, 4, exp_r=2, kernel_size=k, do_res=True, dim=dim)
        res.load_state_dict(body.state_dict(), strict=False)
        r = res(x) - body(x)
        for axis in range(2, 2 + d):
            assert torch.count_nonzero(r.select(axis, 0)) == 0
        w = res.res_conv.weight.flatten(1)  # (in, out)
        b = res.res_conv.bias.view((1, 4) + (1,) * d)
        odd = (slice(None), slice(None)) + (slice(1, None, 2),) * d
        direct = torch.einsum("io,ni...->no...", w, x) + b  # voxel i lands at index 2i+1
        torch.testing.assert_close(r[odd], direct)
        even = (slice(None), slice(None)) + (slice(2, None, 2),) * d  # bias only
        torch.testing.assert_close(r[even], b.expand_as(r[even]))


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,match", [
    ((1, 1, 32, 24, 32), r"\(32, 24, 32\)"),
    ((1, 1, 8, 16, 16), r"\(8, 16, 16\)"),
    ((1, 1, 32, 32), "5-D"),
    ((1, 2, 32, 32, 32), "1 input channels"),
])
def test_bad_inputs_raise(shape, match):
    model = create_mednext("S", 3, 1, 2, block_counts=[1] * 9)
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape))


@pytest.mark.parametrize("kwargs,match", [
    ({"in_channels": 0}, "in_channels"), ({"num_classes": "3"}, "num_classes"),
    ({"n_channels": True}, "n_channels"), ({"kernel_size": 4}, "kernel_size"),
    ({"kernel_size": 0}, "kernel_size"), ({"enc_kernel_size": 2}, "enc_kernel_size"),
    ({"dec_kernel_size": 3.0}, "dec_kernel_size"), ({"exp_r": 0}, "exp_r"),
    ({"kernel_size": None, "enc_kernel_size": 3}, "kernel_size"),
    ({"exp_r": [2] * 8}, "exp_r"), ({"block_counts": 2}, "block_counts"),
    ({"block_counts": [0] + [2] * 8}, "block_counts"), ({"norm_type": "batch"}, "batch"),
    ({"dim": "4d"}, "4d"), ({"resampling": "bilinear"}, "bilinear"), ({"grn": "yes"}, "grn"),
    ({"deep_supervision": 1}, "deep_supervision"), ({"checkpointing": None}, "checkpointing"),
    ({"do_res": 1}, "do_res"), ({"do_res_up_down": "no"}, "do_res_up_down"),
])
def test_bad_constructor_arguments_raise(kwargs, match):
    args = {"in_channels": 1, "num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        with torch.device("meta"):
            MedNeXt(**args)


def test_factory_validation_and_case_insensitive_sizes():
    assert n_params(build_meta("m", 3, 1, 14)) == mednext.reference_parameter_count("M", 3)
    with pytest.raises(ValueError, match="XL"):
        create_mednext("XL", 3, 1, 2)
    with pytest.raises(ValueError, match="kernel"):
        build_meta("S", 3, 1, 2, kernel=5)
    with pytest.raises(ValueError, match="exp_r"):
        build_meta("S", 3, 1, 2, exp_r=[2, 2])
    split = build_meta("S", None, 1, 2, enc_kernel_size=5, dec_kernel_size=3)
    assert (split.enc_kernel_size, split.dec_kernel_size) == (5, 3)
    assert split.down_3.conv1.kernel_size == (5, 5, 5) and split.up_3.conv1.kernel_size == (3, 3, 3)
    assert split.bottleneck[0].conv1.kernel_size == (3, 3, 3)
    model = build_meta("L", 5, 4, 3, checkpointing=False, deep_supervision=False)
    assert not model.checkpointing and model.in_channels == 4
    assert mednext.VARIANTS["B"].to_dict()["provenance"]["commit"] == "0b78ed8"


@pytest.mark.parametrize("size,k,gmacs", [
    ("S", 3, 128.1), ("S", 5, 166.3), ("B", 3, 167.5), ("B", 5, 205.7),
    ("M", 3, 244.4), ("M", 5, 304.5), ("L", 3, 495.3), ("L", 5, 559.7),
])
def test_macs_at_128_cubed_match_the_spec(size, k, gmacs):
    """Spec b.5: torch's FLOP counter / 2 for one 1x128^3 input, no DS (on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode
    model = build_meta(size, k, 1, 14, deep_supervision=False, checkpointing=False)
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 128, 128, 128))
    assert round(counter.get_total_flops() / 2e9, 1) == gmacs
