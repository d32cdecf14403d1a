"""nnU-Net baseline: the topology rule against nnunetv2's own planner, the network, its init, and
checkpoint loading through ``baselines.load_checkpoint``."""
from __future__ import annotations

import math

import nnunetv2.experiment_planning.experiment_planners.network_topology as nnunetv2_topology
import pytest
import torch

import baselines
from baselines import nnunet
from harness.compute import count_parameters, empty_init

# (patch, spacing): isotropic, the paper's 128^3, anisotropic CT/MR-like, 2D, odd sizes
CASES = [
    ((128, 128, 128), (1.0, 1.0, 1.0)),
    ((32, 32, 32), (1.0, 1.0, 1.0)),
    ((40, 192, 160), (3.0, 0.8, 0.8)),
    ((80, 160, 160), (1.5, 0.7, 0.7)),
    ((20, 256, 224), (5.0, 1.0, 1.0)),
    ((48, 48, 12), (1.0, 1.0, 4.0)),
    ((64, 64, 64), (1.0, 1.0, 1.9)),
    ((96, 112, 128), (1.0, 1.2, 2.1)),
    ((100, 90, 70), (1.0, 1.0, 1.0)),
    ((512, 512), (1.0, 1.0)),
    ((56, 40), (0.5, 1.3)),
]


@pytest.mark.parametrize("patch,spacing", CASES)
def test_topology_matches_nnunetv2_planner(patch, spacing):
    _, pool, conv, padded, divisible = nnunetv2_topology.get_pool_and_conv_props(
        list(spacing), list(patch), nnunet.MIN_FEATURE_MAP_EDGE, 999999)
    topo = nnunet.plan_topology(patch, spacing)
    assert topo.strides == tuple(tuple(int(v) for v in s) for s in pool)
    assert topo.kernel_sizes == tuple(tuple(int(v) for v in k) for k in conv)
    assert topo.divisor == tuple(int(d) for d in divisible)
    if all(p % d == 0 for p, d in zip(patch, topo.divisor)):
        assert tuple(int(v) for v in padded) == tuple(patch)
    else:    # nnU-Net pads; we name the same size in the error
        assert topo.padded(patch) == tuple(int(v) for v in padded)


def test_paper_topology_at_128_cubed():
    topo = nnunet.plan_topology((128, 128, 128))
    assert topo.n_stages == 6
    assert topo.features_per_stage == (32, 64, 128, 256, 320, 320)
    assert topo.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert topo.kernel_sizes == ((3, 3, 3),) * 6
    assert nnunet.plan_topology((512, 512)).features_per_stage == (32, 64, 128, 256, 512, 512, 512, 512)


def test_anisotropic_spacing_uses_in_plane_kernels_first():
    topo = nnunet.plan_topology((40, 192, 160), (3.0, 0.8, 0.8))
    assert topo.kernel_sizes[0] == (1, 3, 3)
    assert topo.strides[1] == (1, 2, 2)


def test_reference_parameter_count_on_meta():
    ref = nnunet.REFERENCE_PARAMS
    for ds in (True, False):      # the heads are always built
        with empty_init():
            model = nnunet.build(ref["in_channels"], ref["num_classes"], ref["patch_size"],
                                 deep_supervision=ds)
        assert count_parameters(model) == ref["params"] == 31_205_254
    with empty_init():
        assert count_parameters(nnunet.build(4, 4, (128, 128, 128))) == 31_199_796   # spec section 3


def test_forward_backward_deep_supervision_shapes_and_gradients():
    torch.manual_seed(0)
    model = nnunet.build(2, 3, (32, 32, 32))
    out = model(torch.randn(2, 2, 32, 32, 32))
    scales = nnunet.deep_supervision_scales((32, 32, 32))
    assert [tuple(o.shape) for o in out] == [(2, 3) + (round(32 * s[0]),) * 3 for s in scales]
    assert scales == [(1.0,) * 3, (0.5,) * 3, (0.25,) * 3]
    sum((o * torch.randn_like(o)).sum() for o in out).backward()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters())
    model.decoder.deep_supervision = False
    assert model(torch.randn(1, 2, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_nnunet_initialisation():
    torch.manual_seed(0)
    model = nnunet.build(1, 2, (64, 64, 64))
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert convs and all(m.bias is not None and not m.bias.any() for m in convs)
    # Kaiming normal, a = 1e-2, fan_in: std = sqrt(2 / (1 + a^2) / fan_in)
    big = max((m for m in convs if isinstance(m, torch.nn.Conv3d)), key=lambda m: m.weight.numel())
    fan_in = big.weight[0].numel()
    expected = math.sqrt(2.0 / (1 + 1e-4) / fan_in)
    assert big.weight.std().item() == pytest.approx(expected, rel=0.02)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(m.affine and m.eps == 1e-5 for m in norms)
    assert all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.01
               for m in model.modules() if isinstance(m, torch.nn.LeakyReLU))


def test_wrong_input_size_names_the_size():
    with empty_init():
        model = nnunet.build(1, 2, (32, 32, 32))
    with pytest.raises(ValueError, match=r"\(8, 8, 8\).*\(40, 32, 32\)"):
        model(torch.empty(1, 1, 36, 32, 32, device="meta"))
    with pytest.raises(ValueError, match="input"):
        model(torch.empty(1, 2, 32, 32, 32, device="meta"))


@pytest.mark.parametrize("kwargs,match", [
    (dict(in_channels=0, num_classes=2, patch_size=(32, 32, 32)), "in_channels"),
    (dict(in_channels=1, num_classes=1, patch_size=(32, 32, 32)), "num_classes"),
    (dict(in_channels=1, num_classes=2, patch_size=(32, 32)), None),       # 2D is valid
    (dict(in_channels=1, num_classes=2, patch_size=(32, 32, 32, 32)), "patch_size"),
    (dict(in_channels=1, num_classes=2, patch_size=(32, 0, 32)), "patch_size"),
    (dict(in_channels=1, num_classes=2, patch_size=(4, 4, 4)), "too small"),
    (dict(in_channels=1, num_classes=2, patch_size=(100, 100, 100)), r"\(112, 112, 112\)"),
    (dict(in_channels=1, num_classes=2, patch_size=(32, 32, 32), spacing=(1.0, -1.0, 1.0)), "spacing"),
    (dict(in_channels=1, num_classes=2, patch_size=(32, 32, 32), spacing=(1.0, 1.0)), "spacing"),
])
def test_constructor_validation(kwargs, match):
    if match is None:
        with empty_init():
            nnunet.build(**kwargs)
        return
    with pytest.raises(ValueError, match=match):
        with empty_init():
            nnunet.build(**kwargs)


# ---- checkpoint loading (baselines.load_checkpoint) ----------------------------------------
@pytest.fixture
def small():
    torch.manual_seed(1)
    return nnunet.build(1, 2, (16, 16, 16))


def test_drop_unused_official_keys_is_identity_for_nnunet(small):
    state = small.state_dict()
    assert nnunet.UNUSED_OFFICIAL_KEYS == ()
    assert list(nnunet.drop_unused_official_keys(state)) == list(state)


def test_load_checkpoint_unwraps_and_strips_prefixes(small, tmp_path):
    state = {k: v.clone() for k, v in small.state_dict().items()}
    target = nnunet.build(1, 2, (16, 16, 16))
    # nnU-Net v2 checkpoint, saved from a DDP + torch.compile model
    wrapped = {"network_weights": {f"module._orig_mod.{k}": v for k, v in state.items()},
               "optimizer_state": {"state": {}}, "current_epoch": 3}
    path = tmp_path / "checkpoint_final.pth"
    torch.save(wrapped, path)
    baselines.load_checkpoint("nnunet", target, path)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in state.items())
    other = nnunet.build(1, 2, (16, 16, 16))
    baselines.load_checkpoint("nnunet", other, {"state_dict": state})
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())


def test_load_checkpoint_errors_name_the_problem(small, tmp_path):
    state = dict(small.state_dict())
    head = next(k for k in state if "seg_layers" in k and k.endswith("weight"))
    with pytest.raises(ValueError, match=f"missing 1 \\({head}\\)"):
        baselines.load_checkpoint("nnunet", small, {k: v for k, v in state.items() if k != head})
    with pytest.raises(ValueError, match="unexpected 1 \\(extra.weight\\)"):
        baselines.load_checkpoint("nnunet", small, {**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape mismatches 1"):
        baselines.load_checkpoint("nnunet", small, {**state, head: torch.zeros(3, 1, 1, 1, 1)})
    with pytest.raises(ValueError, match="known: nnunet"):
        baselines.load_checkpoint("unet", small, state)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        baselines.load_checkpoint("nnunet", small, tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        baselines.load_checkpoint("nnunet", small, junk)
    with pytest.raises(ValueError, match="no state dict"):
        baselines.load_checkpoint("nnunet", small, {"epoch": 3, "optimizer": {"lr": torch.ones(1)}})


def test_load_checkpoint_drops_unused_official_tensors_of_hand_written_models():
    """An official TransBTS state dict carries two unused tensors; loading drops them."""
    transbts = baselines.module_for("transbts")
    model = transbts.build(1, 2, (16, 16, 16))
    official = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    for key in transbts.UNUSED_OFFICIAL_KEYS:
        official[f"module.{key}"] = torch.zeros(7)
    baselines.load_checkpoint("transbts", model, {"state_dict": official})
    assert set(baselines.HAND_WRITTEN) == {"transunet", "transbts", "nnformer", "3d-uxnet"}
    assert all(callable(baselines.module_for(n).drop_unused_official_keys) for n in baselines.MODULES)
