"""Facts about the stage's own process: whether another one is alive, when this one started, the
processor it runs on, and the objects it keeps out of Python's garbage collections."""

from __future__ import annotations

import atexit
import functools
import gc
import os
import time
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def process_start_time() -> float:
    """When this process started (seconds since the epoch): a stage's start-up, imports and the MLflow
    store's opening, is the time from then to its run's start. On Linux, its start in clock ticks
    since boot (/proc/self/stat) against the time since boot now: psutil adds the boot time instead,
    which /proc/stat gives in whole seconds, so its answer is early by up to 1 s."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        import psutil

        return psutil.Process().create_time()


def cpu_description(cpuinfo: str | None = None, usable: int | None = None) -> str:
    """The processor a stage ran on and how many of its CPUs the process could use, e.g. "AMD EPYC
    (family 26, model 2), 2 CPUs": stage times are only comparable on the same one. From
    /proc/cpuinfo on Linux (the first processor's model name, family and model), else `platform`."""
    import platform

    if usable is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown processor"
    if fields.get("cpu family") and fields.get("model"):
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return f"{name}, {usable} CPU{'s' if usable != 1 else ''}"


def freeze_objects() -> None:
    """Take every object made so far out of Python's garbage collections for good (gc.freeze), now
    and, once registered, again at exit. The modules that torch, pandas, matplotlib, MLflow and
    SQLAlchemy load are half a million objects, which each full collection walks again: 0.2-0.5 s
    of a stage's start-up and model logging on this project's 2-core CPU, and about 1.3 s at exit,
    where Python tears them all down. They live as long as the process anyway and the OS frees its
    memory; what is lost is the collection of garbage cycles among them, and the destructors that
    the collections at exit would call, which Python does not promise to call. atexit handlers
    still run, and stdout and stderr are still flushed."""
    gc.freeze()
    _freeze_at_exit()


@functools.cache
def _freeze_at_exit() -> None:
    atexit.register(gc.freeze)
