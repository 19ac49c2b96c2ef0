"""The segmentation network's forward as mapping and evaluation run it: pixel logits.

On a CPU the network runs through ONNX Runtime when it is installed: the same fp32
maths with convolution and batch norm fused, in a blocked (NCHWc) memory layout, at
1.45-1.65x eager PyTorch's images/s at one thread, max |dp| ~2e-6
(``bench/bench_forward.py``: ahead of TorchScript freezing, torch.compile and OpenVINO).
The graph (dynamic batch, height and width) is exported once per bundle (~3.5 s for
EfficientNet-B2) and kept in a cache folder (:func:`cache_dir`) under the bundle's model
id, so that each worker only builds a session (~0.3 s). On CUDA the network stays in
PyTorch, with bf16 autocast and channels_last.

Every ONNX Runtime session is checked against eager PyTorch on one small input before it
is used; an export, a cached graph or a check that fails falls back to eager, with the
reason logged: a slower map, never a different one.
"""

from __future__ import annotations

import io
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from forestnet_model.model import check_input_size
from pipeline.core.atomic import atomic_output

log = logging.getLogger(__name__)

CPU_RUNTIMES: tuple[str, ...] = ("auto", "eager", "onnxruntime")
#: Part of each cached graph's name: bump it when the export changes, and older graphs
#: are left unused instead of loaded.
EXPORT_VERSION = 1
OPSET = 17
#: Largest |dp| (per-pixel softmax) a session may differ from eager by in its check.
PARITY_TOLERANCE = 1e-4
INPUT, OUTPUT = "x", "logits"


@dataclass(frozen=True)
class NetForward:
    """``forward(x)``: pixel logits ``(B, K, H, W)`` float32 of normalised windows
    ``(B, C, H, W)`` (sides multiples of 32), whichever runtime runs them."""

    run: Callable[[np.ndarray], np.ndarray]
    runtime: str  # "eager" or "onnxruntime"
    reason: str = ""  # why eager, where another runtime was asked for

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$FORESTNET_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/forestnet`` (``~/.cache/forestnet``); never the bundle's folder,
    which may be read-only."""
    root = os.environ.get("FORESTNET_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "forestnet"


def net_forward(net: nn.Module, key: str, device: torch.device, runtime: str = "auto",
                folder: Path | None = None) -> NetForward:
    """The forward of the segmentation network ``net`` (eval mode, on ``device``).

    ``runtime``: ``eager`` (PyTorch), ``onnxruntime`` (on a CPU; eager on CUDA) or
    ``auto`` (onnxruntime on a CPU where it is installed, else eager). ``key`` names
    the cached graph (the bundle's model id: its weights' hash); ``folder`` defaults
    to :func:`cache_dir`.
    """
    if runtime not in CPU_RUNTIMES:
        raise ValueError(f"unknown CPU runtime {runtime!r}; valid: {', '.join(CPU_RUNTIMES)}")
    if device.type != "cpu" or runtime == "eager":
        return eager_forward(net, device)
    missing = _missing_packages()
    if missing:
        if runtime == "onnxruntime":
            raise ImportError(f"CPU runtime 'onnxruntime' needs {' and '.join(missing)}: "
                              "install them, or set the runtime to 'eager' or 'auto'")
        reason = f"{' and '.join(missing)} not installed"
        log.info("%s: the network runs in eager PyTorch", reason)
        return eager_forward(net, device, reason)
    try:
        return onnx_forward(net, graph_path(folder or cache_dir(), key))
    except Exception as exc:  # any failure: the eager forward, with why
        reason = f"onnxruntime unusable ({type(exc).__name__}: {exc})"
        log.warning("%s: falling back to eager PyTorch", reason)
        return eager_forward(net, device, reason)


def eager_forward(net: nn.Module, device: torch.device, reason: str = "") -> NetForward:
    """PyTorch: channels_last, bf16 autocast on CUDA (fp32 on a CPU)."""
    net = net.to(memory_format=torch.channels_last)
    cuda = device.type == "cuda"

    def run(x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=cuda):
            return net(xt).float().cpu().numpy()
    return NetForward(run, "eager", reason)


def onnx_forward(net: nn.Module, path: Path) -> NetForward:
    """ONNX Runtime over the graph cached at ``path``; exported (and cached) first when it
    is absent, unreadable or disagrees with ``net``."""
    t0 = time.perf_counter()
    if path.exists():
        try:
            run = checked_run(net, path.read_bytes(), path)
            log.info("ONNX Runtime forward from %s (cached; ready in %.1f s)", path,
                     time.perf_counter() - t0)
            return NetForward(run, "onnxruntime")
        except Exception as exc:  # a damaged or stale cache entry is rebuilt
            log.warning("%s: cached ONNX graph unusable (%s: %s); exporting it again",
                        path, type(exc).__name__, str(exc)[:200])
    graph = export_onnx(net)
    run = checked_run(net, graph, path)
    store_graph(graph, path)
    log.info("ONNX Runtime forward from %s (exported; ready in %.1f s)", path,
             time.perf_counter() - t0)
    return NetForward(run, "onnxruntime")


def checked_run(net: nn.Module, graph: bytes, name: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A session over ``graph`` at torch's thread count, once it agrees with ``net``."""
    session = onnx_session(graph, torch.get_num_threads())

    def run(x: np.ndarray) -> np.ndarray:
        check_input_size(*x.shape[-2:])  # the traced padding holds at multiples of 32 only
        return session.run(None, {INPUT: np.ascontiguousarray(x, np.float32)})[0]
    check_parity(net, run, name)
    return run


def export_onnx(net: nn.Module, out: Path | None = None) -> bytes:
    """The network as an ONNX graph with dynamic batch, height and width (fp32, CPU).

    The TorchScript-based exporter traces one 64 px input; EfficientNet's "same"
    padding is the same at every multiple of 32, so the traced graph holds at every
    size mapping feeds it (:func:`check_parity` tries another). ``out``: also written
    there.
    """
    channels = next(p for p in net.parameters() if p.ndim == 4).shape[1]
    example = torch.zeros(1, channels, 64, 64)
    buffer = io.BytesIO()
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # tracer and deprecation noise, once per bundle
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (example,), buffer, dynamo=False,
                          input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
                          dynamic_axes={INPUT: dims, OUTPUT: dims})
    graph = buffer.getvalue()
    if out is not None:
        store_graph(graph, out)
    return graph


def store_graph(graph: bytes, path: Path) -> None:
    """Write atomically (temporary, then rename), so a worker never reads half a graph;
    an unwritable cache only costs the next worker an export."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            Path(tmp).write_bytes(graph)
    except OSError as exc:
        log.warning("%s: cannot cache the ONNX graph (%s); keeping it in memory", path, exc)


def onnx_session(graph: bytes, threads: int):  # -> onnxruntime.InferenceSession
    """A CPU session with every graph optimisation (fusions, NCHWc layout) on ``threads``
    threads that sleep when idle (the worker's other work needs the cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def check_parity(net: nn.Module, run: Callable[[np.ndarray], np.ndarray], name: Path) -> None:
    """Raise unless ``run`` gives eager's probabilities on a seeded input of a batch and
    shape other than the exported example's."""
    channels = next(p for p in net.parameters() if p.ndim == 4).shape[1]
    x = np.random.default_rng(0).normal(0, 1, (2, channels, 96, 64)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.softmax(net(torch.from_numpy(x)).float(), 1)
    got = torch.softmax(torch.from_numpy(run(x)), 1)
    if got.shape != expected.shape:
        raise ValueError(f"{name}: graph gives shape {tuple(got.shape)}, "
                         f"eager {tuple(expected.shape)}")
    diff = float((got - expected).abs().max())
    if diff > PARITY_TOLERANCE:
        raise ValueError(f"{name}: probabilities differ from eager by {diff:.2g}")


def graph_path(folder: Path, key: str) -> Path:
    """The cached graph of the network whose weights hash to ``key``."""
    return folder / "onnx" / f"{key}-v{EXPORT_VERSION}-opset{OPSET}.onnx"


def _missing_packages() -> list[str]:
    import importlib.util

    return [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
