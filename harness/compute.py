"""Compute accounting: parameters, multiply-accumulates, and the cost of one training step.

How each figure is counted (the numbers in ``mednext-bench models``, ``results/bench/models.csv``
and the report's accuracy-vs-compute figure all come from here):

* ``count_parameters``: every distinct parameter tensor of the module (shared tensors once),
  trainable or not, as ``sum(p.numel())``. Buffers (norm statistics, index tables) are not counted.
* ``gmacs``: torch's ``FlopCounterMode`` over one forward pass, divided by 2 (it counts a
  multiply-accumulate as 2 FLOPs) and by 1e9. It counts convolutions (including transposed and
  grouped/depthwise ones) and matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, fused
  attention); it does NOT count bias additions, normalisation, activations, pooling, interpolation
  or element-wise ops. A transposed convolution is counted at the INPUT resolution
  (input voxels x kernel volume x C_in x C_out/groups), a convolution at the output resolution.
  Analytic counts that price transposed convolutions per output voxel differ slightly: the MedNeXt
  README's "130 GFlops" for MedNeXt-S k3 at 128^3 is 128.1 GMACs here (specs/mednext.md b.5).
  The model should live on the meta device (``empty_init``): shapes propagate, nothing is
  allocated or computed, so a 128^3 count takes well under a second on a CPU.
* ``measure_step``: seconds and peak memory of one training step (forward, a scalar loss over every
  output, backward) in the current process; the bench runs each measurement in a fresh subprocess
  (``harness.bench.models``) so that one measurement's memory does not hide another's.
  Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the step
  (tensors only, after ``reset_peak_memory_stats``). On CPU torch has no allocation counter and
  ``tracemalloc`` does not see torch's allocator, so the process's peak resident set size is used:
  Linux lets a process reset its own high-water mark (``/proc/self/clear_refs`` <- "5"), and the
  step's peak is ``VmHWM`` after the step minus ``VmRSS`` before it (model and input already
  resident). Memory freed earlier and kept by the C allocator could be reused unseen, so glibc's
  ``malloc_trim(0)`` returns it to the system first; the bench still uses a fresh process per
  measurement. Where ``clear_refs`` is unavailable the figure falls back to
  ``resource.getrusage`` ``ru_maxrss`` (whole-process peak) and ``memory_method`` says so.
"""
from __future__ import annotations

import contextlib
import math
import re
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (each shared tensor once); see the module docstring."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextlib.contextmanager
def empty_init() -> Iterator[None]:
    """Build modules whose parameters and buffers live on the meta device (no memory, no init).

    ``with torch.device("meta")`` would do the same but also sends every other tensor a
    constructor makes to meta, which breaks constructors that read numbers out of tensors
    (e.g. MONAI SwinUNETR's ``torch.linspace(...).item()`` drop-path schedule). Here only
    tensors registered as parameters or buffers are moved, at registration, so any
    initialisation that follows runs on meta and costs nothing.

    Example::

        with empty_init():
            model = build(1, 14, (128, 128, 128))
        gmacs(model, (1, 1, 128, 128, 128))
    """
    original_parameter = nn.Module.register_parameter
    original_buffer = nn.Module.register_buffer

    def register_parameter(module, name, param):
        original_parameter(module, name, param)
        if param is not None and param.device.type != "meta":
            p = module._parameters[name]
            module._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    def register_buffer(module, name, tensor, persistent=True):
        if tensor is not None and tensor.device.type != "meta":
            tensor = tensor.to("meta")
        original_buffer(module, name, tensor, persistent)

    nn.Module.register_parameter = register_parameter
    nn.Module.register_buffer = register_buffer
    try:
        yield
    finally:
        nn.Module.register_parameter = original_parameter
        nn.Module.register_buffer = original_buffer


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def gmacs(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Giga multiply-accumulates of one forward pass on an input of ``input_shape`` (N, C, ...).

    Counted by ``FlopCounterMode`` / 2 (convolutions and matrix products only; see the module
    docstring). A model on the meta device costs nothing; a model on a real device really runs.
    """
    shape = tuple(int(n) for n in input_shape)
    if len(shape) < 3 or any(n < 1 for n in shape):
        raise ValueError(f"input_shape must be (N, C, *spatial) with positive sizes, got {input_shape!r}")
    device = _device_of(model)
    x = torch.empty(shape, device=device) if device.type == "meta" else torch.zeros(shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


@dataclass(frozen=True)
class StepMeasurement:
    """One training step: ``seconds`` (median of the timed steps), ``first_seconds`` (the first,
    which includes one-off kernel set-up), ``peak_bytes`` of memory the step needed above what was
    resident before it, ``process_peak_bytes`` (whole process; CPU only), how memory was read."""

    device: str
    input_shape: tuple[int, ...]
    seconds: float
    first_seconds: float
    steps: int
    peak_bytes: int
    process_peak_bytes: int | None
    memory_method: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def _proc_status_kib(field: str) -> int | None:
    try:
        text = open("/proc/self/status").read()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size so far (Linux ``VmHWM``), or None where unreadable."""
    kib = _proc_status_kib("VmHWM")
    return None if kib is None else kib * 1024


def _release_free_memory() -> None:
    """Give memory that the C allocator keeps after ``free`` back to the system (glibc only)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _scalar_loss(output) -> torch.Tensor:
    outputs = output if isinstance(output, (list, tuple)) else [output]
    return sum(o.float().mean() for o in outputs)


def measure_step(model: nn.Module, input_shape: Sequence[int], steps: int = 1,
                 loss_fn: Callable | None = None, amp: bool = False, seed: int = 0) -> StepMeasurement:
    """Time and peak memory of ``steps`` training steps (forward + backward) of ``model``.

    Args:
        model: on the device to measure (CPU or CUDA), in whatever configuration it trains
            (deep supervision, activation checkpointing).
        input_shape: (N, C, *spatial) of the random input.
        steps: number of steps; memory is read on the first, ``seconds`` is the median of the
            steps after the first (of the first alone when ``steps == 1``).
        loss_fn: maps the model output to a scalar; default: sum of the means of all outputs.
        amp: CUDA only: fp16 autocast, as the paper trains.

    Example: ``measure_step(build(1, 14, (64, 64, 64)), (1, 1, 64, 64, 64)).seconds``.
    """
    shape = tuple(int(n) for n in input_shape)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = _device_of(model)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"measure_step needs a model on cpu or cuda, not {device}")
    loss_fn = loss_fn or _scalar_loss
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(device)
    model.train()
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def one_step() -> float:
        sync()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp and cuda):
            loss = loss_fn(model(x))
        loss.backward()
        sync()
        return time.perf_counter() - t0

    model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        method, rss_before = "cuda.max_memory_allocated", None
    elif _reset_peak_rss() and _proc_status_kib("VmRSS") is not None:
        method, rss_before = "linux VmHWM after clear_refs - VmRSS before", _proc_status_kib("VmRSS")
    else:
        method, rss_before = "ru_maxrss (whole process)", None
    times = [one_step()]
    if cuda:
        peak, process_peak = torch.cuda.max_memory_allocated(device) - before, None
    elif rss_before is not None:
        process_peak = _proc_status_kib("VmHWM") * 1024
        peak = max(0, process_peak - rss_before * 1024)
    else:
        # ru_maxrss is KiB on Linux, bytes on macOS
        scale = 1 if _platform_is_macos() else 1024
        process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        peak = process_peak
    for _ in range(steps - 1):
        model.zero_grad(set_to_none=True)
        times.append(one_step())
    timed = times[1:] if len(times) > 1 else times
    return StepMeasurement(device=str(device), input_shape=shape, seconds=statistics.median(timed),
                           first_seconds=times[0], steps=steps, peak_bytes=int(peak),
                           process_peak_bytes=process_peak, memory_method=method)


def _platform_is_macos() -> bool:
    import sys
    return sys.platform == "darwin"


def human_count(n: int | float) -> str:
    """31205254 -> '31.21M' (for tables)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))
