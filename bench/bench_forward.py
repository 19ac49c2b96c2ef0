"""Benchmark the network's CPU forward under each runtime, at the shapes mapping sees.

    .venv/bin/python bench/bench_forward.py [--shapes 160x160,224x224,256x256,352x352]
        [--batches 1,4] [--threads 1,2] [--repeats 5] [--options eager,eager_cl,...]

The untrained EfficientNet-B2 FPN of ``bench_mapping.py`` (``ModelSpec(encoder=
"efficientnet-b2")``, ``torch.manual_seed(0)``, 6 bands) runs over seeded random windows
(event windows of 160-256 px and a 352 px tile; batches of 1 and 4) under:

- ``eager``: PyTorch, fp32, contiguous (NCHW);
- ``eager_cl``: PyTorch, channels_last: what ``infer_tiles`` ran before (the baseline);
- ``jit_freeze``: ``torch.jit.trace`` + ``torch.jit.freeze`` + ``optimize_for_inference``
  (oneDNN conv/BN/activation fusion), channels_last;
- ``compile``: ``torch.compile`` (inductor, CPU); its compile time (the first calls) is a
  fixed cost per shape and process: minutes each on 2 busy cores (``--options`` without
  it for a quick run);
- ``onnxruntime``: the graph of :mod:`forestnet_model.fast_forward` (ONNX, dynamic batch
  and size), CPUExecutionProvider with every graph optimisation, as mapping builds it;
- ``openvino`` (where installed: it is not a dependency): the same ONNX graph compiled by
  OpenVINO for the CPU at f32 precision (its default on CPUs with bf16 support is bf16).

All options time the same inputs in this process, interleaved (each repeat times every
option once, in turn) and best-of-N, so load from other processes hits all alike. Each
option's max |dp| is against ``eager`` on every timed input: the largest difference of the
per-pixel softmax probabilities, and of the softmax of the window-mean logits (what a
piece's driver comes from). Fixed costs (export, session creation, compile) are apart.

Prints one JSON document: the table, the speed of each option against ``eager_cl`` at 1
thread (geometric mean over shapes and batches), the chosen option (fastest within 1e-3)
and ``meets_goal`` (chosen >= 1.5x ``eager_cl`` at 1 thread, max |dp| <= 1e-3).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forestnet_model.model import build_model  # noqa: E402
from forestnet_model.specs import ModelSpec  # noqa: E402

GOAL_SPEEDUP = 1.5
GOAL_DP = 1e-3
BASELINE = "eager_cl"
OPTIONS = ("eager", "eager_cl", "jit_freeze", "compile", "onnxruntime", "openvino")
Forward = Callable[[np.ndarray], np.ndarray]


def bench_model() -> torch.nn.Module:
    """The untrained EfficientNet-B2 FPN of ``bench_mapping.py``."""
    torch.manual_seed(0)
    return build_model(ModelSpec(encoder="efficientnet-b2")).eval()


def eager(model: torch.nn.Module, channels_last: bool) -> Forward:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x).contiguous(memory_format=layout)).numpy()
    return run


def jit_freeze(model: torch.nn.Module, example: np.ndarray) -> Forward:
    model = model.to(memory_format=torch.channels_last)
    xt = torch.from_numpy(example).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, xt)))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return frozen(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
                          ).numpy()
    return run


def compiled(model: torch.nn.Module) -> Forward:
    model = model.to(memory_format=torch.channels_last)
    fn = torch.compile(model, backend="inductor")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return fn(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()
    return run


def onnx_graph(model: torch.nn.Module, folder: Path) -> Path:
    from forestnet_model.fast_forward import export_onnx

    export_onnx(model, folder / "model.onnx")
    return folder / "model.onnx"


def onnxruntime_forward(graph: Path, threads: int) -> Forward:
    from forestnet_model.fast_forward import onnx_session

    session = onnx_session(graph.read_bytes(), threads)
    return lambda x: session.run(None, {"x": x})[0]


def openvino_forward(graph: Path, threads: int) -> Forward:
    import openvino as ov

    core = ov.Core()
    compiled_model = core.compile_model(core.read_model(str(graph)), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
        # Two 1-thread Dask workers would each pin their thread, possibly to one core.
        "ENABLE_CPU_PINNING": False})
    request = compiled_model.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer({0: x})[0].copy()
    return run


def timed(fn: Callable, *args) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def prob_diff(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Max |dp| per pixel and of the window-mean logits' softmax."""
    pixel = float(np.abs(softmax(got, 1) - softmax(ref, 1)).max())
    region = float(np.abs(softmax(got.mean(axis=(2, 3)), 1)
                          - softmax(ref.mean(axis=(2, 3)), 1)).max())
    return pixel, region


def build_options(names: list[str], threads: int, example: np.ndarray, folder: Path,
                  fixed: dict, errors: dict) -> dict[str, Forward]:
    """Each option's forward at ``threads``; fixed costs and failures are recorded."""
    torch.set_num_threads(threads)
    built: dict[str, Forward] = {}
    for name in names:
        if name in errors:
            continue
        try:
            if name in ("eager", "eager_cl"):
                built[name] = eager(bench_model(), name == "eager_cl")
            elif name == "jit_freeze":
                built[name], s = timed(jit_freeze, bench_model(), example)
                fixed.setdefault(name, {})["trace_freeze_s"] = round(s, 2)
            elif name == "compile":
                built[name] = compiled(bench_model())  # compiles on each new shape
            elif name in ("onnxruntime", "openvino"):
                graph = folder / "model.onnx"
                if not graph.exists():
                    _, s = timed(onnx_graph, bench_model(), folder)
                    fixed.setdefault("onnx_export", {})["export_s"] = round(s, 2)
                make = onnxruntime_forward if name == "onnxruntime" else openvino_forward
                built[name], s = timed(make, graph, threads)
                fixed.setdefault(name, {})[f"session_s_threads{threads}"] = round(s, 2)
        except Exception as exc:  # a runtime that fails is an error entry, not a crash
            errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return built


def measure(names: list[str], shapes: list[tuple[int, int]], batches: list[int],
            threads_list: list[int], repeats: int, folder: Path) -> dict:
    rng = np.random.default_rng(0)
    fixed: dict = {}
    errors: dict = {}
    rows = []
    diffs: dict[str, list[float]] = {}
    for threads in threads_list:
        example = rng.normal(0, 1, (1, 6, *shapes[0])).astype(np.float32)
        forwards = build_options(names, threads, example, folder, fixed, errors)
        for h, w in shapes:
            for batch in batches:
                x = rng.normal(0, 1, (batch, 6, h, w)).astype(np.float32)
                ref = forwards["eager"](x)
                best: dict[str, float] = {}
                first: dict[str, float] = {}
                for name, fn in list(forwards.items()):  # first call: warm-up, correctness
                    try:
                        out, first[name] = timed(fn, x)
                    except Exception as exc:  # recorded, as above
                        errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                        del forwards[name]
                        continue
                    diffs.setdefault(name, []).extend(prob_diff(out, ref))
                    if name == "compile":  # inductor compiles on each new shape
                        spent = fixed.setdefault(name, {})
                        spent["first_calls_s"] = round(spent.get("first_calls_s", 0) + first[name],
                                                       1)
                for _ in range(repeats):
                    for name, fn in forwards.items():
                        _, s = timed(fn, x)
                        best[name] = min(best.get(name, math.inf), s)
                for name, s in best.items():
                    rows.append({"option": name, "threads": threads, "shape": f"{h}x{w}",
                                 "batch": batch, "ms_per_window": round(1000 * s / batch, 1),
                                 "images_per_s": round(batch / s, 2),
                                 "speedup_vs_eager_cl": round(best[BASELINE] / s, 2),
                                 # a new shape's first call: compile (inductor), kernel
                                 # selection (OpenVINO), allocation plans
                                 "first_call_ms": round(1000 * first[name], 1)})
                print(f"threads {threads} {h}x{w} b{batch}: " + ", ".join(
                    f"{n} {1000 * s / batch:.0f} ms" for n, s in best.items()), file=sys.stderr)
    return {"rows": rows, "fixed": fixed, "errors": errors,
            "max_dp": {n: max(v) for n, v in diffs.items()}}


def summary(result: dict, threads: int = 1) -> dict:
    """Geometric-mean speed-up of each option at ``threads``; the fastest within 1e-3."""
    speed = {}
    for name in {r["option"] for r in result["rows"]}:
        ratios = [r["speedup_vs_eager_cl"] for r in result["rows"]
                  if r["option"] == name and r["threads"] == threads]
        if ratios:
            speed[name] = round(float(np.exp(np.mean(np.log(ratios)))), 2)
    ok = {n: s for n, s in speed.items() if result["max_dp"].get(n, math.inf) <= GOAL_DP}
    chosen = max(ok, key=ok.get) if ok else BASELINE
    return {"speedup_1_thread": dict(sorted(speed.items(), key=lambda kv: -kv[1])),
            "chosen": chosen,
            "goal": f"chosen >= {GOAL_SPEEDUP}x {BASELINE} images/s at 1 thread "
                    f"(geometric mean over shapes and batches), max |dp| <= {GOAL_DP}",
            "meets_goal": bool(speed.get(chosen, 0) >= GOAL_SPEEDUP
                               and result["max_dp"].get(chosen, math.inf) <= GOAL_DP)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="160x160,224x224,256x256,352x352")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--options", default=",".join(OPTIONS))
    args = parser.parse_args()
    names = args.options.split(",")
    for required in ("eager", BASELINE):
        if required not in names:
            names.insert(0, required)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    with tempfile.TemporaryDirectory(prefix="forestnet-bench-forward-") as tmp:
        result = measure(names, shapes, [int(b) for b in args.batches.split(",")],
                         [int(t) for t in args.threads.split(",")], args.repeats, Path(tmp))
    print(json.dumps({"model": "efficientnet-b2 FPN, 6 bands, untrained (seed 0)",
                      "torch": torch.__version__, **result, **summary(result)}, indent=1))


if __name__ == "__main__":
    main()
