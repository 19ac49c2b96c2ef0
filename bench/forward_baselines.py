"""The model-half baselines of ``bench_mapping.py``: the network's forward alone (as the
map runs it: ``cached_forward`` and ``mapping.cpu_runtime``), here and on the Dask
workers, and ``infer_tiles`` with its forward timed apart."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.mapping_probes import instrumented


def model_batches(config, inputs: list, batch: int) -> list[torch.Tensor]:
    """The model's input tensors, normalised as ``infer_tiles`` does, in its batches."""
    from forestnet_model.bundle import read_bundle_meta
    from forestnet_model.model_inputs import normalise, pad_to_multiple, same_shape_batches

    meta = read_bundle_meta(config.bundle_path)
    images = [pad_to_multiple(normalise(s.image, meta.normalisation))
              for t in inputs for s in t.samples]
    # Tiles read with a wider halo (an event window past their edge) are larger: batches
    # of one shape, as infer_tiles runs them.
    return [torch.from_numpy(np.stack([images[j] for j in group]))
            for group in same_shape_batches([im.shape for im in images], batch)]


def forward_seconds(bundle: str, batches: list[torch.Tensor], threads: int,
                    runtime: str = "auto") -> tuple[float, float]:
    """Time the network's forward alone over the batches, as the map runs it (the same
    ``cached_forward`` and CPU runtime), after one warm-up batch; (start, stop) wall clock."""
    from forestnet_model.predict import cached_forward

    torch.set_num_threads(threads)
    forward, _ = cached_forward(bundle, "cpu", runtime)
    arrays = [x.numpy() for x in batches]
    forward(arrays[0][:1])
    start = time.time()
    for x in arrays:
        forward(x)
    return start, time.time()


def forward_on_workers(client, bundle: str, batches: list, threads: int,
                       runtime: str = "auto") -> float:
    """Bare forward on every worker at once, each over its share; seconds first start to
    last stop (the same processes and threads the flow's model tasks have)."""
    workers = sorted(client.scheduler_info()["workers"])
    futures = []
    for k, addr in enumerate(workers):
        if not batches[k::len(workers)]:  # fewer batches than workers: this one idles
            continue
        share = client.scatter(batches[k::len(workers)], workers=[addr])
        futures.append(client.submit(forward_seconds, bundle, share, threads, runtime,
                                     workers=[addr], pure=False))
    spans = client.gather(futures)
    return max(s[1] for s in spans) - min(s[0] for s in spans)


def infer_here(config, inputs: list, totals: dict, threads: int) -> float:
    """``infer_tiles`` in this process at the workers' threads, parts to a scratch folder;
    the forward itself is timed by hooks on the model."""
    from forestnet_model.predict import cached_forward
    from pipeline.mapping.inference import infer_tiles

    torch.set_num_threads(threads)
    bundle = str(Path(config.bundle_path).resolve())
    runtime = config.mapping.cpu_runtime
    forward, _ = cached_forward(bundle, "cpu", runtime)
    run = forward.run

    def timed(x):
        start = time.perf_counter()
        try:
            return run(x)
        finally:
            totals["infer.forward"] += time.perf_counter() - start

    object.__setattr__(forward, "run", timed)  # the cached forward infer_tiles gets
    scratch = Path(tempfile.mkdtemp(prefix="parts-", dir=config.workdir))
    try:
        parts = {t.tile_id: str(scratch / f"{t.tile_id}.parquet") for t in inputs}
        start = time.perf_counter()
        with instrumented(totals):
            infer_tiles(inputs, config.bundle_path, parts, config.mapping.infer_batch_size,
                        cpu_runtime=runtime)
        return time.perf_counter() - start
    finally:
        object.__setattr__(forward, "run", run)
        shutil.rmtree(scratch, ignore_errors=True)
