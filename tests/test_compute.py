"""Compute accounting: parameter counts, MACs by hand against FlopCounterMode, the meta-device
build, the step measurement, the published GMACs of every network, and the bench script."""
from __future__ import annotations

import csv
import io

import pytest
import torch
from torch import nn

from harness import registry
from harness.bench import models as bench_models
from harness.compute import count_parameters, empty_init, gmacs, human_count, measure_step


def test_count_parameters_counts_shared_tensors_once():
    lin = nn.Linear(4, 3)                     # 15
    net = nn.Sequential(nn.Conv3d(2, 5, 3), lin, lin)   # conv 2*5*27 + 5 = 275
    assert count_parameters(net) == 290
    lin.bias.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 287
    assert count_parameters(net) == 290
    bn = nn.BatchNorm3d(4)                    # running stats are buffers, not parameters
    assert count_parameters(bn) == 8


def test_gmacs_by_hand():
    conv = nn.Conv3d(2, 4, 3, padding=1)      # per output voxel: 4 * 2 * 27
    assert gmacs(conv, (1, 2, 8, 8, 8)) * 1e9 == pytest.approx(4 * 2 * 27 * 8 ** 3)
    assert gmacs(conv, (3, 2, 8, 8, 8)) * 1e9 == pytest.approx(3 * 4 * 2 * 27 * 8 ** 3)
    dw = nn.Conv3d(8, 8, 5, padding=2, groups=8)   # depthwise: 1 input channel per filter
    assert gmacs(dw, (1, 8, 4, 4, 4)) * 1e9 == pytest.approx(8 * 125 * 4 ** 3)
    # transposed conv: counted at the INPUT resolution (input voxels x k^3 x Cin x Cout)
    up = nn.ConvTranspose3d(4, 2, 2, stride=2)
    assert gmacs(up, (1, 4, 4, 4, 4)) * 1e9 == pytest.approx(4 ** 3 * 8 * 4 * 2)
    lin = nn.Linear(5, 7)                     # matmul counted (2 x 3 rows of 5 -> 7), bias not
    assert gmacs(lin, (2, 3, 5)) * 1e9 == pytest.approx(2 * 3 * 5 * 7)
    # norms, activations, pooling and element-wise ops are not counted
    rest = nn.Sequential(nn.InstanceNorm3d(2), nn.GELU(), nn.MaxPool3d(2), nn.Upsample(scale_factor=2))
    assert gmacs(rest, (1, 2, 8, 8, 8)) == 0


def test_gmacs_rejects_bad_shapes():
    with pytest.raises(ValueError, match="input_shape"):
        gmacs(nn.Conv3d(1, 1, 1), (8, 8, 8)[:2])
    with pytest.raises(ValueError, match="input_shape"):
        gmacs(nn.Conv3d(1, 1, 1), (1, 1, 0, 8, 8))


def test_empty_init_puts_parameters_and_buffers_on_meta_and_restores():
    before = (nn.Module.register_parameter, nn.Module.register_buffer)
    with empty_init():
        net = nn.Sequential(nn.Conv3d(2, 4, 3), nn.BatchNorm3d(4))
        # constructors may still compute with real tensors (MONAI SwinUNETR's drop-path schedule)
        assert torch.linspace(0, 1, 3)[1].item() == 0.5
    assert all(p.device.type == "meta" for p in net.parameters())
    assert all(b.device.type == "meta" for b in net.buffers())
    assert count_parameters(net) == 2 * 4 * 27 + 4 + 8
    assert (nn.Module.register_parameter, nn.Module.register_buffer) == before
    with pytest.raises(RuntimeError, match="boom"):
        with empty_init():
            raise RuntimeError("boom")
    assert (nn.Module.register_parameter, nn.Module.register_buffer) == before
    frozen = None
    with empty_init():
        frozen = nn.Module()
        frozen.p = nn.Parameter(torch.ones(3), requires_grad=False)
    assert frozen.p.device.type == "meta" and not frozen.p.requires_grad


def test_swin_unetr_builds_on_meta_only_through_empty_init():
    from baselines.monai_nets import build_swin_unetr
    with pytest.raises(RuntimeError, match="meta"):
        with torch.device("meta"):
            build_swin_unetr(1, 14, (128, 128, 128))
    with empty_init():
        model = build_swin_unetr(1, 14, (128, 128, 128))
    assert count_parameters(model) == 62_187_296


# GMACs at 1 -> 14 channels, one 128^3 input (TransUNet: one 512^2 slice), FlopCounterMode / 2:
# specs/mednext.md b.5 (MedNeXt, "PyTorch's built-in FLOP counter (/2)") and specs/baselines.md 1.
SPEC_GMACS = {
    "mednext-s-k3": 128.1, "mednext-s-k5": 166.3, "mednext-b-k3": 167.5, "mednext-b-k5": 205.7,
    "mednext-m-k3": 244.4, "mednext-m-k5": 304.5, "mednext-l-k3": 495.3, "mednext-l-k5": 559.7,
    "nnunet": 478, "unetr": 176, "swin-unetr": 764, "transunet": 169, "transbts": 323,
    "nnformer": 65, "3d-uxnet": 1370,
}


@pytest.mark.parametrize("name", sorted(SPEC_GMACS))
def test_gmacs_match_the_spec(name):
    got = registry.compute_summary(name)["gmacs"]
    digits = 1 if SPEC_GMACS[name] != round(SPEC_GMACS[name]) else 0
    assert round(got, digits) == pytest.approx(SPEC_GMACS[name], abs=0.6 if digits == 0 else 0.06)


def test_measure_step_cpu():
    torch.manual_seed(0)
    big = nn.Sequential(nn.Conv3d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv3d(64, 2, 1))
    m = measure_step(big, (1, 1, 48, 48, 48), steps=2)
    assert m.device == "cpu" and m.input_shape == (1, 1, 48, 48, 48) and m.steps == 2
    assert m.seconds > 0 and m.first_seconds > 0
    assert all(p.grad is not None for p in big.parameters())
    if m.memory_method.startswith("linux"):
        # the 64-channel activation alone is 64 * 48^3 * 4 bytes = 27 MiB (kept for backward)
        assert m.peak_bytes >= 20 * 2 ** 20
        assert m.process_peak_bytes >= m.peak_bytes
    assert m.to_dict()["input_shape"] == [1, 1, 48, 48, 48]
    with pytest.raises(ValueError, match="steps"):
        measure_step(big, (1, 1, 8, 8, 8), steps=0)
    with empty_init():
        meta = nn.Conv3d(1, 1, 1)
    with pytest.raises(ValueError, match="meta"):
        measure_step(meta, (1, 1, 8, 8, 8))


def test_human_count():
    assert human_count(31_205_254) == "31.21M" and human_count(950) == "950"
    assert human_count(1.5e9) == "1.50G"


def test_bench_models_writes_the_csv(tmp_path, capsys):
    out = tmp_path / "bench" / "models.csv"
    rc = bench_models.main(["--models", "nnunet", "transunet", "--no-step", "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["model"] for r in rows] == ["nnunet", "transunet"]
    assert rows[0]["params"] == "31205254" and rows[1]["gmacs_patch"] == "512x512"
    assert list(rows[0]) == bench_models.COLUMNS
    assert capsys.readouterr().out == out.read_text()
    assert bench_models.main(["--models", "nope", "--no-step", "--out", str(out)]) == 2


def test_bench_models_measures_in_a_subprocess(tmp_path):
    """One real measurement (nnU-Net at 32^3, one step, its own subprocess); MedNeXt rows come in
    pairs, without and with activation checkpointing."""
    out = tmp_path / "models.csv"
    rc = bench_models.main(["--models", "nnunet", "--size", "32", "--steps", "1",
                            "--threads", "1", "--out", str(out)])
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rc == 0, rows
    (row,) = rows
    assert row["status"] == "ok" and row["step_input"] == "1x1x32x32x32"
    assert float(row["step_seconds"]) > 0 and float(row["step_peak_mb"]) >= 0
    assert row["threads"] == "1" and row["torch"] == torch.__version__
    assert row["deep_supervision"] == "True" and row["activation_checkpointing"] == "False"
    assert bench_models.main(["--models", "mednext-m-k3", "--no-step", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["activation_checkpointing"] for r in rows] == ["False", "True"]
