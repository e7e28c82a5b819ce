"""Executors: one interface, ``run(jobs, opts) -> iterator of UnitOutcome`` (as units finish).

A job is the pending units of one cell (:class:`harness.bench.work.CellJob`), run by
:func:`harness.bench.work.run_job`, which claims each unit with a lock file, so jobs of any executor and
local runners can share one results directory.

- ``local``: in process and sequential on CPU; with several visible GPUs, one worker process per
  GPU (spawned, each pinned to ``cuda:i``) pulls cells from a shared pool.
- ``slurm``: a submitit job array, one task per cell (``AutoExecutor``; ``cluster='local'`` runs the same
  path with submitit's local executor, which the tests use).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import submitit
import torch

from harness.bench.work import CellJob, RunOptions, UnitOutcome, run_job
from harness.registry import Registry


class Executor(Protocol):
    def run(self, jobs: Sequence[CellJob], opts: RunOptions) -> Iterator[UnitOutcome]: ...


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


def _run_on_worker(job: CellJob, opts: RunOptions) -> list[UnitOutcome]:
    return run_job(job, replace(opts, device=_WORKER_DEVICE or opts.device))


@register_executor("local")
@dataclass(frozen=True)
class LocalExecutor:
    """Sequential in process on CPU; one spawned worker per visible GPU otherwise."""

    workers: int | None = None

    def run(self, jobs: Sequence[CellJob], opts: RunOptions) -> Iterator[UnitOutcome]:
        n_gpu = torch.cuda.device_count() if opts.device.startswith("cuda") else 0
        workers = self.workers if self.workers is not None else n_gpu
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield from run_job(job, opts)
            return
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for i in range(workers):
            queue.put(f"cuda:{i % max(n_gpu, 1)}" if n_gpu else "cpu")
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(queue,)) as pool:
            futures = [pool.submit(_run_on_worker, job, opts) for job in jobs]
            for f in cf.as_completed(futures):
                yield from f.result()


@register_executor("slurm")
@dataclass(frozen=True)
class SlurmExecutor:
    """A submitit job array (one task per cell); ``cluster=None`` lets submitit pick slurm, ``'local'`` runs
    locally."""

    folder: str | None = None
    cluster: str | None = None
    partition: str | None = None
    timeout_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    array_parallelism: int = 64
    additional: tuple[tuple[str, Any], ...] = ()

    def run(self, jobs: Sequence[CellJob], opts: RunOptions) -> Iterator[UnitOutcome]:
        if not jobs:
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
        tasks = ex.map_array(run_job, list(jobs), [job_opts] * len(jobs))
        for task, job in zip(tasks, jobs):
            try:
                yield from task.result()
            except Exception as e:  # a crashed task: report its units, they stay pending
                for u in job.units:
                    yield UnitOutcome(u.key, "failed", f"job {task.job_id}: {type(e).__name__}: {e}")
