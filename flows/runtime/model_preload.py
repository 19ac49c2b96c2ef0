"""Load the map's model on the workers while the flow starts, not after it.

A map command's fixed costs were the ephemeral Prefect API's start (~34 s here) and then
the model's load on every worker (~15 s: torch, smp and timm imports, the weights): one
after the other, before the first tile. Submitted right after the cluster is up, the load
runs while the API starts; the model tasks then find it in ``cached_bundle``.
"""

from __future__ import annotations

from pathlib import Path

from distributed import Client, fire_and_forget


def preload_model(client: Client, bundle: Path, cpu_runtime: str = "auto") -> int:
    """Start loading ``bundle`` (and building its forward for ``cpu_runtime``) on each
    worker that will run the model (those holding a ``GPU`` resource when any does, else
    all); returns how many. Nothing waits for it."""
    workers = client.scheduler_info().get("workers", {})
    gpu = [a for a, w in workers.items() if w.get("resources", {}).get("GPU")]
    targets = gpu or list(workers)
    path = str(Path(bundle).resolve())
    for address in targets:
        fire_and_forget(client.submit(load_model, path, cpu_runtime, workers=[address],
                                      allow_other_workers=False, pure=False))
    return len(targets)


def load_model(bundle: str, cpu_runtime: str = "auto") -> str:
    """The worker's cached forward for ``bundle`` on its device, keyed as ``infer_tiles``
    keys it (an ONNX graph exported or read from the cache, its session built)."""
    from forestnet_model.predict import cached_forward
    from forestnet_model.train import pick_device

    return cached_forward(bundle, pick_device("auto").type, cpu_runtime)[1].model_id
