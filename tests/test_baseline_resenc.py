"""nnU-Net ResEnc baseline (beyond the paper): the network against what nnU-Net's own ResEnc
planners plan for a 128^3 patch at 1 mm, its initialisation, and checkpoint loading."""
from __future__ import annotations

import json

import pytest
import torch
from nnunetv2.experiment_planning.experiment_planners.residual_unets import \
    residual_encoder_unet_planners as resenc_planners
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

import baselines
from baselines import nnunet, resenc
from harness.compute import count_parameters, empty_init

PRESETS = ("nnUNetPlannerResEncM", "nnUNetPlannerResEncL", "nnUNetPlannerResEncXL")


@pytest.fixture(scope="module")
def planner_dataset(tmp_path_factory):
    """A raw dataset nnU-Net's planners accept without image files: 1 channel, 14 labels, and a
    fingerprint with what ``get_plans_for_configuration`` reads."""
    root = tmp_path_factory.mktemp("nnunet")
    name = "Dataset990_ResEncPlan"
    (root / "raw" / name).mkdir(parents=True)
    (root / "pre" / name).mkdir(parents=True)
    labels = {"background": 0, **{f"organ{i}": i for i in range(1, 14)}}
    (root / "raw" / name / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz",
        "dataset": {"case": {"images": ["imagesTr/case_0000.nii.gz"], "label": "labelsTr/case.nii.gz"}}}))
    (root / "pre" / name / "dataset_fingerprint.json").write_text(
        json.dumps({"median_relative_size_after_cropping": 1.0}))
    return root, name


@pytest.mark.parametrize("preset", PRESETS)
def test_nnunet_resenc_planners_plan_this_network_at_128_cubed(preset, planner_dataset, monkeypatch):
    """Each ResEnc preset, given a dataset of median shape 128^3 at 1 mm, keeps the 128^3 patch
    and plans exactly the network ``resenc.build`` builds (kwargs, state-dict layout, count)."""
    root, name = planner_dataset
    monkeypatch.setenv("nnUNet_raw", str(root / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(root / "pre"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")    # the planner sets torch's threads to it (0 fails)
    planner = getattr(resenc_planners, preset)(name)
    with torch.device("meta"):     # the planner's VRAM estimate builds the network
        plan = planner.get_plans_for_configuration((1.0, 1.0, 1.0), (128, 128, 128), "x",
                                                   30 * 128.0 ** 3, {})
    assert tuple(int(n) for n in plan["patch_size"]) == (128, 128, 128)
    arch = plan["architecture"]
    kw = arch["arch_kwargs"]
    topo = resenc.plan_topology((128, 128, 128), (1.0, 1.0, 1.0), max_stages=resenc.MAX_STAGES)
    assert kw["n_stages"] == topo.n_stages == 6
    assert tuple(kw["features_per_stage"]) == topo.features_per_stage == (32, 64, 128, 256, 320, 320)
    assert tuple(map(tuple, kw["strides"])) == topo.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert tuple(map(tuple, kw["kernel_sizes"])) == topo.kernel_sizes == ((3, 3, 3),) * 6
    assert topo == nnunet.plan_topology((128, 128, 128))        # the default planner's rule
    assert tuple(kw["n_blocks_per_stage"]) == resenc.BLOCKS_PER_STAGE_ENCODER[:6] == (1, 3, 4, 6, 6, 6)
    assert tuple(kw["n_conv_per_stage_decoder"]) == (resenc.CONVS_PER_STAGE_DECODER,) * 5
    assert kw["conv_bias"] and kw["norm_op_kwargs"] == {"eps": 1e-5, "affine": True}
    assert arch["network_class_name"].endswith("unet.ResidualEncoderUNet")
    with torch.device("meta"):
        theirs = get_network_from_plans(arch["network_class_name"], kw, arch["_kw_requires_import"],
                                        1, 14, allow_init=False, deep_supervision=True)
    with empty_init():
        ours = resenc.build(1, 14, (128, 128, 128))
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    assert count_parameters(ours) == count_parameters(theirs) == resenc.REFERENCE_PARAMS["params"]


def test_reference_counts_on_meta():
    for ds in (True, False):          # the heads are always built
        with empty_init():
            assert count_parameters(resenc.build(1, 14, (128, 128, 128), deep_supervision=ds)) \
                == 102_359_430
    with empty_init():
        assert count_parameters(resenc.build(4, 4, (128, 128, 128))) == 102_353_972


def test_initialisation_starts_each_residual_block_as_its_skip_path():
    torch.manual_seed(0)
    model = resenc.build(1, 3, (32, 32, 32))
    blocks = [b for stage in model.encoder.stages for b in stage.blocks]
    assert len(blocks) == 1 + 3 + 4 + 6                # 4 stages at 32^3
    assert all(not b.conv2.norm.weight.any() for b in blocks)
    assert all(b.conv1.conv.bias.abs().sum() == 0 for b in blocks)
    w = blocks[0].conv1.conv.weight.detach()
    assert 0.5 < float(w.std() * (w[0].numel() ** 0.5)) / (2 / (1 + 1e-4)) ** 0.5 < 1.5   # He(1e-2)


def test_forward_shapes_deep_supervision_and_input_check():
    torch.manual_seed(0)
    model = resenc.build(1, 2, (32, 64, 64))
    assert model.topology.strides[-1] == (1, 2, 2)           # the quick profile's patch
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 64, 64))
        scales = resenc.deep_supervision_scales((32, 64, 64))
        assert [tuple(o.shape[2:]) for o in out] == \
            [tuple(round(n * f) for n, f in zip((32, 64, 64), s)) for s in scales]
        model.decoder.deep_supervision = False
        assert tuple(model(torch.randn(1, 1, 32, 64, 64)).shape) == (1, 2, 32, 64, 64)
    with pytest.raises(ValueError, match=r"nnunet-resenc: input size \(36, 64, 64\).*\(40, 64, 64\)"):
        model(torch.empty(1, 1, 36, 64, 64, device="meta"))
    with pytest.raises(ValueError, match=r"nnunet-resenc: patch \(36, 64, 64\).*\(40, 64, 64\)"):
        resenc.build(1, 2, (36, 64, 64))


def test_load_checkpoint_round_trip():
    torch.manual_seed(0)
    source = resenc.build(1, 2, (16, 16, 16))
    target = resenc.build(1, 2, (16, 16, 16))
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    baselines.load_checkpoint("nnunet-resenc", target, {"network_weights": state})
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    assert baselines.module_for("nnunet-resenc") is resenc
