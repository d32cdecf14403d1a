"""The child processes of :mod:`harness.bench.paper_shapes`, one phase of one entry each.

``train`` (iterations of the BenchTrainer), ``predict`` (the case, in full or on a sample of its
windows) and ``case`` (preprocessing and export of the case, once for all entries); what they
measure and the formulas are in the docstring of :mod:`harness.bench.paper_shapes`. Each
announces its phases and figures through :mod:`harness.bench.watchdog`, so that a child stopped
for memory or time still leaves what it measured. nnU-Net is reached only through
``harness.nnunet`` (the trainer, the predictor, ``predict_cases``); the timing wrappers replace
methods on one predictor object, never in nnU-Net's code.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from harness.bench import watchdog


def run(p: dict) -> int:
    """Run the phase ``p["phase"]``; a device out of memory is reported as a status, not raised."""
    import torch

    from harness.nnunet.env import configure

    configure(p["root"])
    if p.get("threads"):
        torch.set_num_threads(int(p["threads"]))
    try:
        {"train": _train, "predict": _predict, "case": _case}[p["phase"]](p)
    except torch.cuda.OutOfMemoryError:
        watchdog.fail(f"does not fit: CUDA out of memory at {watchdog.current_phase()}")
        return 0
    except RuntimeError as e:
        if "can't allocate memory" not in str(e) and "not enough memory" not in str(e):
            raise
        watchdog.fail(f"does not fit: allocation failed at {watchdog.current_phase()}")
        return 0
    watchdog.finish()
    return 0


def _sync(cuda: bool) -> None:
    if cuda:
        import torch
        torch.cuda.synchronize()


def _reset_peaks(cuda: bool) -> None:
    if cuda:
        import torch
        torch.cuda.reset_peak_memory_stats()


def _memory(cuda: bool) -> dict:
    """Peak RSS of this process; on CUDA also the allocator's peaks since :func:`_reset_peaks`."""
    from harness.compute import peak_rss_bytes

    out = {"peak_rss": peak_rss_bytes()}
    if cuda:
        import torch
        out.update(cuda_allocated=torch.cuda.max_memory_allocated(),
                   cuda_reserved=torch.cuda.max_memory_reserved())
    return out


def _elapsed(p: dict) -> float:
    return time.time() - p["t0"]


# ---- training ----------------------------------------------------------------------------

def _train(p: dict) -> None:
    import torch

    from harness.nnunet.training import make_trainer

    watchdog.phase("set-up (network, optimizer, loss, data loaders)")
    run_dir = Path(p["scratch"])
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(p["spec"], run_dir)
    trainer.on_train_start()                 # initialise, data loaders, deep supervision on
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()           # train mode, learning rate of epoch 0
    cuda = trainer.device.type == "cuda"
    loader = trainer.dataloader_train
    watchdog.report(threads=torch.get_num_threads(), torch=torch.__version__,
                    loader_in_process=type(loader).__name__ == "SingleThreadedAugmenter")
    _reset_peaks(cuda)
    steps, batches = [], []
    try:
        for i in range(1, int(p["iterations"]) + 1):
            watchdog.phase(f"iteration {i} (loading the batch)")
            t0 = time.perf_counter()
            batch = next(loader)
            t1 = time.perf_counter()
            watchdog.phase(f"iteration {i} (forward, loss, backward, optimizer step)")
            trainer.train_step(batch)
            _sync(cuda)
            t2 = time.perf_counter()
            steps.append(t2 - t1)
            batches.append(t1 - t0)
            watchdog.report(step_times=steps, batch_times=batches, **_memory(cuda))
            if _elapsed(p) + (t2 - t0) > float(p["train_budget"]):
                break                        # another iteration would overrun the budget
    finally:
        for dl in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(dl, "_finish"):       # background augmenter workers (CUDA machines)
                dl._finish()


# ---- prediction --------------------------------------------------------------------------

def _predictor(p: dict):
    """The entry's predictor (``build_predictor``) with the network's own weights as built."""
    from harness.nnunet.inference import build_predictor
    from harness.nnunet.training import load_plans

    watchdog.phase("set-up (predictor, network)")
    plans, cfg, dataset_json = load_plans(p["spec"])
    predictor = build_predictor(p["spec"], plans, cfg, dataset_json, [{}])
    predictor.list_of_parameters = [predictor.network.state_dict()]
    return predictor


def _windows(predictor) -> dict:
    """Count the windows the predictor lays over a volume; with ``keep`` set, give it only that
    many, spread evenly over the volume (the window loop then runs on them alone)."""
    original = predictor._internal_get_sliding_window_slicers
    counts: dict = {"total": None, "keep": None}

    def slicers(image_size):
        every = original(image_size)
        counts["total"] = len(every)
        keep = counts["keep"]
        if keep is None:
            return every
        return every[::max(1, len(every) // keep)][:keep] if keep else []

    predictor._internal_get_sliding_window_slicers = slicers
    return counts


def _time_passes(predictor, cuda: bool) -> dict:
    """Time every call of the predictor's network on a window (all its mirror passes)."""
    import torch

    original = predictor._internal_maybe_mirror_and_predict
    record: dict = {"seconds": [], "threads": None}

    def timed(x):
        _sync(cuda)
        t0 = time.perf_counter()
        out = original(x)
        _sync(cuda)
        record["seconds"].append(time.perf_counter() - t0)
        record["threads"] = torch.get_num_threads()
        return out

    predictor._internal_maybe_mirror_and_predict = timed
    return record


def _resampled_xyz(predictor, shape) -> str:
    back = predictor.plans_manager.transpose_backward
    return "x".join(str(int(shape[i])) for i in back[::-1])


def _timed_predict_cases(predictor, p: dict, cuda: bool, replacement=None) -> dict:
    """``predict_cases`` on the case, timed in three parts: preprocessing, the logits (the
    predictor's window loop, or ``replacement``), export."""
    from harness.nnunet.inference import predict_cases

    original = predictor.predict_logits_from_preprocessed_data
    stamps = {}

    def logits(data):
        stamps["called"] = time.perf_counter()
        watchdog.report(resampled_size_xyz=_resampled_xyz(predictor, data.shape[1:]),
                        preprocess_seconds=stamps["called"] - stamps["start"])
        watchdog.phase("sliding-window loop")
        out = (replacement or original)(data)
        _sync(cuda)
        stamps["returned"] = time.perf_counter()
        watchdog.phase("export (logits resampled back, argmax, written)")
        return out

    predictor.predict_logits_from_preprocessed_data = logits
    watchdog.phase("preprocessing (crop, normalisation, resampling to 1 mm)")
    stamps["start"] = time.perf_counter()
    predict_cases(predictor, {"case": [p["case"]]}, Path(p["scratch"]))
    end = time.perf_counter()
    return {"preprocess_seconds": stamps["called"] - stamps["start"],
            "logits_seconds": stamps["returned"] - stamps["called"],
            "export_seconds": end - stamps["returned"], "prediction_seconds": end - stamps["start"]}


def _predict(p: dict) -> None:
    import numpy as np
    import torch

    predictor = _predictor(p)
    cuda = predictor.device.type == "cuda"
    counts = _windows(predictor)
    passes = _time_passes(predictor, cuda)
    mirror = 2 ** len(predictor.allowed_mirroring_axes) if predictor.use_mirroring else 1
    _reset_peaks(cuda)
    if p["mode"] == "full":
        t = _timed_predict_cases(predictor, p, cuda)
        n = counts["total"]
        watchdog.report(**t, windows_total=n, windows_measured=n, mirror_passes=mirror,
                        window_seconds=t["logits_seconds"] / n, predict_threads=passes["threads"],
                        **_memory(cuda))
        return
    data = torch.from_numpy(np.load(p["npy"]))
    predictor.use_mirroring = False          # one pass per window; the mirrors are projected

    def loop(keep: int) -> float:
        counts["keep"] = keep
        t0 = time.perf_counter()
        out = predictor.predict_logits_from_preprocessed_data(data)
        _sync(cuda)
        seconds = time.perf_counter() - t0
        del out
        return seconds

    watchdog.phase("window loop on no window (fixed costs)")
    fixed = loop(0)
    watchdog.phase(f"window loop on {p['windows']} of {counts['total']} windows")
    seconds = loop(int(p["windows"]))
    n = len(passes["seconds"])
    pass_seconds = statistics.median(passes["seconds"])
    watchdog.report(windows_total=counts["total"], windows_measured=n, mirror_passes=mirror,
                    fixed_seconds=fixed, pass_seconds=pass_seconds,
                    window_seconds=max(pass_seconds, (seconds - fixed) / n),
                    predict_threads=passes["threads"], **_memory(cuda))


def _case(p: dict) -> None:
    """Preprocessing and export of the case through ``predict_cases``, the window loop replaced
    by zero logits; the preprocessed volume is kept for the entries' window loops."""
    import numpy as np
    import torch

    from harness.io import atomic_path

    predictor = _predictor(p)
    heads = predictor.label_manager.num_segmentation_heads

    def zero_logits(data):
        with atomic_path(p["npy"]) as tmp:
            np.save(tmp, data.numpy())
        return torch.zeros((heads, *data.shape[1:]), dtype=torch.half)

    t = _timed_predict_cases(predictor, p, False, zero_logits)
    watchdog.report(export_seconds=t["export_seconds"])
