"""A cohort on Dask (dask.distributed): one task per case, run by the workers of a local cluster
this process starts (``scheduler="local"``) or of an existing cluster (``tcp://HOST:PORT``).

What runs where:

- **the client** (the process that calls :func:`~.batch.run_batch`): starts or connects to the
  cluster, submits :func:`case_task` once per case, follows the futures (progress bar),
  resubmits a case whose worker died (at most ``retries`` times), and at the end removes the
  temporary leftovers of killed attempts. It writes no case file; ``run_batch`` then builds
  cohort.csv from what the workers wrote (each case's ``summary.json``).
- **each worker** (one process, one thread): :func:`case_task` removes what an earlier, killed
  attempt of the same case left (``cases/.<case_id>-*``), then runs
  :func:`~.cohort_case.run_case`, which analyses the case and writes ``cases/<case_id>`` atomically
  (a temporary folder beside it, renamed at the end: the folder is whole or absent).

The workers need the same paths as the client (input cases and the output folder: a shared
file system) and this package installed. Only one attempt of a case runs at a time (a case is
resubmitted only once its worker is dead). A stop of the client (Ctrl-C, SIGTERM) cancels the
tasks; on a local cluster the workers are killed and their leftovers removed before it returns.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
import weakref
from pathlib import Path

from ..errors import InputError
from ..io.signals import signals_deferred
from ..packages import missing_package
from .cohort_case import failed_row, run_case

#: seconds to reach an external scheduler and to see at least one of its workers
CONNECT_TIMEOUT_S = 20.0


class _Owner:
    """What the exit-time removal of a run's scratch folder hangs on (lives as long as the process)."""


_SCRATCH_OWNER = _Owner()


def needs_dask(scheduler: str, workers: int) -> bool:
    """Whether a batch with these settings runs on Dask (else: one case after the other in the
    calling process, which needs no Dask: 3D Slicer's Python has none)."""
    return scheduler != "local" or workers > 1


def check_dask(scheduler: str, workers: int) -> None:
    """Refuse, before any work, a scheduler address that is not one, or Dask settings when
    dask.distributed is not installed (one line naming the fix)."""
    if scheduler != "local" and "://" not in scheduler:
        raise InputError(f"--scheduler {scheduler!r}: give 'local' or the address of a Dask scheduler, "
                         "e.g. tcp://HOST:8786")
    if workers < 1:
        raise InputError(f"--workers {workers}: give 1 or more")
    if not needs_dask(scheduler, workers):
        return
    try:
        import distributed  # noqa: F401
    except ImportError:
        what = f"--scheduler {scheduler}" if scheduler != "local" else f"--workers {workers}"
        raise missing_package("distributed", f"a batch on Dask ({what})",
                              "run with --workers 1 (one case after the other in this process)") from None


def remove_case_leftovers(cases_dir: Path, case_ids) -> None:
    """Remove the temporary folders (``.<case_id>-*``, also ``-old-``) that killed attempts of
    these cases left in ``cases_dir``; finished case folders are never touched."""
    prefixes = tuple(f".{case_id}-" for case_id in case_ids)
    if not prefixes or not cases_dir.is_dir():
        return
    for entry in cases_dir.iterdir():
        if entry.name.startswith(prefixes):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _reset_peak_rss() -> None:
    try:  # Linux: "5" resets this process's peak resident set size (VmHWM) to the current one
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    """This process's peak resident set size in MB since :func:`_reset_peak_rss` (VmHWM), or
    since it started where that cannot be reset."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


def case_task(case: dict, out_root: str, options, report: bool, scene: bool, dicom: bool = False) -> dict:
    """The task of one case, run on a worker: ``run_case``'s outcome (cohort row, thumbnail)
    plus ``peak_rss_mb`` (the worker's peak resident memory during this case), ``seconds`` and
    ``worker`` (host:pid)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if not Path(out_root).is_dir():  # never create a private copy of the output on a worker
        row = failed_row(case, f"the output folder {out_root} does not exist on worker {worker}: the workers "
                               "need the client's paths (a shared file system)")
        return {"row": row, "thumbnail": None, "peak_rss_mb": None, "seconds": 0.0, "worker": worker}
    remove_case_leftovers(Path(out_root) / "cases", [case["case_id"]])
    _reset_peak_rss()
    start = time.perf_counter()
    outcome = run_case(case, out_root, options, report, scene, dicom)
    return dict(outcome, peak_rss_mb=_peak_rss_mb(), seconds=time.perf_counter() - start, worker=worker)


def worker_memory(options, workers: int) -> int | None:
    """Bytes each worker of a local cluster may use: ``options.max_memory`` (``--max-memory``,
    the whole batch's) or the memory available now, shared equally by the ``workers``."""
    from ..io.memory import available_memory

    total = available_memory(options.max_memory).bytes
    return None if total is None else max(1, total // workers)


def _open(scheduler: str, workers: int, scratch: str, memory_limit: int | None = None):
    """(client, local cluster or None). A local cluster: ``workers`` processes of one thread on
    127.0.0.1 with nannies (a dead worker is restarted; Dask sets OMP_NUM_THREADS=1 in them, so
    torch uses one thread), no dashboard, ``memory_limit`` bytes per worker (the nanny kills a worker
    above 95 % of it: a retry, then a failed row; no spilling or pausing, which would only stall a
    case; each case is also checked against it before its voxels are read: a failed row naming
    the memory), one task per worker at a time, worker deaths not retried by Dask
    itself (allowed-failures 0: :func:`run_on_dask` resubmits), ``scratch`` as their TMPDIR and
    as the local directory of the scheduler and the workers (Dask's ``dask-scratch-space``), so
    the Slicer scratch folders of a killed worker and Dask's own go with it. An external scheduler: reached, with
    at least one worker, within CONNECT_TIMEOUT_S, else a one-line InputError."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler == "local":
        # the scheduler's and the nannies' dask-scratch-space go into ``scratch`` too (by default
        # they are made in the temporary directory and stay there after the cluster closes)
        settings = {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0,
                    "distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
                    "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": 0.95,
                    "temporary-directory": scratch}
        with dask.config.set(settings):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, silence_logs=logging.ERROR,
                                   memory_limit=memory_limit or 0,
                                   env={"TMPDIR": scratch}, local_directory=scratch,
                                   # no dashboard; the scheduler's plain HTTP routes on a free loopback port
                                   scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
            try:
                return Client(cluster), cluster
            except BaseException:
                cluster.close()
                raise
    try:
        _probe(scheduler)
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - refused, timed out, or not a Dask scheduler answering
        raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({type(error).__name__}): start it "
                         "(dask scheduler; dask worker ADDRESS), check the address, or use --scheduler local") from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError):
        client.close()
        raise InputError(f"the Dask scheduler at {scheduler} has no worker: start one "
                         f"(dask worker {scheduler} --nthreads 1) or use --scheduler local") from None
    return client, None


def _probe(address: str) -> None:
    """Connect to ``address`` and complete Dask's handshake within CONNECT_TIMEOUT_S (Client's
    own timeout does not bound the handshake: a server that accepts and stays silent would hang
    it); in a thread of its own, so that it works under a running event loop too."""
    import asyncio
    import threading

    from distributed.comm import connect

    async def handshake():
        comm = await asyncio.wait_for(connect(address, timeout=CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S)
        await comm.close()

    failure = [TimeoutError(f"no handshake within {CONNECT_TIMEOUT_S:g} s")]

    def run():
        try:
            asyncio.run(handshake())
            failure.clear()
        except BaseException as error:  # noqa: BLE001 - reported by the caller
            failure[:] = [error]

    thread = threading.Thread(target=run, name="dask scheduler probe", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 5)
    if failure:
        raise failure[0]


def _killed_row(case: dict, attempts: int, error, memory_limit: int | None = None) -> dict:
    from ..io.memory import format_size

    why = (f"killed, e.g. for using more than the workers' memory limit of {format_size(memory_limit)} each "
           "(--max-memory shared by --workers)") if memory_limit else "killed, e.g. out of memory"
    return failed_row(case, f"worker died {attempts} time{'s' if attempts > 1 else ''} ({type(error).__name__}: "
                            f"the process running the case was {why})")


def run_on_dask(todo: list, out: Path, options, *, report: bool, scene: bool, dicom: bool = False,
                scheduler: str = "local",
                workers: int = 2, retries: int = 2, bar=None) -> dict:
    """Run :func:`case_task` for every case of ``todo`` on Dask; return case_id -> outcome (the
    task's result, or a failed row when the task raised or its worker died ``retries + 1``
    times). A case never stops the cohort, except one that met a full disk (its outcome holds
    ``disk_full``): then the cases still running are stopped (a local cluster's workers killed,
    their unfinished folders removed) and those not started have no outcome.
    ``bar.update(1)`` per case done.

    On the local cluster no more cases are in flight than the workers have threads, so a worker
    holds only the case it runs: Dask counts a death against every task assigned to the dead
    worker, and a queued case must not be blamed (and retried) for its neighbour's death. An
    external scheduler gets every case at once (it may scale its workers on the queue); its own
    ``distributed.scheduler.allowed-failures`` (default 3) absorbs such deaths before a case
    comes back as KilledWorker, which is then resubmitted here up to ``retries`` times."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    scratch = tempfile.mkdtemp(prefix="emphysema-xai-dask-")
    # removed at the end, and once more when this process exits: a cluster stopped while it was
    # starting leaves Dask objects whose finalizers (made after this one, so run before it)
    # write their lock files into the scratch space at exit
    remove_at_exit = weakref.finalize(_SCRATCH_OWNER, shutil.rmtree, scratch, ignore_errors=True)
    run = uuid.uuid4().hex[:8]
    client = cluster = None
    stopped = False
    futures, outcomes, queue = {}, {}, [(case, 0) for case in reversed(todo)]
    environ = dict(os.environ)  # Dask's nannies set OMP_NUM_THREADS=1 ... in this process's environment
    memory_limit = worker_memory(options, workers) if scheduler == "local" else None
    if memory_limit is not None:  # each case is checked against its worker's share before it is read
        options = dataclasses.replace(options, max_memory=memory_limit)
    try:
        try:
            client, cluster = _open(scheduler, workers, scratch, memory_limit)
        finally:
            _restore_environ(environ)
        pending = as_completed()

        def refill():
            capacity = max(1, sum(client.nthreads().values())) if cluster is not None else len(queue) + len(futures)
            while queue and len(futures) < capacity:
                case, attempt = queue.pop()
                future = client.submit(case_task, case, str(out), options, report, scene, dicom,
                                       key=f"emphysema-xai-{run}-{case['case_id']}-{attempt}")
                futures[future] = (case, attempt)
                pending.add(future)

        refill()
        for future in pending:
            case, attempt = futures.pop(future)
            if future.status == "finished":
                outcomes[case["case_id"]] = future.result()
                if outcomes[case["case_id"]].get("disk_full") is not None:
                    future.release()
                    if bar is not None:
                        bar.update(1)
                    stopped = True  # every later case would fail the same way: stop the others now
                    break
            else:
                error = future.exception()
                if isinstance(error, KilledWorker) and attempt < retries:
                    queue.append((case, attempt + 1))  # next in line; a new key: a new attempt, on a live worker
                    future.release()
                    refill()
                    continue
                if isinstance(error, KilledWorker):
                    row = _killed_row(case, attempt + 1, error, memory_limit)
                else:
                    text = str(error).splitlines()[0] if str(error) else ""
                    row = failed_row(case, f"{type(error).__name__}: {text}")
                outcomes[case["case_id"]] = {"row": row, "thumbnail": None}
            future.release()
            if bar is not None:
                bar.update(1)
            refill()
    except BaseException:
        _close(client, cluster, futures, out, todo, scratch, abort=True)
        _restore_environ(environ)
        raise
    _close(client, cluster, futures, out, todo, scratch, abort=stopped)
    remove_at_exit()
    _restore_environ(environ)  # a nanny that restarted its worker set them again
    return outcomes


def _restore_environ(environ: dict) -> None:
    """Put this process's environment back as ``environ``. A local cluster's nannies update
    ``os.environ`` of the process that starts them (``distributed.nanny.pre-spawn-environ``:
    OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_) before each worker is spawned;
    left there, every later child process of the caller (a console's, a test run's) would run
    torch on one thread."""
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    for key, value in environ.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _close(client, cluster, futures, out: Path, todo, scratch: str, abort: bool) -> None:
    """Cancel what is left, close the client (and the local cluster: after a stop its workers are
    killed at once), then remove the leftovers of killed attempts of ``todo``'s cases. On an
    external cluster a task already running finishes on its worker (Dask cannot stop a running
    task): its case folder appears whole, or not at all."""
    with signals_deferred():
        if client is not None and futures:
            try:
                client.cancel(list(futures), force=True)
            except Exception:  # noqa: BLE001 - the client may already be disconnected
                pass
        pids = [nanny.pid for nanny in (cluster.workers.values() if cluster is not None else ())
                if getattr(nanny, "pid", None)]
        if abort and pids:
            _kill(pids)
        if cluster is not None or not abort:  # an external cluster may still be writing after a stop
            remove_case_leftovers(out / "cases", [c["case_id"] for c in todo])
        for closing in (client, cluster):
            if closing is not None:
                try:
                    closing.close(timeout=10) if closing is client else closing.close()
                except Exception:  # noqa: BLE001 - closing what is already gone
                    pass
        if cluster is not None:
            remove_case_leftovers(out / "cases", [c["case_id"] for c in todo])
        shutil.rmtree(scratch, ignore_errors=True)


def _kill(pids) -> None:
    """SIGKILL the local workers and wait (5 s at most) until they are gone."""
    import psutil

    processes = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            process.send_signal(signal.SIGKILL)
            processes.append(process)
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=5)
