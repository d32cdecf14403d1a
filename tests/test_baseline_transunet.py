"""TransUNet (R50-ViT-B/16, 2D): shapes, gradients, exact parameter count, official key layout."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines import transunet as tu

SMALL = (32, 32)


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return tu.build(1, 3, SMALL)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_build(in_channels: int, num_classes: int, size) -> torch.nn.Module:
    with torch.device("meta"):
        return tu.build(in_channels, num_classes, size)


def test_forward_backward_every_parameter_gets_a_gradient(small_net):
    small_net.train()
    small_net.zero_grad(set_to_none=True)
    out = small_net(torch.randn(2, 1, *SMALL))
    assert out.shape == (2, 3, *SMALL)
    out.float().pow(2).mean().backward()
    missing = [n for n, p in small_net.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


def test_reference_parameter_count_exact():
    ref = tu.REFERENCE_PARAMS
    model = _meta_build(ref["in_channels"], ref["num_classes"], ref["patch_size"])
    assert _count(model) == ref["params"] == 105_913_710
    # spec section 6 breakdown (rounded there): transformer 98.5 M, embeddings 13.5 M, decoder 7.4 M
    assert round(_count(model.transformer) / 1e6, 1) == 98.5
    assert round(_count(model.transformer.embeddings) / 1e6, 1) == 13.5
    assert round(_count(model.decoder) / 1e6, 1) == 7.4
    # the paper's own setting: 224^2, 9 classes -> 105.28 M
    assert round(_count(_meta_build(1, 9, (224, 224))) / 1e4) == 10528


def test_only_the_position_embedding_depends_on_the_size():
    a, b = _meta_build(1, 14, (512, 512)), _meta_build(1, 14, (256, 128))
    assert _count(a) - _count(b) == (32 * 32 - 16 * 8) * 768
    assert tuple(b.transformer.embeddings.position_embeddings.shape) == (1, 16 * 8, 768)


def test_input_channels_rule():
    # one modality: root conv takes 3 channels (the input is repeated); C > 1: root takes C
    one, four = _meta_build(1, 2, SMALL), _meta_build(4, 2, SMALL)
    assert tuple(one.transformer.embeddings.hybrid_model.root.conv.weight.shape) == (64, 3, 7, 7)
    assert tuple(four.transformer.embeddings.hybrid_model.root.conv.weight.shape) == (64, 4, 7, 7)
    assert _count(four) - _count(one) == 64 * 49


def test_single_channel_input_is_repeated_to_three(small_net):
    small_net.eval()
    x = torch.randn(1, 1, *SMALL)
    with torch.no_grad():
        tokens, skips = small_net.transformer(x.repeat(1, 3, 1, 1))
        expected = small_net.segmentation_head(small_net.decoder(tokens, skips))
        torch.testing.assert_close(small_net(x), expected)


def test_multi_channel_forward_shape():
    torch.manual_seed(0)
    net = tu.build(2, 4, (32, 48)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 2, 32, 48)).shape == (1, 4, 32, 48)


def test_skip_maps_unpadded_max_pool_and_zero_padding(small_net):
    x = torch.randn(1, 3, *SMALL)
    with torch.no_grad():
        deep, skips = small_net.transformer.embeddings.hybrid_model(x)
    assert deep.shape == (1, 1024, 2, 2)
    assert [tuple(s.shape[1:]) for s in skips] == [(512, 4, 4), (256, 8, 8), (64, 16, 16)]
    # the max-pool has no padding (16 -> 7), so the H/4 skip is one zero row/column short
    h4 = skips[1]
    assert torch.all(h4[..., -1, :] == 0) and torch.all(h4[..., :, -1] == 0)
    assert h4[..., :-1, :-1].abs().sum() > 0


def test_attention_matches_the_explicit_formula(small_net):
    attn = small_net.transformer.encoder.layer[0].attn.eval()
    x = torch.randn(2, 5, 768)
    b, n, c, h = 2, 5, 768, tu.NUM_HEADS

    def heads(t):
        return t.view(b, n, h, c // h).transpose(1, 2)

    q, k, v = heads(attn.query(x)), heads(attn.key(x)), heads(attn.value(x))
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // h), dim=-1)
    expected = attn.out((probs @ v).transpose(1, 2).reshape(b, n, c))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-4, atol=1e-5)


def test_weight_standardised_conv():
    conv = tu.StdConv2d(3, 4, kernel_size=3, padding=1, bias=False)
    x = torch.randn(1, 3, 8, 8)
    w = conv.weight
    w_std = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(
        w.var(dim=(1, 2, 3), keepdim=True, unbiased=False) + 1e-5)
    torch.testing.assert_close(conv(x), F.conv2d(x, w_std, padding=1))


def _official_keys(root_in: int, num_classes: int, n_tokens: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official VisionTransformer(R50-ViT-B_16, n_skip 3), by its structure."""
    keys: dict[str, tuple[int, ...]] = {}
    hyb = "transformer.embeddings.hybrid_model"
    keys[f"{hyb}.root.conv.weight"] = (64, root_in, 7, 7)
    keys[f"{hyb}.root.gn.weight"] = keys[f"{hyb}.root.gn.bias"] = (64,)
    cin = 64
    for b, (units, cmid) in enumerate(zip((3, 4, 9), (64, 128, 256)), start=1):
        cout = cmid * 4
        for u in range(1, units + 1):
            p = f"{hyb}.body.block{b}.unit{u}"
            c_in = cin if u == 1 else cout
            keys[f"{p}.conv1.weight"] = (cmid, c_in, 1, 1)
            keys[f"{p}.conv2.weight"] = (cmid, cmid, 3, 3)
            keys[f"{p}.conv3.weight"] = (cout, cmid, 1, 1)
            for g, ch in (("gn1", cmid), ("gn2", cmid), ("gn3", cout)):
                keys[f"{p}.{g}.weight"] = keys[f"{p}.{g}.bias"] = (ch,)
            if u == 1:
                keys[f"{p}.downsample.weight"] = (cout, c_in, 1, 1)
                keys[f"{p}.gn_proj.weight"] = keys[f"{p}.gn_proj.bias"] = (cout,)
        cin = cout
    keys["transformer.embeddings.patch_embeddings.weight"] = (768, 1024, 1, 1)
    keys["transformer.embeddings.patch_embeddings.bias"] = (768,)
    keys["transformer.embeddings.position_embeddings"] = (1, n_tokens, 768)
    for i in range(12):
        p = f"transformer.encoder.layer.{i}"
        for norm in ("attention_norm", "ffn_norm"):
            keys[f"{p}.{norm}.weight"] = keys[f"{p}.{norm}.bias"] = (768,)
        keys[f"{p}.ffn.fc1.weight"], keys[f"{p}.ffn.fc1.bias"] = (3072, 768), (3072,)
        keys[f"{p}.ffn.fc2.weight"], keys[f"{p}.ffn.fc2.bias"] = (768, 3072), (768,)
        for proj in ("query", "key", "value", "out"):
            keys[f"{p}.attn.{proj}.weight"], keys[f"{p}.attn.{proj}.bias"] = (768, 768), (768,)
    keys["transformer.encoder.encoder_norm.weight"] = keys["transformer.encoder.encoder_norm.bias"] = (768,)

    def conv_bn(prefix: str, ci: int, co: int) -> None:
        keys[f"{prefix}.0.weight"] = (co, ci, 3, 3)
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.1.{name}"] = (co,)
        keys[f"{prefix}.1.num_batches_tracked"] = ()

    conv_bn("decoder.conv_more", 768, 512)
    for i, (ci, co, sk) in enumerate(zip((512, 256, 128, 64), (256, 128, 64, 16), (512, 256, 64, 0))):
        conv_bn(f"decoder.blocks.{i}.conv1", ci + sk, co)
        conv_bn(f"decoder.blocks.{i}.conv2", co, co)
    keys["segmentation_head.0.weight"], keys["segmentation_head.0.bias"] = (num_classes, 16, 3, 3), (num_classes,)
    return keys


def test_state_dict_has_the_official_keys_and_shapes():
    model = _meta_build(1, 14, (512, 512))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _official_keys(3, 14, 1024)
    assert tu.UNUSED_OFFICIAL_KEYS == ()  # every official tensor is present and used


def test_drop_unused_official_keys_round_trip(small_net):
    state = small_net.state_dict()
    kept = tu.drop_unused_official_keys(state)
    assert list(kept) == list(state) and all(kept[k] is state[k] for k in state)
    prefixed = tu.drop_unused_official_keys({f"module.{k}": v for k, v in state.items()})
    assert len(prefixed) == len(state)
    fresh = tu.build(1, 3, SMALL)
    fresh.load_state_dict(kept, strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("shape", [(1, 1, 48, 32), (1, 1, 64, 64), (1, 2, 32, 32), (1, 1, 32, 32, 1)])
def test_wrong_input_raises_value_error_naming_the_size(small_net, shape):
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        small_net(torch.zeros(shape))


@pytest.mark.parametrize("kwargs, bad", [
    (dict(in_channels=0, num_classes=2, img_size=SMALL), "in_channels"),
    (dict(in_channels=True, num_classes=2, img_size=SMALL), "in_channels"),
    (dict(in_channels=1, num_classes=0, img_size=SMALL), "num_classes"),
    (dict(in_channels=1, num_classes=2, img_size=(40, 32)), "img_size"),
    (dict(in_channels=1, num_classes=2, img_size=(32, 32, 32)), "img_size"),
    (dict(in_channels=1, num_classes=2, img_size=32), "img_size"),
    (dict(in_channels=1, num_classes=2, img_size=(0, 32)), "img_size"),
    (dict(in_channels=1, num_classes=2, img_size=SMALL, dropout_rate=1.0), "dropout_rate"),
    (dict(in_channels=1, num_classes=2, img_size=SMALL, attention_dropout_rate=-0.1), "attention_dropout_rate"),
])
def test_constructor_validation(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        with torch.device("meta"):
            tu.TransUNet(**kwargs)


def test_module_constants():
    assert tu.DIVISOR == 16 and tu.FIXED_SIZE is True
