"""Executors: one interface, ``run(units, opts) -> iterator of UnitOutcome`` (as units finish).

- ``local``: in process and sequential on CPU; with several visible GPUs, one worker process per
  GPU (spawned, each pinned to ``cuda:i``) pulls units from a shared pool.
- ``slurm``: a submitit job array (``AutoExecutor``; ``cluster='local'`` runs the same path with
  submitit's local executor, which the tests use). Every job runs :func:`run_unit`, which claims
  its unit with a lock file, so jobs and local runners can share one results directory.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from harness.bench.cells import WorkUnit
from harness.bench.runner import RunOptions, UnitOutcome, run_unit
from harness.errors import ConfigError
from harness.registry import Registry


class Executor(Protocol):
    def run(self, units: Sequence[WorkUnit], opts: RunOptions) -> Iterator[UnitOutcome]: ...


EXECUTORS: Registry[type] = Registry("executor")


def register_executor(name: str):
    return EXECUTORS.register(name)


def create_executor(name: str, **options: Any) -> Executor:
    return EXECUTORS.get(name)(**options)


def list_executors() -> list[str]:
    return EXECUTORS.names()


_WORKER_DEVICE: str | None = None


def _init_worker(queue: Any) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = queue.get()


def _run_on_worker(unit: WorkUnit, opts: RunOptions) -> UnitOutcome:
    return run_unit(unit, replace(opts, device=_WORKER_DEVICE or opts.device))


@register_executor("local")
@dataclass(frozen=True)
class LocalExecutor:
    """Sequential in process on CPU; one spawned worker per visible GPU otherwise."""

    workers: int | None = None

    def run(self, units: Sequence[WorkUnit], opts: RunOptions) -> Iterator[UnitOutcome]:
        import torch

        n_gpu = torch.cuda.device_count() if opts.device.startswith("cuda") else 0
        workers = self.workers if self.workers is not None else n_gpu
        if workers <= 1 or len(units) <= 1:
            for u in units:
                yield run_unit(u, opts)
            return
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for i in range(workers):
            queue.put(f"cuda:{i % max(n_gpu, 1)}" if n_gpu else "cpu")
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(queue,)) as pool:
            futures = [pool.submit(_run_on_worker, u, opts) for u in units]
            for f in cf.as_completed(futures):
                yield f.result()


@register_executor("slurm")
@dataclass(frozen=True)
class SlurmExecutor:
    """A submitit job array; ``cluster=None`` lets submitit pick slurm, ``'local'`` runs locally."""

    folder: str | None = None
    cluster: str | None = None
    partition: str | None = None
    timeout_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    array_parallelism: int = 64
    additional: tuple[tuple[str, Any], ...] = ()

    def run(self, units: Sequence[WorkUnit], opts: RunOptions) -> Iterator[UnitOutcome]:
        try:
            import submitit
        except ImportError as e:  # pragma: no cover - submitit is a dependency
            raise ConfigError(f"--executor slurm needs submitit ({e})") from None
        if not units:
            return
        folder = Path(self.folder or Path(opts.results) / "submitit") / "%j"
        ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "name": "ddbench-table"}
        if ex.cluster == "slurm":
            params.update(slurm_partition=self.partition, slurm_gpus_per_node=self.gpus_per_node,
                          cpus_per_task=self.cpus_per_task, slurm_mem=f"{self.mem_gb}GB",
                          slurm_array_parallelism=self.array_parallelism)
            params = {k: v for k, v in params.items() if v is not None}
        ex.update_parameters(**params, **dict(self.additional))
        job_opts = opts if ex.cluster != "slurm" else replace(opts, device="cuda" if self.gpus_per_node else "cpu")
        jobs = ex.map_array(run_unit, list(units), [job_opts] * len(units))
        for job, unit in zip(jobs, units):
            try:
                yield job.result()
            except Exception as e:  # a crashed job: report it, the unit stays pending
                yield UnitOutcome(unit.key, "failed", f"job {job.job_id}: {type(e).__name__}: {e}")
