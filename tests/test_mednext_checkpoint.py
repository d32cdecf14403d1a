"""load_checkpoint: files with wrapping dicts and prefixes (official v1 ``state_dict``, nnU-Net v2
``network_weights`` with numpy scalars in the log), clear refusals, and MONAI MedNeXt state dicts
(equal outputs where the architectures agree - bit-exact in the channels-first layout, within
1e-4 in the channels-last one - a named refusal where they do not)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import MedNeXt as MonaiMedNeXt
from monai.networks.nets.mednext import create_mednext as monai_create

import mednext
from mednext import create_mednext, load_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = {"block_counts": [1, 2, 1, 1, 1, 1, 1, 2, 1]}


def randomised(model: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # dummy_tensor stays 1.0, as in every official checkpoint
                p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def outputs_equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def outputs_close(a, b, tol: float = 1e-4) -> bool:
    """Equal up to ``tol`` of the output's scale (the channels-last layout's rounding)."""
    return len(a) == len(b) and all(
        (x - y).abs().max() <= tol * max(1.0, x.abs().max().item()) for x, y in zip(a, b))


@pytest.mark.parametrize("wrap", ["official_v1", "nnunet_v2", "plain"])
def test_round_trip_through_a_file(tmp_path, wrap):
    torch.manual_seed(0)
    trained = randomised(create_mednext("S", 3, 1, 3, **SMALL), 1)
    sd = trained.state_dict()
    if wrap == "official_v1":  # DDP prefix, nnU-Net v1 wrapping and log with numpy scalars
        obj = {"epoch": 1000, "state_dict": {"module." + k: v for k, v in sd.items()},
               "plot_stuff": ([0.9, 0.8], [0.7], [np.float64(0.5)], [np.float32(0.4)]),
               "best_stuff": (12, np.float64(0.61), 900)}
    elif wrap == "nnunet_v2":
        obj = {"network_weights": {"_orig_mod." + k: v for k, v in sd.items()},
               "logging": {"mean_fg_dice": [np.float64(0.3)], "ema": np.zeros(3)},
               "current_epoch": 5, "trainer_name": "nnUNetTrainer"}
    else:
        obj = sd
    path = tmp_path / "checkpoint.pth"
    torch.save(obj, path)
    fresh = create_mednext("S", 3, 1, 3, **SMALL)
    assert load_checkpoint(fresh, path) is fresh
    assert all(torch.equal(a, b) for a, b in zip(sd.values(), fresh.state_dict().values()))
    x = torch.randn(1, 1, 16, 16, 32)
    with torch.no_grad():
        assert outputs_equal(trained(x), fresh(x))
    fresh2 = load_checkpoint(create_mednext("S", 3, 1, 3, **SMALL), {"state_dict": sd})
    assert all(torch.equal(a, b) for a, b in zip(sd.values(), fresh2.state_dict().values()))


class NotWeights:
    pass


def test_unreadable_and_unsuitable_files_are_refused_by_name(tmp_path):
    model = create_mednext("S", 3, 1, 3, **SMALL)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(model, missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_checkpoint(model, garbage)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": model.state_dict(), "extra": NotWeights()}, unsafe)
    with pytest.raises(ValueError, match=r"unsafe\.pth.*weights_only"):
        load_checkpoint(model, unsafe)
    nothing = tmp_path / "nothing.pth"
    torch.save({"epoch": 3, "optimizer": {"lr": 1e-3}}, nothing)
    with pytest.raises(ValueError, match=r"nothing\.pth.*no state dict.*epoch"):
        load_checkpoint(model, nothing)


@pytest.mark.parametrize("src_kwargs,dst_kwargs,match", [
    ({"num_classes": 4}, {}, r"'out_0\.conv_out\.weight' has checkpoint shape \(32, 4, 1, 1, 1\) "
                             r"but model shape \(32, 3, 1, 1, 1\)"),
    ({"deep_supervision": False}, {}, "deep_supervision=False"),
    ({}, {"deep_supervision": False}, "deep_supervision=True"),
    ({"kernel_size": 5}, {}, r"'enc_block_0\.0\.conv1\.weight'.*\(32, 1, 5, 5, 5\)"),
    ({}, {"grn": True}, r"'enc_block_0\.0\.grn_beta'.*missing.*GRN"),
])
def test_mismatches_name_the_tensor(src_kwargs, dst_kwargs, match):
    def make(kw):
        args = {"kernel_size": 3, "num_classes": 3, **SMALL, **kw}
        with torch.device("meta"):
            return create_mednext("S", args.pop("kernel_size"), 1, args.pop("num_classes"), **args)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(make(dst_kwargs), make(src_kwargs).state_dict())


def test_monai_small_loads_and_gives_equal_outputs():
    torch.manual_seed(0)
    monai = randomised(monai_create("S", spatial_dims=3, in_channels=2, out_channels=4,
                                    kernel_size=3, deep_supervision=True), 2)
    ours = load_checkpoint(create_mednext("S", 3, 2, 4, layout="channels_first"),
                           monai.state_dict())
    assert ours.dummy_tensor.item() == 1.0
    assert torch.equal(ours.up_3.conv1.weight, monai.up_blocks[0].conv1.weight)
    assert torch.equal(ours.out_4.conv_out.weight, monai.out_blocks[0].conv_out.weight)
    x = torch.randn(1, 2, 32, 16, 16)
    with torch.no_grad():
        monai.train()  # MONAI returns its DS outputs in training mode only
        assert outputs_equal(monai(x), ours(x))   # the official layer order: bit-exact
        ours.layout = "channels_last"
        assert outputs_close(monai(x), ours(x))
        monai.eval()
        ours.do_ds = False
        assert outputs_close([monai(x)], [ours(x)])
        ours.layout = "channels_first"
        assert torch.equal(monai(x), ours(x))


def test_monai_custom_config_where_the_architectures_agree():
    """Equal encoder ratios (so MONAI's down-block ratio rule coincides), distinct decoder ratios
    and block counts: checks the deepest-first decoder/up/head index map."""
    torch.manual_seed(0)
    monai = randomised(MonaiMedNeXt(
        spatial_dims=2, in_channels=1, out_channels=3, encoder_expansion_ratio=3,
        bottleneck_expansion_ratio=3, decoder_expansion_ratio=(4, 3, 2, 5), kernel_size=5,
        deep_supervision=True, use_residual_connection=True, blocks_down=(1, 2, 1, 1),
        blocks_bottleneck=2, blocks_up=(2, 1, 1, 3)), 3)
    ours = load_checkpoint(mednext.MedNeXt(1, 3, exp_r=[3, 3, 3, 3, 3, 4, 3, 2, 5], kernel_size=5,
                                           deep_supervision=True, dim="2d",
                                           block_counts=[1, 2, 1, 1, 2, 2, 1, 1, 3],
                                           layout="channels_first"),
                           monai.state_dict())
    monai.train()
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        assert outputs_equal(monai(x), ours(x))
        ours.layout = "channels_last"
        assert outputs_close(monai(x), ours(x))


def test_monai_base_is_refused_with_the_reason():
    with torch.device("meta"):
        monai = monai_create("B", spatial_dims=3, in_channels=1, out_channels=14, kernel_size=3)
        ours = create_mednext("B", 3, 1, 14, deep_supervision=False)
    with pytest.raises(ValueError) as info:
        load_checkpoint(ours, monai.state_dict())
    message = str(info.value)
    assert "'down_0.conv2.weight'" in message and "'down_blocks.0.conv2.weight'" in message
    assert "(64, 32, 1, 1, 1)" in message and "(96, 32, 1, 1, 1)" in message
    assert "expansion ratio 2 in the checkpoint, 3 in the model" in message


def test_monai_grn_is_refused_for_down_blocks():
    with torch.device("meta"):
        monai = MonaiMedNeXt(spatial_dims=3, in_channels=1, out_channels=3, kernel_size=3,
                             use_residual_connection=True, global_resp_norm=True,
                             blocks_down=(1, 1, 1, 1), blocks_bottleneck=1, blocks_up=(1, 1, 1, 1))
        ours = mednext.MedNeXt(1, 3, block_counts=[1] * 9, grn=True)
    with pytest.raises(ValueError, match=r"'down_1\.grn_beta'.*MONAI never puts GRN in down"):
        load_checkpoint(ours, monai.state_dict())


# ---- read_checkpoint: the project's one reader -------------------------------------------------

def test_read_checkpoint_reads_training_checkpoints_weights_only(tmp_path):
    obj = {"network_weights": {"w": torch.ones(2)}, "optimizer_state": {"state": {}},
           "logging": {"train_losses": [np.float64(0.5), np.float32(0.25)], "ema": np.zeros(3)},
           "_best_ema": np.float64(0.1), "current_epoch": 3,
           "init_args": {"plans": {"a": [1, 2]}, "configuration": "3d", "fold": 0,
                         "dataset_json": {"labels": {"background": 0}},
                         "device": torch.device("cpu")},
           "inference_allowed_mirroring_axes": (0, 1, 2)}
    for name, kwargs in (("zip.pth", {}), ("legacy.pth", {"_use_new_zipfile_serialization": False})):
        torch.save(obj, tmp_path / name, **kwargs)
        back = mednext.read_checkpoint(tmp_path / name)
        assert back["init_args"]["device"] == torch.device("cpu")
        assert back["logging"]["train_losses"] == [0.5, 0.25] and back["current_epoch"] == 3
        assert torch.equal(back["network_weights"]["w"], torch.ones(2))


def test_read_checkpoint_tells_corrupt_from_refused(tmp_path):
    torch.save({"w": torch.randn(1000)}, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    damaged = {"truncated.pth": data[: len(data) // 2], "random.pth": np.random.default_rng(0)
               .integers(0, 256, 4096, dtype=np.uint8).tobytes(), "empty.pth": b""}
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"checkpoint .*{name} is unreadable \(truncated or "
                                             rf"corrupt"):
            mednext.read_checkpoint(tmp_path / name)
    for name, kwargs in (("unsafe.pth", {}),
                         ("unsafe_legacy.pth", {"_use_new_zipfile_serialization": False})):
        torch.save({"w": torch.ones(1), "extra": NotWeights()}, tmp_path / name, **kwargs)
        with pytest.raises(ValueError, match=rf"{name}: refused by torch.load\(weights_only=True\)"
                                             rf"; it pickles \[.*NotWeights'\]"):
            mednext.read_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        mednext.read_checkpoint(tmp_path / "nope.pth")


def test_read_checkpoint_finds_bytes_damaged_inside_a_tensor(tmp_path):
    """torch.load does not check the zip members' CRC-32: damaged weights would load as wrong
    numbers (a resumed run then trains on garbage). The reader checks them first."""
    w = torch.randn(20_000)
    torch.save({"w": w}, tmp_path / "c.pth")
    data = bytearray((tmp_path / "c.pth").read_bytes())
    start = data.find(w.numpy().tobytes()[:64])
    assert start > 0
    data[start + 1000:start + 1100] = bytes(100)
    (tmp_path / "c.pth").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"c.pth is unreadable .*CRC-32 of member .*data/0"):
        mednext.read_checkpoint(tmp_path / "c.pth")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_read_checkpoint_runs_no_pickled_code(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"w": torch.ones(1), "x": RunsCode(str(marker))}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match=r"code\.pth: refused .*pathlib"):
        mednext.read_checkpoint(tmp_path / "code.pth")
    assert not marker.exists()
    torch.load(tmp_path / "code.pth", weights_only=False)   # the file would have run it
    assert marker.exists()
