"""Benchmark the training loop's throughput against a bare step on resident random tensors.

    .venv/bin/python bench/bench_train.py [--preset tiny|demo] [--workdir DIR]
        [--device cpu|cuda] [--encoder efficientnet-b2] [--crop 224] [--batch-size 8]
        [--steps 4] [--rounds 3] [--workers N] [--threads N]

Both sides run in this process with the same model, optimiser and ``TrainStep`` (forward,
region loss, backward, clip, Adam step):
- loop: the real data path. A DataLoader over a chip store built from the sample world
  (``tests/world_chips.py``: ingest, events, chips + aux), with SDA, random crops,
  flips, rotations, jitter and normalisation, feeding ``TrainStep``. Its chip cache
  (``TrainSpec.cache_mb``) holds the small store after the warm-up, as it does from a
  training run's second epoch on;
- bare: the same ``TrainStep`` on one batch of random tensors of the same shape, already
  in memory (on the device), so only forward + backward + step is timed.
The two alternate in rounds so that load from other processes hits both alike. Prints one
JSON document with images/s of each, their ratio (goal >= 0.9) and peak resident memory.
``--device cuda`` reports crops of 224 and 320 (unless --crop is given), bf16 autocast
and channels_last, as training runs on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peak_memory import PeakMemory  # noqa: E402
from forestnet_model.data import ChipDataset  # noqa: E402
from forestnet_model.model import build_model  # noqa: E402
from forestnet_model.specs import ModelSpec, TrainSpec  # noqa: E402
from forestnet_model.train import TrainStep, make_loaders, pick_device  # noqa: E402
from pipeline.core.runtime import tune_malloc_for_tensors  # noqa: E402
from pipeline.imagery.views import ChipSpec  # noqa: E402
from pipeline.sample_world import WorldSpec, generate_world  # noqa: E402
from tests.world_chips import world_chip_store  # noqa: E402

GOAL = 0.9


def prepare(folder: Path, preset: str) -> Path:
    """Sample world -> scene store -> chips.zarr (not timed; reused when present)."""
    world = generate_world(folder / f"world-{preset}",
                           WorldSpec.tiny() if preset == "tiny" else WorldSpec.demo()).parent
    return world_chip_store(world, folder / f"work-{preset}", spec=ChipSpec(max_single_views=2))


def random_batch(shape: tuple[int, ...], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch like the loader's, resident on the device: the bare loop copies nothing."""
    b, _, h, w = shape
    mask = torch.zeros(b, h, w, dtype=torch.bool)
    mask[:, h // 4: h // 2, w // 4: 3 * w // 4] = True
    return {"image": torch.randn(shape).to(device), "mask": mask.to(device),
            "label": torch.randint(0, 4, (b,)).to(device), "scalars": torch.zeros(b, 0).to(device)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(chips: Path, model_spec: ModelSpec, spec: TrainSpec, device: torch.device,
            steps: int, rounds: int) -> dict:
    """Images/s of the loop and of the bare step, ``rounds * steps`` steps each.

    In-process loading alternates short rounds of each side, so that load from other
    processes hits both alike. With worker processes the loop runs in one stretch after
    draining the prefetched batches: workers refill their queue while the bare side runs,
    which would flatter the loop.
    """
    loaders = make_loaders(chips, model_spec, spec, device)
    model = build_model(model_spec).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    step = TrainStep(model, spec, device, class_weights=None)
    batches = iter(loaders.train)  # one long epoch (samples_per_epoch covers every step)
    first = next(batches)
    bare = random_batch(tuple(first["image"].shape), device)
    for _ in range(2):  # warm-up: allocator, cuDNN autotuning
        step(bare)
    for _ in range(2 + prefetched(spec)):  # and the batches the workers read ahead
        step(next(batches))
    _sync(device)
    if spec.num_workers:
        steps, rounds = steps * rounds, 1
    loop_s = bare_s = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step(next(batches))
        _sync(device)
        loop_s += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            step(bare)
        _sync(device)
        bare_s += time.perf_counter() - start
    n = rounds * steps * spec.batch_size
    return {"crop": spec.crop, "batch_size": spec.batch_size,
            "loop_images_per_s": round(n / loop_s, 2), "bare_images_per_s": round(n / bare_s, 2),
            "ratio_loop_over_bare": round(bare_s / loop_s, 3)}


def prefetched(spec: TrainSpec) -> int:
    """Batches a DataLoader's workers hold ready (prefetch_factor 2 each)."""
    return 2 * spec.num_workers


def item_ms(chips: Path, spec: TrainSpec, model_spec: ModelSpec, stats: dict) -> dict:
    """Mean time to build one training sample in this process (read, augment, normalise):
    from Zarr every time, and from the in-memory chip cache (after the first epoch)."""
    out = {}
    for name, cache_mb in (("zarr", 0), ("cached", spec.cache_mb)):
        ds = ChipDataset(str(chips), "train", model_spec.in_bands, model_spec.aux_bands,
                         stats, train=True, crop=spec.crop, cache_mb=cache_mb)
        for k in range(len(ds)):  # warm: fill the cache, open the store
            ds[(k, k)]
        start = time.perf_counter()
        for k in range(40):
            ds[(k % len(ds), k)]
        out[name] = round((time.perf_counter() - start) / 40 * 1000, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "demo"], default="tiny")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--encoder", default="efficientnet-b2")
    parser.add_argument("--crop", type=int, default=None,
                        help="crop size (default 224 on cpu; 224 and 320 on cuda)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 8 on cpu, 64 on cuda")
    parser.add_argument("--steps", type=int, default=4, help="steps per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers (default 0 on cpu, 8 on cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="forestnet-bench-train-"))
    folder.mkdir(parents=True, exist_ok=True)
    tune_malloc_for_tensors()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune the convolutions once
    chips = prepare(folder, args.preset)
    crops = [args.crop] if args.crop else ([224, 320] if cuda else [224])
    batch = args.batch_size or (64 if cuda else 8)
    # On a CPU the data path (~10 ms a sample) is ~1-2 % of a 224 px step, and a worker
    # process would compete with torch's threads for the same cores: load in-process.
    workers = args.workers if args.workers is not None else (8 if cuda else 0)
    model_spec = ModelSpec(encoder=args.encoder)
    results = []
    with PeakMemory() as mem:
        for crop in crops:
            spec = TrainSpec(crop=crop, batch_size=batch, num_workers=workers, device=device.type,
                             seed=0, progress="off")
            draws = (args.rounds * args.steps + 4 + prefetched(spec)) * batch
            spec = spec.model_copy(update={"samples_per_epoch": draws})
            result = measure(chips, model_spec, spec, device, args.steps, args.rounds)
            stats = make_loaders(chips, model_spec, spec, device).stats
            result["data_ms_per_sample"] = item_ms(chips, spec, model_spec, stats)
            results.append(result)
    worst = min(r["ratio_loop_over_bare"] for r in results)
    report = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "encoder": args.encoder,
        "amp": "bf16 autocast + channels_last" if cuda else "fp32",
        "cpus": psutil.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "dataloader_workers": workers,
        "steps_per_side": args.rounds * args.steps,
        "results": results,
        "goal": GOAL,
        "meets_goal": worst >= GOAL,
        "peak_rss_mb": round(mem.peak / 2**20),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
