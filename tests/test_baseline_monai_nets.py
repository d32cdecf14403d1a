"""UNETR and SwinUNETR as configured from MONAI: reference counts, the removed unused UNETR norms,
input-size errors and argument validation (forward/backward runs in tests/test_registry.py)."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR as MonaiUNETR

from baselines import monai_nets
from harness.compute import count_parameters, empty_init


def test_reference_counts():
    for build, ref in ((monai_nets.build_unetr, monai_nets.UNETR_REFERENCE_PARAMS),
                       (monai_nets.build_swin_unetr, monai_nets.SWIN_UNETR_REFERENCE_PARAMS)):
        with empty_init():
            model = build(ref["in_channels"], ref["num_classes"], ref["patch_size"])
        assert count_parameters(model) == ref["params"]
    # 3 more input channels: patch projection 3 * 16^3 * 768, first conv block 3 * (27 + 1) * 16
    with empty_init():
        four = count_parameters(monai_nets.build_unetr(4, 14, (128,) * 3))
    assert four == 93_011_374 + 3 * (16 ** 3 * 768 + 28 * 16) == 102_449_902


def test_unetr_drops_monai_cross_attention_norms():
    with empty_init():
        ours = monai_nets.build_unetr(1, 2, (16, 16, 16))
        library = MonaiUNETR(1, 2, (16, 16, 16), proj_type="perceptron")
    state = library.state_dict()
    kept = monai_nets.drop_unused_official_keys(state)
    assert set(state) - set(kept) == {f"vit.blocks.{i}.norm_cross_attn.{p}"
                                      for i in range(12) for p in ("weight", "bias")}
    assert set(kept) == set(ours.state_dict())
    assert count_parameters(library) - count_parameters(ours) == \
        monai_nets.UNETR_REFERENCE_PARAMS["library_unused_params"] == 18_432
    assert monai_nets.UNETR_REFERENCE_PARAMS["library_params"] == 93_029_806   # spec section 12


def test_swin_unetr_keeps_every_library_tensor():
    with empty_init():
        model = monai_nets.build_swin_unetr(1, 2, (64, 64, 64))
    state = model.state_dict()
    assert monai_nets.drop_unused_official_keys(state).keys() == state.keys()
    assert not model.swinViT.layers1[0].blocks[0].attn.qkv.bias is None   # qkv_bias as the paper


def test_input_size_errors_name_the_size():
    with empty_init():
        unetr = monai_nets.build_unetr(1, 2, (32, 32, 32))
        swin = monai_nets.build_swin_unetr(1, 2, (64, 64, 32))
    with pytest.raises(ValueError, match=r"\(32, 32, 32\)"):
        unetr(torch.empty(1, 1, 48, 32, 32, device="meta"))
    with pytest.raises(ValueError, match=r"multiple of 32.*\(64, 64, 64\)"):
        swin(torch.empty(1, 1, 48, 64, 64, device="meta"))


@pytest.mark.parametrize("build", [monai_nets.build_unetr, monai_nets.build_swin_unetr])
@pytest.mark.parametrize("args,match", [
    ((0, 2, (64, 64, 64)), "in_channels"),
    ((1, 1, (64, 64, 64)), "num_classes"),
    ((1, 2, (64, 64)), "patch_size"),
    ((1, 2, (64, 64, 40)), r"e\.g\. \(64, 64, (48|64)\)"),
])
def test_argument_validation(build, args, match):
    with pytest.raises(ValueError, match=match):
        build(*args)
