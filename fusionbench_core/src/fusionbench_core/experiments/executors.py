"""Where ``fb sweep`` computes its jobs: serially in this process, or as Ray tasks (``--executor ray``).

An executor is a function ``run_jobs(jobs, *, host, execute, still_needed, progress)`` that yields
:class:`~.sweep.Outcome` objects as they complete. It never touches the result store: the driver
(:func:`~.sweep.run_sweep`) writes every outcome, so Ray workers need no access to the database
and a worker that dies leaves nothing half-written. ``still_needed(job)`` is asked just before a
job starts (it drops cells another sweep stored meanwhile; ``False``: skip the job).

Ray is an optional extra (``pip install 'fusionbench-core[ray]'``). Without ``--address`` a local
Ray instance is started (``num_cpus`` caps it) and shut down afterwards; with one, the job runs on
that cluster, whose workers must have the same packages installed. Each job computes with the
driver's number of torch threads (Ray would otherwise set one), so that a local instance stores the
serial executor's metrics to the last bit, and asks for as many CPUs as it has threads (at most a
node's CPUs), so that tasks never oversubscribe a machine's cores; it also asks for ``gpus`` GPUs
(``--gpus-per-cell``, default: one when the cluster has GPUs and the cell's method or pools want
one, see :func:`~.sweep.wants_gpu`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import ConfigError

__all__ = ["EXECUTORS", "get_executor", "ray_executor", "serial_executor"]

EXECUTORS = ("serial", "ray")
"""The executors ``fb sweep --executor`` accepts."""

FORWARDED_ENV = ("FUSIONBENCH_", "HF_", "TRANSFORMERS_", "OMP_NUM_THREADS")
"""Environment variables (prefixes) the driver hands to Ray workers, so they read the same caches and settings."""


def get_executor(name: str, *, address: str | None = None, num_cpus: int | None = None,
                 gpus_per_cell: float | None = None) -> Callable[..., Iterator[Any]]:
    """The executor called ``name``; a one-line :class:`ConfigError` for an unknown one or a missing Ray."""
    if name == "serial":
        if address is not None or num_cpus is not None or gpus_per_cell is not None:
            raise ConfigError("--address, --num-cpus and --gpus-per-cell need --executor ray")
        return serial_executor
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("executor 'ray' needs Ray: pip install 'fusionbench-core[ray]'") from None
        if address is not None and num_cpus is not None:
            raise ConfigError("--num-cpus sizes a local Ray instance; it cannot be used with --address")
        if num_cpus is not None and num_cpus < 1:
            raise ConfigError(f"--num-cpus must be at least 1, got {num_cpus}")
        if gpus_per_cell is not None and gpus_per_cell < 0:
            raise ConfigError(f"--gpus-per-cell must be at least 0, got {gpus_per_cell}")
        if address is not None:
            check_reachable(address)

        def run(jobs: list[Any], **kwargs: Any) -> Iterator[Any]:
            return ray_executor(jobs, address=address, num_cpus=num_cpus, gpus_per_cell=gpus_per_cell, **kwargs)

        return run
    raise ConfigError(f"unknown executor '{name}' (known: {', '.join(EXECUTORS)})")


REACH_TIMEOUT_S = 5.0
"""How long ``--address`` gets to accept a TCP connection before the sweep gives up on it."""

DEFAULT_PORTS = {"ray": 10001, "": 6379, "http": 8265, "https": 8265}
"""The port Ray listens on for each kind of address: Ray Client (``ray://``), the GCS, the dashboard."""


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Refuse, within ``timeout`` seconds, a Ray ``--address`` that accepts no connection.

    ``ray.init`` on an address where nothing answers retries for many minutes before it fails (about
    14 measured); one TCP connection to the host and port tells at once. ``auto`` and ``local`` name
    no host and are left to Ray.
    """
    import socket

    if address in ("auto", "local"):
        return
    scheme, _, rest = address.rpartition("://")
    host_port = rest.split("/", 1)[0]
    host, sep, port_text = host_port.rpartition(":")
    bare_ipv6 = ":" in host and not host.endswith("]")
    if not sep or bare_ipv6:  # no port given
        host, port_text = host_port, ""
    host = host.strip("[]")
    try:
        port = int(port_text) if port_text else DEFAULT_PORTS.get(scheme, 6379)
    except ValueError:
        raise ConfigError(f"--address '{address}': '{port_text}' is not a port number") from None
    if not host:
        raise ConfigError(f"--address '{address}' names no host (e.g. ray://head:10001 or head:6379)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ConfigError(f"cannot reach the Ray cluster at '{address}' ({host}:{port}: {reason} within "
                          f"{timeout:g} s); check --address and that the cluster is up") from None


def serial_executor(jobs: Iterable[Any], *, host: Any = None, execute: Callable[..., Any] | None = None,
                    still_needed: Callable[[Any], bool] = lambda job: True, progress: Any = None) -> Iterator[Any]:
    """Run the jobs one after another in this process, yielding each outcome when it is complete."""
    from .sweep import run_job

    for job in jobs:
        if not still_needed(job):
            continue
        if progress is not None:
            progress.start(running=len(job.cells) or len(job.keys))
        yield from run_job(job, host, execute)


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if any(k.startswith(p) for p in FORWARDED_ENV)}


def task_cpus(threads: int | None, node_cpus: float) -> int:
    """The CPUs a Ray task asks for: its torch threads (one when unknown), at most a node's CPUs.

    A task whose threads exceed a node's CPUs still computes with all of them (the serial
    executor's reduction order): it then takes a whole node, and shares its cores only with itself.
    """
    return max(1, min(int(threads or 1), int(node_cpus)))


def _ray_job(job: Any) -> list[Any]:
    """A Ray task: compute one job in the worker (no progress bars) and return its outcomes."""
    from .sweep import run_job

    os.environ["FUSIONBENCH_PROGRESS"] = "0"
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    return list(run_job(job))


def ray_executor(jobs: Iterable[Any], *, address: str | None = None, num_cpus: int | None = None,
                 gpus_per_cell: float | None = None, host: Any = None, execute: Callable[..., Any] | None = None,
                 still_needed: Callable[[Any], bool] = lambda job: True, progress: Any = None) -> Iterator[Any]:
    """Run each job as a Ray task and yield the outcomes of each task as it finishes (in completion order).

    Jobs are submitted at once and Ray schedules them on the CPUs (and GPUs) it has. ``execute``
    cannot travel to workers and is refused. A task's error is raised here as the worker raised it.
    """
    import logging

    import ray

    if execute is not None:
        raise ConfigError("the ray executor runs fusionbench_core.run.execute; a replacement cannot be sent to workers")
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.WARNING, "configure_logging": True,
                                   "runtime_env": {"env_vars": {**_forwarded_env(), "FUSIONBENCH_PROGRESS": "0"}}}
        if address is not None:
            options["address"] = address
        else:
            options["num_cpus"] = num_cpus
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at '{address}'" if address else "a local Ray instance"
            raise ConfigError(f"could not start or reach {where}: {str(exc).splitlines()[0]}") from exc
    try:
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        node_cpus = max((node.get("Resources", {}).get("CPU", 1) for node in ray.nodes() if node.get("Alive")),
                        default=1)
        task = ray.remote(_ray_job)
        pending: dict[Any, Any] = {}
        for job in jobs:
            if not still_needed(job):
                continue
            gpus = gpus_per_cell if gpus_per_cell is not None else (job.gpus if has_gpus else 0.0)
            cpus = task_cpus(job.threads, node_cpus)
            pending[task.options(num_cpus=cpus, num_gpus=gpus).remote(job)] = job
        if progress is not None:
            progress.start(running=sum(len(j.cells) or len(j.keys) for j in pending.values()))
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                job = pending.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None)
                    if job.keep_going:  # a worker that died or failed outside run_job: the job's items fail
                        from .sweep import failed_items

                        yield from failed_items(job, cause if isinstance(cause, BaseException) else exc, set())
                        continue
                    if isinstance(cause, BaseException):
                        raise cause from None
                    raise
                yield from outcomes
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        if started_here:
            ray.shutdown()
