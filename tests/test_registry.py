"""The registry drives these tests: every registered model is built at its own small test patch,
trained for one step (forward + backward in the configuration its recipe trains), and counted at
its reference configuration on the meta device against the exact published count."""
from __future__ import annotations

import argparse
import importlib
import json
import math

import pytest
import torch

from harness import registry
from harness.compute import count_parameters, empty_init
from harness.errors import UserError
from harness.registry import commands

NAMES = registry.names()
EXPECTED_NAMES = (
    [f"mednext-{s}-k{k}" for k in (3, 5) for s in "sbml"]
    + ["mednext-b-k3-std-resampling", "mednext-b-k5-scratch", "mednext-b-k3-2x",
       "nnunet", "unetr", "swin-unetr", "transunet", "transbts", "nnformer", "3d-uxnet"]
    + ["mednext-b-k3-grn", "nnunet-resenc", "nnunet-resenc-l-native"])  # beyond the paper (table2-plus)


def _architecture(name: str) -> str:
    e = registry.get(name)
    return json.dumps([e.builder, dict(e.kwargs)], sort_keys=True)


def _unique_architectures() -> list[str]:
    """One name per distinct network (mednext-b-k3-2x is mednext-b-k3, b-k5-scratch is b-k5)."""
    seen: dict[str, str] = {}
    for name in NAMES:
        seen.setdefault(_architecture(name), name)
    return list(seen.values())


# SwinUNETR's smallest input that trains is 64x64x32 (its 1/32 bottleneck instance norm needs >= 4
# voxels to pass gradients) and its 7^3 windows pad every stage: ~10 s on one free core, several
# times that on a shared one. It runs with ``-m slow``; every other network runs by default.
SLOW = {"swin-unetr"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: the machine's cores are shared, oversubscription makes steps many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_names_are_the_project_contract():
    assert sorted(NAMES) == sorted(EXPECTED_NAMES)
    assert len(set(NAMES)) == len(NAMES)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError, match="known: .*mednext-s-k3.*3d-uxnet"):
        registry.get("mednext-xl-k7")
    with pytest.raises(ValueError, match="unknown model"):
        registry.build_model("unet", 1, 2, (32, 32, 32))


def test_duplicate_architectures_are_the_intended_ones():
    unique = _unique_architectures()
    duplicates = {n: next(u for u in unique if _architecture(u) == _architecture(n))
                  for n in NAMES if n not in unique}
    # the native ResEnc L is nnunet-resenc's network class; its planner picks patch and spacing
    assert duplicates == {"mednext-b-k5-scratch": "mednext-b-k5", "mednext-b-k3-2x": "mednext-b-k3",
                          "nnunet-resenc-l-native": "nnunet-resenc"}


def _outputs(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in _unique_architectures()])
def test_one_training_step_at_the_test_patch(name):
    entry = registry.get(name)
    recipe = entry.recipe()
    patch = entry.test_patch
    torch.manual_seed(0)
    model = registry.build_model(name, 1, 3, patch)       # DS and checkpointing as the recipe trains
    model.train()
    # stochastic layers off (dropout, stochastic depth): a dropped branch legitimately gets an
    # all-zero gradient, which would hide a branch that is never connected; norms stay in training
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) or "droppath" in type(m).__name__.lower():
            m.eval()
        # a norm whose scale starts at zero (nnU-Net ResEnc: each residual block starts as its
        # skip path) legitimately blocks the first step's gradient to the conv before it; scale 1
        # shows whether that conv is connected
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.affine and not m.weight.any():
            torch.nn.init.ones_(m.weight)
    out = model(torch.randn(1, 1, *patch))
    scales = registry.deep_supervision_scales(name, patch)
    outputs = _outputs(out)
    assert isinstance(out, list) == recipe.deep_supervision
    assert len(outputs) == len(scales)
    for o, scale in zip(outputs, scales):
        assert tuple(o.shape) == (1, 3) + tuple(round(p * s) for p, s in zip(patch, scale))
    # a random projection of every output, so no output's gradient is trivially symmetric
    loss = sum((o * torch.randn_like(o)).sum() for o in outputs)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"{name}: parameters without a gradient: {no_grad[:10]}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad[:10]}"
    zero = sum(p.numel() for _, p in trainable if not p.grad.any())
    assert zero < 0.01 * sum(p.numel() for _, p in trainable), f"{name}: {zero} parameters with all-zero gradients"


@pytest.mark.parametrize("name", NAMES)
def test_reference_parameter_count(name):
    entry = registry.get(name)
    ref = entry.reference_params
    assert (ref["in_channels"], ref["num_classes"]) == (1, 14)
    with empty_init():
        model = registry.build_model(name, 1, 14, ref["patch_size"], deep_supervision=False,
                                     activation_checkpointing=False)
    assert count_parameters(model) == ref["params"]
    if "params_deep_supervision" in ref:
        with empty_init():
            model = registry.build_model(name, 1, 14, ref["patch_size"], deep_supervision=True,
                                         activation_checkpointing=False)
        assert count_parameters(model) == ref["params_deep_supervision"]


@pytest.mark.parametrize("name", NAMES)
def test_registry_agrees_with_the_building_module(name):
    """Constraints and reference counts are data in the registry and in each module: they agree."""
    entry = registry.get(name)
    if entry.family == "mednext":
        mednext = importlib.import_module("mednext")
        assert entry.constraints.divisor == mednext.DIVISOR and not entry.constraints.fixed_size
        if set(entry.kwargs) == {"size", "kernel_size", "dim"}:      # a tabulated configuration
            size, k = entry.kwargs["size"], entry.kwargs["kernel_size"]
            assert entry.reference_params["params"] == mednext.reference_parameter_count(size, k, 14, False)
            assert entry.reference_params["params_deep_supervision"] == \
                mednext.reference_parameter_count(size, k, 14, True)
        return
    module = importlib.import_module(entry.builder.rpartition(".")[0])
    prefix = {"unetr": "UNETR_", "swin-unetr": "SWIN_UNETR_"}.get(name, "")
    ref = getattr(module, f"{prefix}REFERENCE_PARAMS")
    assert ref["params"] == entry.reference_params["params"]
    assert tuple(ref["patch_size"]) == tuple(entry.reference_params["patch_size"])
    assert getattr(module, f"{prefix}FIXED_SIZE") == entry.constraints.fixed_size
    divisor = getattr(module, f"{prefix}DIVISOR")
    if entry.constraints.divisor is None:        # nnU-Net: planned per patch, 32 at 128^3
        assert module.plan_topology(entry.reference_params["patch_size"]).divisor == (divisor,) * 3
    else:
        assert divisor == entry.constraints.divisor


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_size_raises_value_error_naming_the_size(name):
    entry = registry.get(name)
    patch = entry.test_patch
    with empty_init():
        model = registry.build_model(name, 1, 3, patch, activation_checkpointing=False)
    model.eval()
    divisor = entry.constraints.divisor or 8     # nnU-Net at 32^3: three halvings
    off = (patch[0] + divisor // 2,) + tuple(patch[1:])
    with pytest.raises(ValueError, match=str(divisor) if not entry.constraints.fixed_size
                       else ", ".join(map(str, patch))):
        model(torch.empty(1, 1, *off, device="meta"))
    if entry.constraints.fixed_size:
        bigger = (patch[0] + divisor,) + tuple(patch[1:])
        with pytest.raises(ValueError, match=", ".join(map(str, patch))):
            model(torch.empty(1, 1, *bigger, device="meta"))


@pytest.mark.parametrize("name", ["mednext-s-k3", "unetr", "transunet", "nnunet", "nnunet-resenc"])
def test_build_model_validates_its_arguments(name):
    entry = registry.get(name)
    patch = entry.test_patch
    divisor = entry.constraints.divisor or 8
    bad_patch = (patch[0] + divisor // 2,) + patch[1:]
    needed = (patch[0] + divisor,) + patch[1:]
    with pytest.raises(ValueError, match=r"\(" + ", ".join(map(str, needed)) + r"\)"):
        registry.build_model(name, 1, 2, bad_patch)
    with pytest.raises(ValueError, match="patch_size"):
        registry.build_model(name, 1, 2, patch + (32,))
    with pytest.raises(ValueError, match="in_channels"):
        registry.build_model(name, 0, 2, patch)
    with pytest.raises(ValueError, match="num_classes"):
        registry.build_model(name, 1, 1, patch)


@pytest.mark.parametrize("name,patch,needed", [
    ("swin-unetr", (32, 32, 32), (64, 32, 32)),        # 1/32: 1 voxel
    ("mednext-s-k3", (16, 16, 16), (32, 16, 16)),      # 1/16: 1 voxel
    ("3d-uxnet", (16, 16, 16), (32, 16, 16)),
])
def test_patch_leaving_a_one_voxel_bottleneck_is_refused(name, patch, needed):
    """Per-sample norms cannot train on one voxel (torch raises deep inside forward)."""
    with pytest.raises(ValueError, match=r"single voxel.*\(" + ", ".join(map(str, needed)) + r"\)"):
        registry.build_model(name, 1, 2, patch)
    with empty_init():
        registry.build_model(name, 1, 2, needed)


def test_deep_supervision_and_checkpointing_requests_are_checked():
    with pytest.raises(ValueError, match="deep-supervision"):
        registry.build_model("unetr", 1, 2, (32, 32, 32), deep_supervision=True)
    with pytest.raises(ValueError, match="checkpointing"):
        registry.build_model("swin-unetr", 1, 2, (64, 32, 32), activation_checkpointing=True)
    with empty_init():
        m = registry.build_model("mednext-m-k3", 1, 2, (32, 32, 32))
    assert m.checkpointing and m.do_ds            # M trains with checkpointing and DS
    with empty_init():
        m = registry.build_model("mednext-s-k3", 1, 2, (32, 32, 32), deep_supervision=False)
    assert not m.checkpointing and not m.do_ds


def test_nnunet_receives_the_spacing():
    with empty_init():
        iso = registry.build_model("nnunet", 1, 2, (32, 64, 64))
        aniso = registry.build_model("nnunet", 1, 2, (32, 64, 64), spacing=(3.0, 0.8, 0.8))
    assert iso.topology.strides != aniso.topology.strides
    assert aniso.topology.kernel_sizes[0] == (1, 3, 3)
    assert registry.deep_supervision_scales("nnunet", (32, 64, 64), spacing=(3.0, 0.8, 0.8))[1] == (1.0, 0.5, 0.5)


def test_deep_supervision_scales():
    mednext = registry.deep_supervision_scales("mednext-b-k3", (128, 128, 128))
    assert mednext == [(1 / 2 ** i,) * 3 for i in range(5)]
    assert registry.deep_supervision_scales("nnunet", (128, 128, 128)) == mednext
    assert registry.deep_supervision_scales("nnunet", (32, 32, 32)) == mednext[:3]
    assert registry.deep_supervision_scales("nnunet-resenc", (128, 128, 128)) == mednext
    assert registry.deep_supervision_scales("nnunet-resenc", (32, 64, 64))[-1] == (1 / 8, 1 / 8, 1 / 8)
    assert registry.deep_supervision_scales("transunet", (512, 512)) == [(1.0, 1.0)]
    assert registry.deep_supervision_scales("mednext-s-k3", (64,) * 3, deep_supervision=False) == [(1.0,) * 3]


@pytest.mark.parametrize("name", ["mednext-s-k3", "nnunet", "unetr", "nnunet-resenc"])
def test_set_deep_supervision_switches_outputs(name):
    patch = registry.get(name).test_patch
    with empty_init():
        model = registry.build_model(name, 1, 2, patch)
    x = torch.empty(1, 1, *patch, device="meta")
    with torch.no_grad():
        registry.set_deep_supervision(model, False)
        assert isinstance(model(x), torch.Tensor)
        registry.set_deep_supervision(model, True)
        ds = registry.get(name).supports_deep_supervision
        assert isinstance(model(x), list) == ds


# ---- recipes: the paper, Sect. 3.1 ---------------------------------------------------------
SGD = {"nnunet", "nnunet-resenc", "nnunet-resenc-l-native"}  # nnU-Net's own (ResEnc: its default trainer)
PAPER_LR = {"nnunet": 1e-2, "nnunet-resenc": 1e-2, "nnunet-resenc-l-native": 1e-2, "unetr": 1e-4, "transbts": 1e-4, "transunet": 1e-4,
            "swin-unetr": 2.5e-3, "nnformer": 2.5e-3, "3d-uxnet": 2.5e-3}
OFFICIAL_CODE = {"nnunet": ("sgd", 1e-2), "nnunet-resenc": ("sgd", 1e-2),
                 "nnunet-resenc-l-native": ("sgd", 1e-2), "unetr": ("adamw", 1e-4), "swin-unetr": ("adamw", 1e-4),
                 "transunet": ("adamw", 1e-4), "transbts": ("sgd", 1e-4),
                 "nnformer": ("adamw", 5e-5), "3d-uxnet": ("adamw", 5e-4)}


@pytest.mark.parametrize("name", NAMES)
def test_recipes_match_the_paper(name):
    entry = registry.get(name)
    mednext = entry.family == "mednext"
    for dataset in (None, "btcv", "amos22", "kits19", "brats21", "phantom-kits19"):
        r = entry.recipe("paper", dataset)
        kits_k5 = mednext and entry.kwargs["kernel_size"] == 5 and dataset in ("kits19", "phantom-kits19")
        assert r.lr == (1e-4 if kits_k5 else 1e-3) if mednext else r.lr == PAPER_LR[name]
        assert r.optimizer == ("sgd" if name in SGD else "adamw")
        assert (r.weight_decay, r.poly_exponent, r.grad_clip) == (3e-5, 0.9, 12.0)
        if r.optimizer == "sgd":
            assert (r.momentum, r.nesterov, r.eps) == (0.99, True, None)
        else:
            assert (r.momentum, r.nesterov, r.eps) == (None, False, 1e-4)
        assert r.deep_supervision == (mednext or name in SGD)
        assert r.activation_checkpointing == (mednext and entry.kwargs["size"] in ("M", "L"))
    official = entry.recipe("official-code", "kits19")
    if mednext:
        assert (official.optimizer, official.lr) == ("adamw", 1e-3)
    else:
        assert (official.optimizer, official.lr) == OFFICIAL_CODE[name]
    assert entry.recipe() == entry.recipe("paper", None)
    with pytest.raises(ValueError, match="known: paper, official-code"):
        entry.recipe("fast")


def test_initialisation_of_the_kernel5_and_ablation_entries():
    for size in "sbml":
        assert registry.get(f"mednext-{size}-k5").init == {"from": f"mednext-{size}-k3", "mode": "upkern"}
        assert registry.get(f"mednext-{size}-k3").init is None
    assert registry.get("mednext-b-k3-2x").init == {"from": "mednext-b-k3", "mode": "continue"}
    assert registry.get("mednext-b-k5-scratch").init is None
    assert registry.get("mednext-b-k3-std-resampling").kwargs["resampling"] == "standard"
    assert all(registry.get(n).init is None for n in NAMES if registry.get(n).family == "baseline")


@pytest.mark.parametrize("name", NAMES)
def test_entry_to_dict_is_json_with_provenance(name):
    d = json.loads(json.dumps(registry.get(name).to_dict()))
    assert d["name"] == name and d["family"] in ("mednext", "baseline") and d["dim"] in ("3d", "2d")
    for key in ("paper", "repository", "commit", "licence", "implementation", "changes"):
        assert d["origin"][key], f"{name}: origin.{key} empty"
    assert set(d["recipes"]) == {"paper", "official-code"}
    assert d["reference_params"]["source"]
    assert json.loads(json.dumps(registry.get(name).recipe().to_dict()))["lr"] > 0


def test_compute_summary_at_the_paper_patch():
    s = registry.compute_summary("nnunet")
    assert s["params"] == 31_205_254 and s["patch"] == [128, 128, 128]
    assert math.isclose(s["gmacs"], 478.0, rel_tol=0.005)
    t = registry.compute_summary("transunet")
    assert t["patch"] == [512, 512] and t["params"] == 105_913_710
    assert registry.compute_summary("unetr", 4, 3)["params"] != registry.compute_summary("unetr")["params"]


def _models_command(argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    rc = args.func(args)
    return rc, capsys.readouterr().out


def test_models_command_json(capsys):
    rc, out = _models_command(["models", "--json"], capsys)
    table = json.loads(out)
    assert rc == 0 and [r["name"] for r in table] == NAMES
    row = {r["name"]: r for r in table}
    assert row["nnunet"]["params"] == 31_205_254 and row["nnunet"]["optimizer"] == "sgd"
    assert row["transunet"]["dim"] == "2D" and row["transunet"]["patch"] == [512, 512]
    assert row["mednext-l-k5"]["init"] == "upkern from mednext-l-k3"
    rc, out = _models_command(["models", "mednext-b-k5", "--dataset", "kits19"], capsys)
    assert rc == 0 and "0.0001" in out
    with pytest.raises(UserError, match="unknown model 'no-such-model'"):
        _models_command(["models", "no-such-model"], capsys)


def test_models_subcommand_through_the_cli(capsys):
    from harness import cli
    for module in cli.COMMAND_MODULES:     # every command module imports (none is optional)
        importlib.import_module(module)
    assert cli.main(["models", "--json", "nnunet", "mednext-s-k3"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["nnunet", "mednext-s-k3"]


@pytest.mark.parametrize("argv,bad", [(["models", "no-such-model"], "unknown model 'no-such-model'"),
                                      (["models", "nnunet", "--num-classes", "1"], "num_classes")])
def test_models_user_errors_are_one_line_and_exit_2(capsys, argv, bad):
    from harness import cli
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mednext-bench: error: ") and bad in lines[0]
