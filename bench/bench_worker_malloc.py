"""Train-step time in a Dask worker, with and without the cluster's malloc tuning.

    uv run python bench/bench_worker_malloc.py [--steps 5]

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, which freezes glibc's
mmap threshold; ``flows.runtime.cluster`` registers a worker plugin that raises it once per
worker. Each figure is a ratio against the same steps in this plain process, timed in the
same run: 1.0 means a worker trains as fast as a plain process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def train_steps(steps: int) -> float:
    """Seconds for ``steps`` forward+backward steps of the default model (8 x 6 x 224 px)."""
    import torch

    from forestnet_model.model import ModelSpec, build_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model(ModelSpec())
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(8, 6, 224, 224)
    target = torch.randint(0, 4, (8, 224, 224))
    loss_fn = torch.nn.CrossEntropyLoss()
    for warm in (True, False):
        started = time.perf_counter()
        for _ in range(1 if warm else steps):
            optimiser.zero_grad()
            loss_fn(model(x), target).backward()
            optimiser.step()
    return time.perf_counter() - started


def in_worker(steps: int, tuned: bool) -> float:
    from distributed import Client, LocalCluster

    from flows.runtime.cluster import tune_workers

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        if tuned:
            tune_workers(client)
        return client.submit(train_steps, steps, pure=False).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):  # paired rounds: the three timings run back to back
        plain = train_steps(args.steps)
        untuned = in_worker(args.steps, tuned=False)
        tuned = in_worker(args.steps, tuned=True)
        rows.append({"plain_s": round(plain, 2), "worker_untuned_s": round(untuned, 2),
                     "worker_tuned_s": round(tuned, 2),
                     "plain_over_untuned": round(plain / untuned, 2),
                     "plain_over_tuned": round(plain / tuned, 2)})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
