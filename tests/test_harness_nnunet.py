"""The nnU-Net seam (harness.nnunet): protocol plans, the trainer's loss and optimiser wiring,
non-finite steps (skipped, counted, a run of them stops), and the clear error of a missing UpKern source."""
from __future__ import annotations

import json
import math

import pytest
import torch

from harness.jobs.plan import plan_cell
from harness.nnunet.plans import PLANS_NAME, bench_plans, plain_unet_architecture, training_plans
from harness.provenance import run_id


def test_plain_unet_topology_follows_nnunet_planner():
    a = plain_unet_architecture("3d", (128, 128, 128))["arch_kwargs"]
    assert a["n_stages"] == 6 and a["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert a["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5
    s = plain_unet_architecture("3d", (32, 32, 32))["arch_kwargs"]
    assert s["n_stages"] == 4 and s["strides"][-1] == [2, 2, 2]
    t = plain_unet_architecture("2d", (512, 512))["arch_kwargs"]
    assert t["n_stages"] == 8 and t["features_per_stage"][-1] == 512
    assert t["conv_op"].endswith("Conv2d")
    with pytest.raises(ValueError, match="not divisible"):
        plain_unet_architecture("3d", (36, 36, 36))
    with pytest.raises(ValueError, match="axes"):
        plain_unet_architecture("2d", (32, 32, 32))


def test_bench_plans_impose_one_mm_and_one_configuration():
    cfg = {"data_identifier": "nnUNetPlans_3d_fullres", "spacing": [2.5, 0.8, 0.8],
           "patch_size": [80, 160, 160], "batch_size": 2, "next_stage": "3d_cascade_fullres"}
    plans = {"dataset_name": "Dataset903_PhantomKiTS19", "plans_name": "nnUNetPlans",
             "configurations": {"2d": {}, "3d_fullres": cfg, "3d_lowres": {}}}
    out = bench_plans(plans)
    assert out["plans_name"] == PLANS_NAME and list(out["configurations"]) == ["3d_1mm"]
    c = out["configurations"]["3d_1mm"]
    assert c["spacing"] == [1.0, 1.0, 1.0] and "next_stage" not in c
    assert plans["configurations"]["3d_fullres"]["spacing"] == [2.5, 0.8, 0.8]   # not mutated
    with pytest.raises(ValueError, match="3d_fullres"):
        bench_plans({"dataset_name": "D", "configurations": {"2d": {}}})


def test_training_plans_are_1mm_and_2d_slices_the_datasets_plane(smoke_root):
    from harness.nnunet.env import configure
    configure(smoke_root)
    p3, c3 = training_plans("Dataset903_PhantomKiTS19", "3d", (32, 32, 32), 2, "nnunet")
    p2, c2 = training_plans("Dataset903_PhantomKiTS19", "2d", (32, 32), 4, "transunet")
    a, b = p3["configurations"][c3], p2["configurations"][c2]
    assert a["spacing"] == b["spacing"] == [1.0] * 3
    # KiTS19 is sliced sagittally (its own 2D data); the 3D plans keep nnU-Net's transpose
    assert p2["transpose_forward"] == [2, 1, 0] and a["data_identifier"] != b["data_identifier"]
    assert p3["transpose_forward"] == [0, 1, 2]
    assert (a["patch_size"], a["batch_size"], b["patch_size"], b["batch_size"]) == ([32] * 3, 2, [32] * 2, 4)
    assert b["batch_dice"] is True
    with pytest.raises(FileNotFoundError, match="prepare"):
        training_plans("Dataset901_PhantomBTCV", "3d", (32, 32, 32), 2, "nnunet")


def test_checked_deep_supervision_refuses_a_length_mismatch():
    from harness.nnunet.trainer import CheckedDeepSupervision

    loss = CheckedDeepSupervision(lambda a, b: (a - b).abs().mean(), (0.6, 0.4))
    x = [torch.ones(1), torch.ones(1)]
    assert float(loss(x, [torch.zeros(1), torch.zeros(1)])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="deep supervision mismatch"):
        loss(x + [torch.ones(1)], x + [torch.ones(1)])


def _spec(smoke_work, model, **profile):
    job = plan_cell("kits19", model, 0, "smoke", smoke_work)[-1]
    spec = json.loads(json.dumps(job.payload["spec"]))
    spec["profile"].update(profile)
    return spec


@pytest.fixture
def configured(smoke_root):
    from harness.nnunet.env import configure
    configure(smoke_root)


# smoke patch (32, 64, 64): MedNeXt has 5 outputs, nnU-Net plans 5 stages -> 4 outputs
@pytest.mark.parametrize("model, n_out, zero_last", [("mednext-s-k3", 5, False), ("nnunet", 4, True)])
def test_trainer_wires_the_recipe(smoke_work, configured, tmp_path, model, n_out, zero_last):
    from harness.nnunet.training import make_trainer

    spec = _spec(smoke_work, model)
    tr = make_trainer(spec, tmp_path / "run")
    tr.initialize()
    prof = spec["profile"]
    assert (tr.num_epochs, tr.num_iterations_per_epoch, tr.num_val_iterations_per_epoch) == \
        (prof["epochs"], prof["iterations_per_epoch"], prof["val_iterations_per_epoch"])
    assert tr.enable_deep_supervision
    recipe = spec["recipe"]
    opt = tr.optimizer
    assert type(opt).__name__ == {"adamw": "AdamW", "sgd": "SGD"}[recipe["optimizer"]]
    assert opt.param_groups[0]["lr"] == pytest.approx(recipe["lr"])
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(recipe["weight_decay"])
    w = tr.loss.weight_factors
    assert len(w) == n_out == len(tr._get_deep_supervision_scales())
    assert math.isclose(sum(w), 1.0) and (w[-1] == 0) == zero_last
    out = tr.network(torch.zeros(1, 1, *prof["patch"]))
    assert isinstance(out, (list, tuple)) and len(out) == n_out
    assert not (tmp_path / "run" / ".nnunet_results").exists()
    # recorded in run.json: MedNeXt computes channels-last on a CPU (mednext.layout)
    assert tr.execution()["layout"] == ("channels_last" if model.startswith("mednext") else None)


def _poison(tr, bad_calls):
    """Make the loss NaN on the given (1-based) calls: training and validation steps alternate."""
    real_loss, calls = tr.loss, {"n": 0}

    def poisoned(output, target):
        calls["n"] += 1
        value = real_loss(output, target)
        return value * float("nan") if bad_calls(calls["n"]) else value

    tr.loss = poisoned


def _finite_weights(ckpt) -> bool:
    return all(torch.isfinite(v).all() for v in ckpt["network_weights"].values()
               if v.dtype.is_floating_point)


def test_a_non_finite_step_is_skipped_counted_and_the_run_goes_on(smoke_work, configured, tmp_path):
    from mednext.checkpoint import read_checkpoint
    from harness.nnunet.training import make_trainer

    spec = _spec(smoke_work, "nnunet", epochs=3, iterations_per_epoch=1)
    run_dir = tmp_path / "run"
    tr = make_trainer(spec, run_dir)
    tr.initialize()
    before = {k: v.clone() for k, v in tr.network.state_dict().items()}
    _poison(tr, lambda n: n in (1, 2))        # epoch 0: its training step and its validation
    tr.run_training()
    assert tr.skipped.total == 1 and tr.execution()["nonfinite_steps_skipped"] == 1
    assert "1 step(s) with non-finite gradients skipped" in (run_dir / "training_log.txt").read_text()
    final = read_checkpoint(run_dir / "checkpoint_final.pth")
    assert _finite_weights(final) and final["current_epoch"] == 3
    changed = [k for k, v in final["network_weights"].items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed                              # the two good steps did train


def test_a_run_of_non_finite_steps_stops_and_keeps_the_last_good_checkpoint(
        smoke_work, configured, tmp_path, monkeypatch):
    from mednext.checkpoint import read_checkpoint
    from harness.nnunet import precision
    from harness.nnunet.trainer import NonFiniteLossError
    from harness.nnunet.training import make_trainer

    monkeypatch.setattr(precision, "NONFINITE_LIMIT", 2)
    spec = _spec(smoke_work, "nnunet", epochs=4, iterations_per_epoch=1)
    run_dir = tmp_path / "run"
    tr = make_trainer(spec, run_dir)
    tr.initialize()
    _poison(tr, lambda n: n >= 3)              # good epoch 0, then every step NaN
    with pytest.raises(NonFiniteLossError, match=r"2 consecutive .* epoch 2.*checkpoint_latest.pth "
                                                 r"\(resumes at epoch 2\)"):
        tr.run_training()
    ckpt = read_checkpoint(run_dir / "checkpoint_latest.pth")
    assert ckpt["current_epoch"] == 2 and ckpt["optimizer_state"]["state"]     # resumable
    assert _finite_weights(ckpt)                # the skipped steps changed nothing
    assert not (run_dir / "checkpoint_final.pth").exists()
    assert (run_dir / "progress.csv").read_text().count("\n") == 3      # header + epochs 0, 1


def test_autocast_off_keeps_a_module_in_fp32_under_an_outer_autocast():
    from harness.nnunet.precision import autocast_off

    torch.manual_seed(0)
    plain, kept = torch.nn.Linear(4, 4), autocast_off(torch.nn.Linear(4, 4))
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain(x).dtype == torch.bfloat16
        assert kept(x).dtype == torch.float32
        assert plain(x).dtype == torch.bfloat16            # the outer region is restored
    with pytest.raises(RuntimeError):
        kept(torch.randn(2, 5))                             # a failing forward leaves no state
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain(x).dtype == torch.bfloat16


def test_upkern_without_its_source_is_a_clear_error(smoke_work, configured, tmp_path):
    from harness.nnunet.training import load_init, make_trainer

    spec = _spec(smoke_work, "mednext-s-k5")
    assert spec["init"]["mode"] == "upkern" and spec["init"]["model"] == "mednext-s-k3"
    tr = make_trainer(spec, tmp_path / "run")
    tr.initialize()
    with pytest.raises(FileNotFoundError, match=r"mednext-s-k3.*train mednext-s-k3 on fold 0 first"):
        load_init(tr, spec, tmp_path / "elsewhere")
    assert run_id(spec).startswith("mednext-s-k5.phantom-kits19.f0.")


def test_compile_and_precision_follow_the_run_not_the_environment(smoke_work, smoke_root, tmp_path,
                                                                   monkeypatch):
    import os

    from harness.nnunet.env import configure
    from harness.nnunet.trainer import unwrap
    from harness.nnunet.training import make_trainer

    monkeypatch.setenv("nnUNet_compile", "true")
    configure(smoke_root)                    # a user's export does not survive configure
    assert os.environ["nnUNet_compile"] == "f"
    monkeypatch.setenv("nnUNet_compile", "true")
    spec = _spec(smoke_work, "nnunet")
    assert spec["settings"] == {"compile": False, "precision": "amp"}
    tr = make_trainer(spec, tmp_path / "run")
    assert tr._do_i_compile() is False       # the run says no, whatever nnUNet_compile says
    spec["settings"] = {"compile": True, "precision": "fp32"}
    tr = make_trainer(spec, tmp_path / "run2")
    assert tr._do_i_compile() is True
    tr.initialize()
    assert unwrap(tr.network) is not tr.network           # compiled
    assert tr.grad_scaler is None                          # CPU: no scaler in either precision
    ex = tr.execution()
    assert ex["compiled"] and ex["autocast"] is None and not ex["cudnn_benchmark"]


def test_nnunet_file_listing_forks_no_process_inside_in_process_pools(tmp_path, monkeypatch):
    import multiprocessing.dummy
    import os

    import nnunetv2.utilities.utils as listing
    from harness.nnunet.env import in_process_pools

    for case in ("a", "b"):
        (tmp_path / f"{case}_0000.nii.gz").touch()
    forked = []

    def no_fork():
        forked.append(1)
        raise AssertionError("a process was forked")

    monkeypatch.setattr(os, "fork", no_fork)
    original = listing.Pool
    with in_process_pools():
        assert listing.Pool is multiprocessing.dummy.Pool
        lists = listing.create_lists_from_splitted_dataset_folder(str(tmp_path), ".nii.gz")
    assert [[p.rsplit("/", 1)[1] for p in files] for files in lists] == \
        [["a_0000.nii.gz"], ["b_0000.nii.gz"]]
    assert listing.Pool is original and not forked


@pytest.mark.parametrize("target, heads", [("labels", 4), ("regions", 3)])
def test_both_brats_targets_predict_a_label_map_scored_as_the_same_regions(target, heads):
    """nnU-Net's label manager under each target's dataset.json: the outputs it trains (softmax
    with background, or one sigmoid per region) and the label map prediction writes, from which
    harness.metrics forms WT, TC and ET -- the regions the network predicted."""
    import numpy as np
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from harness.datasets import task_spec
    from harness.metrics.regions import regions_for

    spec = task_spec("phantom-brats21")
    dj = spec.target_dataset_json(spec.dataset_json(5), target)
    lm = LabelManager(dj["labels"], dj.get("regions_class_order"))
    assert lm.num_segmentation_heads == heads == spec.num_outputs(target)
    assert lm.has_regions == (target == "regions")
    g = torch.arange(16.0)
    z, y, x = torch.meshgrid(g, g, g, indexing="ij")
    r = ((z - 8) ** 2 + (y - 7) ** 2 + (x - 8) ** 2).sqrt()
    wt, tc, et = r < 7, r < 4, (r < 4) & (r >= 2)     # nested: oedema, necrotic core, enhancing rim
    if target == "regions":
        logits = torch.stack([torch.where(m, 4.0, -4.0) for m in (wt, tc, et)])
    else:  # one logit per label: background, edema (WT only), necrosis (TC, not ET), enhancing
        label = torch.zeros_like(r, dtype=torch.long)
        label[wt], label[tc], label[et] = 1, 2, 3
        logits = torch.nn.functional.one_hot(label, 4).permute(3, 0, 1, 2).float() * 8
    seg = np.asarray(lm.convert_logits_to_segmentation(logits))
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 3}
    for region, mask in zip(regions_for("phantom-brats21"), (wt, tc, et)):
        assert np.array_equal(region.mask(seg), mask.numpy()), region.name
