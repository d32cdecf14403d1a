"""TransBTS (3D): shapes, gradients, exact parameter counts, official keys, stem dropout policy."""
from __future__ import annotations

import pytest
import torch

from baselines import transbts as tb

SMALL = (32, 32, 32)


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return tb.build(2, 3, SMALL)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_build(in_channels: int, num_classes: int, size) -> torch.nn.Module:
    with torch.device("meta"):
        return tb.build(in_channels, num_classes, size)


def _official_keys(in_channels: int, num_classes: int, n_tokens: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official BTS(dataset='brats') rewired to in/out channels, by structure,
    including the unused ``linear_encoding`` and ``pre_head_ln``."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(prefix, co, ci, k):
        keys[f"{prefix}.weight"], keys[f"{prefix}.bias"] = (co, ci, k, k, k), (co,)

    def affine(prefix, ch):
        keys[f"{prefix}.weight"] = keys[f"{prefix}.bias"] = (ch,)

    def batchnorm(prefix, ch):
        affine(prefix, ch)
        keys[f"{prefix}.running_mean"] = keys[f"{prefix}.running_var"] = (ch,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    conv("Unet.InitConv.conv", 16, in_channels, 3)
    for name, ch in [("EnBlock1", 16), ("EnBlock2_1", 32), ("EnBlock2_2", 32), ("EnBlock3_1", 64),
                     ("EnBlock3_2", 64)] + [(f"EnBlock4_{i}", 128) for i in range(1, 5)]:
        affine(f"Unet.{name}.bn1", ch)
        affine(f"Unet.{name}.bn2", ch)
        conv(f"Unet.{name}.conv1", ch, ch, 3)
        conv(f"Unet.{name}.conv2", ch, ch, 3)
    for i, (ci, co) in enumerate(((16, 32), (32, 64), (64, 128)), start=1):
        conv(f"Unet.EnDown{i}.conv", co, ci, 3)
    batchnorm("bn", 128)
    conv("conv_x", 512, 128, 3)
    keys["linear_encoding.weight"], keys["linear_encoding.bias"] = (512, 128 * in_channels), (512,)
    keys["position_encoding.position_embeddings"] = (1, n_tokens, 512)
    for layer in range(4):
        a, f = f"transformer.net.{2 * layer}.fn", f"transformer.net.{2 * layer + 1}.fn"
        affine(f"{a}.norm", 512)
        keys[f"{a}.fn.qkv.weight"] = (1536, 512)
        keys[f"{a}.fn.proj.weight"], keys[f"{a}.fn.proj.bias"] = (512, 512), (512,)
        affine(f"{f}.norm", 512)
        keys[f"{f}.fn.net.0.weight"], keys[f"{f}.fn.net.0.bias"] = (4096, 512), (4096,)
        keys[f"{f}.fn.net.3.weight"], keys[f"{f}.fn.net.3.bias"] = (512, 4096), (512,)
    affine("pre_head_ln", 512)
    conv("Enblock8_1.conv1", 128, 512, 3)
    conv("Enblock8_1.conv2", 128, 128, 3)
    for block, ch in (("Enblock8_2", 128), ("DeBlock4", 64), ("DeBlock3", 32), ("DeBlock2", 16)):
        conv(f"{block}.conv1", ch, ch, 3)
        conv(f"{block}.conv2", ch, ch, 3)
    for block in ("Enblock8_1", "Enblock8_2"):
        batchnorm(f"{block}.bn1", 128)
        batchnorm(f"{block}.bn2", 128)
    for block, ch in (("DeBlock4", 64), ("DeBlock3", 32), ("DeBlock2", 16)):
        batchnorm(f"{block}.bn1", ch)
        batchnorm(f"{block}.bn2", ch)
    for up, (ci, co) in (("DeUp4", (128, 64)), ("DeUp3", (64, 32)), ("DeUp2", (32, 16))):
        conv(f"{up}.conv1", co, ci, 1)
        conv(f"{up}.conv2", co, co, 2)  # ConvTranspose3d weight is (in, out, k, k, k); in == out here
        conv(f"{up}.conv3", co, 2 * co, 1)
    conv("endconv", num_classes, 16, 1)
    return keys


def _official_state(model: tb.TransBTS) -> dict[str, torch.Tensor]:
    """``model``'s state dict plus the official tensors it does not create."""
    state = dict(model.state_dict())
    state["linear_encoding.weight"] = torch.randn(512, 128 * model.in_channels)
    state["linear_encoding.bias"] = torch.randn(512)
    state["pre_head_ln.weight"] = torch.ones(512)
    state["pre_head_ln.bias"] = torch.zeros(512)
    return state


def test_forward_backward_every_parameter_gets_a_gradient(small_net):
    small_net.train()
    small_net.zero_grad(set_to_none=True)
    out = small_net(torch.randn(1, 2, *SMALL))
    assert out.shape == (1, 3, *SMALL)
    out.float().pow(2).mean().backward()
    missing = [n for n, p in small_net.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("ref", [tb.REFERENCE_PARAMS, tb.OFFICIAL_BRATS_PARAMS], ids=["1to14", "4to4"])
def test_reference_parameter_counts_exact(ref):
    model = _meta_build(ref["in_channels"], ref["num_classes"], ref["patch_size"])
    assert _count(model) == ref["params"]
    official = _official_keys(ref["in_channels"], ref["num_classes"], 4096)
    unused = sum(torch.Size(official[k]).numel() for k in tb.UNUSED_OFFICIAL_KEYS)
    assert unused == ref["official_unused_params"]
    assert ref["params"] + unused == ref["official_params"]
    # spec section 12 / 7
    assert {1: 32_789_854, 4: 32_987_588}[ref["in_channels"]] == ref["official_params"]
    assert round(_count(model.Unet) / 1e4) == 440 and round(_count(model.transformer) / 1e5) == 210


def test_position_embedding_sized_from_the_patch():
    a, b = _meta_build(1, 14, (128, 128, 128)), _meta_build(1, 14, (64, 96, 32))
    assert tuple(b.position_encoding.position_embeddings.shape) == (1, 8 * 12 * 4, 512)
    assert _count(a) - _count(b) == (4096 - 8 * 12 * 4) * 512


def test_anisotropic_patch_forward():
    torch.manual_seed(0)
    net = tb.build(1, 2, (16, 32, 24)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 16, 32, 24)).shape == (1, 2, 16, 32, 24)


def test_state_dict_has_the_official_keys_and_shapes():
    model = _meta_build(4, 4, (128, 128, 128))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _official_keys(4, 4, 4096)
    assert set(expected) - set(got) == set(tb.UNUSED_OFFICIAL_KEYS)
    assert got == {k: v for k, v in expected.items() if k not in tb.UNUSED_OFFICIAL_KEYS}


def test_drop_unused_official_keys_round_trip(small_net):
    official = _official_state(small_net)
    fresh = tb.build(2, 3, SMALL)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.load_state_dict(official, strict=True)
    dropped = tb.drop_unused_official_keys(official)
    assert set(official) - set(dropped) == set(tb.UNUSED_OFFICIAL_KEYS)
    fresh.load_state_dict(dropped, strict=True)
    for k, v in small_net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # DataParallel checkpoints: the "module." prefix is recognised, other keys are kept as they are
    prefixed = tb.drop_unused_official_keys({f"module.{k}": v for k, v in official.items()})
    assert set(prefixed) == {f"module.{k}" for k in dropped}
    # a key that is not on the list is never dropped
    assert "linear_encoding.weight_extra" in tb.drop_unused_official_keys({"linear_encoding.weight_extra": 0})


def test_decoder_reads_the_last_layer_output_not_the_final_layernorm(small_net):
    # the network has no final LayerNorm: the transformer's output goes straight to the decoder
    assert not any("pre_head_ln" in n for n, _ in small_net.named_parameters())
    assert len(small_net.transformer.net) == 8


def test_attention_matches_the_explicit_formula(small_net):
    attn = small_net.transformer.net[0].fn.fn.eval()
    x = torch.randn(2, 6, 512)
    b, n, c, h = 2, 6, 512, tb.NUM_HEADS
    q, k, v = attn.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    probs = torch.softmax(q @ k.transpose(-2, -1) * (c // h) ** -0.5, dim=-1)
    expected = attn.proj((probs @ v).transpose(1, 2).reshape(b, n, c))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-4, atol=1e-5)


def test_stem_dropout_policy():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8, 8)
    default = tb.InitConv(1, 16, 0.2, at_inference=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(default(x), default.conv(x))  # off in eval (our choice)
        default.train()
        assert (default(x).abs().sum(dim=(2, 3, 4)) == 0).any()  # whole channels dropped in training
        official = tb.InitConv(1, 16, 0.2, at_inference=True).eval()
        assert (official(x).abs().sum(dim=(2, 3, 4)) == 0).any()  # official: active at inference
    net = tb.TransBTS(1, 2, (16, 16, 16), stem_dropout_at_inference=True)
    assert net.Unet.InitConv.at_inference is True


def test_eval_is_deterministic(small_net):
    small_net.eval()
    x = torch.randn(1, 2, *SMALL)
    with torch.no_grad():
        assert torch.equal(small_net(x), small_net(x))


@pytest.mark.parametrize("shape", [(1, 2, 32, 32, 40), (1, 2, 64, 64, 64), (1, 1, 32, 32, 32), (2, 32, 32, 32)])
def test_wrong_input_raises_value_error_naming_the_size(small_net, shape):
    with pytest.raises(ValueError, match=r"\(N, 2, 32, 32, 32\)"):
        small_net(torch.zeros(shape))


@pytest.mark.parametrize("kwargs, bad", [
    (dict(in_channels=0, num_classes=2, img_size=SMALL), "in_channels"),
    (dict(in_channels=1.5, num_classes=2, img_size=SMALL), "in_channels"),
    (dict(in_channels=1, num_classes=-1, img_size=SMALL), "num_classes"),
    (dict(in_channels=1, num_classes=2, img_size=(32, 32, 36)), "img_size"),
    (dict(in_channels=1, num_classes=2, img_size=(32, 32)), "img_size"),
    (dict(in_channels=1, num_classes=2, img_size="32"), "img_size"),
    (dict(in_channels=1, num_classes=2, img_size=SMALL, dropout_rate=1.5), "dropout_rate"),
    (dict(in_channels=1, num_classes=2, img_size=SMALL, attn_dropout_rate=-0.1), "attn_dropout_rate"),
    (dict(in_channels=1, num_classes=2, img_size=SMALL, stem_dropout=1.0), "stem_dropout"),
    (dict(in_channels=1, num_classes=2, img_size=SMALL, stem_dropout_at_inference="yes"),
     "stem_dropout_at_inference"),
])
def test_constructor_validation(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        with torch.device("meta"):
            tb.TransBTS(**kwargs)


def test_module_constants():
    assert tb.DIVISOR == 8 and tb.FIXED_SIZE is True
