"""nnFormer (tumour configuration): shapes, gradients, exact parameter counts, official key names,
the replicated relative-position index, the window rule, input checks and official state dicts."""
from __future__ import annotations

import pytest
import torch

from baselines import nnformer
from baselines.nnformer import _merge, _partition, _shift_mask, build, nnFormer, relative_position_index

torch.set_num_threads(1)


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _bias_tables(model):
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("relative_position_bias_table"))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build(2, 3, (32, 32, 32))


@pytest.fixture(scope="module")
def reference_on_meta():
    ref = nnformer.REFERENCE_PARAMS
    with torch.device("meta"):
        return build(ref["in_channels"], ref["num_classes"], ref["patch_size"])


def test_forward_backward_every_parameter_gets_a_gradient(small):
    small.train()
    x = torch.randn(2, 2, 32, 32, 32)
    y = small(x)
    assert y.shape == (2, 3, 32, 32, 32)
    y.float().pow(2).mean().backward()
    missing = [n for n, p in small.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in small.parameters())
    small.zero_grad(set_to_none=True)


def test_batch_elements_do_not_mix_and_eval_is_deterministic(small):
    small.eval()
    x = torch.randn(2, 2, 32, 32, 32)
    with torch.no_grad():
        both = small(x)
        first = small(x[:1])
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_reference_parameter_count(reference_on_meta):
    assert _count(reference_on_meta) == nnformer.REFERENCE_PARAMS["params"] == 37_664_288


def test_parameter_count_formula_for_channels_and_size(reference_on_meta):
    # in_channels only sizes the first 3^3 conv (48 out), num_classes only the 4^3 transposed-conv head
    with torch.device("meta"):
        four = build(4, 4, (128, 128, 128))
        small = build(1, 14, (32, 32, 32))
    assert _count(four) == 37_664_288 + 3 * 48 * 27 - 10 * (96 * 64 + 1)
    # window clamping at small sizes shrinks only the relative-position bias tables
    assert _count(small) - _bias_tables(small) == _count(reference_on_meta) - _bias_tables(reference_on_meta)
    assert _bias_tables(small) < _bias_tables(reference_on_meta)


def test_official_key_names_and_shapes(reference_on_meta):
    shapes = {k: tuple(v.shape) for k, v in reference_on_meta.state_dict().items()}
    expected = {
        "model_down.patch_embed.proj1.conv1.weight": (48, 1, 3, 3, 3),
        "model_down.patch_embed.proj1.norm2.weight": (48,),
        "model_down.patch_embed.proj2.conv2.weight": (96, 96, 3, 3, 3),
        "model_down.patch_embed.norm.weight": (96,),
        "model_down.layers.0.blocks.1.attn.relative_position_bias_table": (343, 3),
        "model_down.layers.0.blocks.1.attn.relative_position_index": (64, 64),
        "model_down.layers.0.blocks.0.attn.qkv.weight": (288, 96),
        "model_down.layers.0.downsample.reduction.weight": (192, 96, 3, 3, 3),
        "model_down.layers.2.blocks.0.attn.relative_position_bias_table": (3375, 12),
        "model_down.layers.3.blocks.1.mlp.fc2.weight": (768, 3072),
        "model_down.norm3.weight": (768,),
        # first decoder stage (384 ch @ 8^3): 24 heads, window 8, skip attention projects only k/v
        "decoder.layers.2.Upsample.norm.weight": (768,),
        "decoder.layers.2.Upsample.up.weight": (768, 384, 2, 2, 2),
        "decoder.layers.2.blocks.0.attn.kv.weight": (768, 384),
        "decoder.layers.2.blocks.0.attn.relative_position_bias_table": (3375, 24),
        "decoder.layers.0.blocks.1.attn.relative_position_bias_table": (343, 6),
        "final.0.up.weight": (96, 14, 4, 4, 4),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, f"{key}: {shapes.get(key)} != {shape}"
    assert "model_down.layers.3.downsample.reduction.weight" not in shapes
    assert not any("qkv" in k for k in shapes if k.startswith("decoder.layers.2.blocks.0."))
    assert not any("attn_mask" in k for k in shapes)
    assert "model_down.patch_embed.proj2.norm2.weight" not in shapes


def test_relative_position_index_replicates_the_official_multipliers():
    w = 4
    idx = relative_position_index(w)
    coords = torch.stack(torch.meshgrid(*[torch.arange(w)] * 3, indexing="ij")).flatten(1).T
    i, j = 5, 42
    d = coords[i] - coords[j] + (w - 1)
    assert idx[i, j] == d[0] * (3 * w - 1) + d[1] * (2 * w - 1) + d[2]
    assert idx.max() < (2 * w - 1) ** 3
    # not one-to-one: relative offsets (-2,-3,-3) and (-3,-2,+1) share a bias entry
    def token(s, h, wd):
        return (s * w + h) * w + wd
    assert idx[token(1, 0, 0), token(3, 3, 3)] == idx[token(0, 1, 3), token(3, 3, 2)]
    offsets = {tuple((coords[a] - coords[b]).tolist()) for a in range(w ** 3) for b in range(w ** 3)}
    assert len(torch.unique(idx)) < len(offsets) == (2 * w - 1) ** 3


def test_shift_mask_and_window_helpers():
    mask = _shift_mask((8, 8, 8), 4, 2)
    assert mask.shape == (8, 64, 64)
    assert (mask[0] == 0).all()                                  # window away from the wrap
    assert ((mask[-1] == 0).sum(-1) == 8).all()                  # 8 regions of 2x2x2 tokens
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    x = torch.randn(2, 8, 4, 12, 5)
    torch.testing.assert_close(_merge(_partition(x, 4), 4, 2, 8, 4, 12), x)


def test_window_rule_clamps_and_disables_shift(reference_on_meta, small):
    def blocks(net, part, k):
        return getattr(net, part).layers[k].blocks
    ref = reference_on_meta
    assert [(b.window, b.shift) for b in blocks(ref, "model_down", 0)] == [(4, 0), (4, 2)]
    assert [(b.window, b.shift) for b in blocks(ref, "model_down", 2)] == [(8, 0), (8, 0)]
    assert [(b.window, b.shift) for b in blocks(ref, "decoder", 1)] == [(4, 0), (4, 2)]
    # 32^3: token grids 8, 4, 2, 1 -> windows clamp to the grid, no shift
    assert [(b.window, b.shift) for b in blocks(small, "model_down", 0)] == [(4, 0), (4, 2)]
    assert [(b.window, b.shift) for b in blocks(small, "model_down", 1)] == [(4, 0), (4, 0)]
    assert [(b.window, b.shift) for b in blocks(small, "model_down", 3)] == [(1, 0), (1, 0)]


def test_stochastic_depth_rates():
    with torch.device("meta"):
        net = build(1, 2, (128, 128, 128))
    rate = lambda blk: getattr(blk.drop_path, "drop_prob", 0.0)  # noqa: E731
    enc = [rate(b) for layer in net.model_down.layers for b in layer.blocks]
    assert enc[0] == 0.0 and enc[-1] == pytest.approx(0.2)
    # decoder built deepest-first: the finest stage (layers[0]) carries the largest rates
    assert [rate(b) for b in net.decoder.layers[2].blocks][0] == 0.0
    assert rate(net.decoder.layers[0].blocks[1]) == pytest.approx(0.2)


def test_wrong_input_raises_value_error_naming_the_size(small):
    with pytest.raises(ValueError, match="32, 32, 32"):
        small(torch.zeros(1, 2, 64, 32, 32))
    with pytest.raises(ValueError, match="N, 2"):
        small(torch.zeros(1, 1, 32, 32, 32))
    with pytest.raises(ValueError):
        small(torch.zeros(2, 32, 32, 32))


@pytest.mark.parametrize("patch", [(48, 32, 32), (32, 32), (0, 32, 32), (32.0, 32, 32)])
def test_build_rejects_bad_patch_sizes(patch):
    with pytest.raises(ValueError, match="patch_size"):
        build(1, 2, patch)


@pytest.mark.parametrize("kwargs, name", [
    (dict(in_channels=0), "in_channels"),
    (dict(num_classes=0), "num_classes"),
    (dict(num_heads=(3, 6, 12)), "num_heads"),
    (dict(num_heads=(3, 6, 12, 25)), "num_heads"),
    (dict(window_size=(4, 4, 0, 4)), "window_size"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(depths=(2,)), "depths"),
    (dict(depths=(2, 2, 0, 2)), "depths"),
    (dict(embedding_dim=95, num_heads=(1, 1, 1, 1)), "embedding_dim"),
    (dict(img_size=(64, 64, 48)), "img_size"),
])
def test_constructor_validates_arguments(kwargs, name):
    args = dict(img_size=(64, 64, 64), in_channels=1, num_classes=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        nnFormer(**args)


def test_official_state_dict_round_trip(small):
    torch.manual_seed(1)
    official = dict(small.state_dict())
    official["final.1.up.weight"] = torch.randn(192, 3, 4, 4, 4)   # DS heads of a DS-on checkpoint
    official["final.1.up.bias"] = torch.randn(3)
    official["final.2.up.weight"] = torch.randn(384, 3, 4, 4, 4)
    official["final.2.up.bias"] = torch.randn(3)
    cleaned = nnformer.drop_unused_official_keys(official)
    assert "final.1.up.weight" in official                          # input left untouched
    assert set(cleaned) == set(small.state_dict())
    other = build(2, 3, (32, 32, 32))
    other.load_state_dict(cleaned, strict=True)
    for key, value in small.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value)
    with pytest.raises(RuntimeError):
        other.load_state_dict(official, strict=True)
