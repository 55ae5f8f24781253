"""The one way a stage starts, shared by every script in stages/ (as `lightning-hydra-template`'s
task wrapper): load and check params.yaml, pick the stage's entry, start the processes it asks
for, open its MLflow run (on the main process only), seed, and resolve the device. The script
then holds only its slide: params in, library calls, outputs out.

A stage that uses torch passes the course's `seed_everything` and `resolve_device` (and a training
stage the `distributed` module): the runner imports no torch of its own, so that the data stages
and the report start without it, and each stage's deps in dvc.yaml stay those its script uses.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..files import write_json
from . import dvc_params, layout, params, tracking

if TYPE_CHECKING:
    import torch

    from .distributed import World


@dataclass
class Stage:
    name: str  # as dvc.yaml names it: `train-cnn@mnist`
    params: params.Params  # all of params.yaml, checked
    entry: Any  # the stage's entry of a `foreach` section; None for a stage without one
    run: tracking.StageRun | None  # None on a process other than the main one
    world: World | None = None  # None but for the stages that may run as several processes
    device: torch.device | None = None
    rng: torch.Generator | None = None  # for batches and draws, seeded
    entry_key: str | None = None  # the entry's key in params.yaml: `train_cnn.mnist`
    started: float = field(default_factory=time.perf_counter)

    @property
    def is_main(self) -> bool:
        return self.world is None or self.world.is_main

    def entry_params(self, *names: str) -> dict[str, Any]:
        """Some of the entry's params by their params.yaml key (`train_cnn.mnist.lr`): what an error
        names as the params to suspect (a training that diverged)."""
        return {f"{self.entry_key}.{name}": getattr(self.entry, name) for name in names}

    def write_timing(self, values: dict) -> None:
        """The stage's timing facts and the device they were measured on: `metrics/timing/<stage>.json`."""
        write_json(layout.timing(self.name), values)


@contextmanager
def stage(name: str, key: str | None = None, *, entry: str | None = None, seed: Callable | None = None,
          device: Callable | None = None, distributed: ModuleType | None = None, tags: dict[str, str] | None = None,
          record: Path | None = None) -> Iterator[Stage]:
    """Run the body as the stage `name` (`name@key` for an entry of a `foreach`).

    `entry`: the params section that holds the stage's entries (`train_cnn`, `attack.models`); a
    `key` it lacks stops the stage with the names it has. `seed` (`seed_everything`) seeds every
    generator with params.yaml's seed, with CPU settings (deterministic kernels, on a GPU too: the
    stages that evaluate or search); `device` (`resolve_device`) turns params.yaml's device into
    torch's. With `distributed` (`dlcourse.pipeline.distributed`, for the training stages), the
    entry's `processes` > 1 starts the stage again under torchrun, the body runs on every process
    (`Stage.world`), the MLflow run open on the main one, and the seeding takes the device's settings
    (cuDNN's fastest kernels on a GPU)."""
    all_params = params.load()
    chosen = all_params.entry(entry, key) if entry is not None else None
    full_name = f"{name}@{key}" if key is not None else name
    entry_key = f"{entry}.{key}" if entry is not None else None
    if distributed is None:
        with _run(full_name, all_params, tags, record) as run:
            rng = seed(all_params.seed) if seed is not None else None
            resolved = device(all_params.device) if device is not None else None
            yield Stage(full_name, all_params, chosen, run, device=resolved, rng=rng, entry_key=entry_key)
        return
    distributed.launch_if_asked(chosen.processes)
    with distributed.initialized(device(all_params.device)) as (world, resolved):
        extra = {"world_size": world.size}
        with _run(full_name, all_params, tags, record, extra) if world.is_main else nullcontext() as run:
            yield Stage(full_name, all_params, chosen, run, world=world, device=resolved,
                        rng=seed(all_params.seed, resolved), entry_key=entry_key)


def _run(name: str, all_params: params.Params, tags: dict[str, str] | None, record: Path | None,
         extra: dict | None = None):
    """The stage's MLflow run, logging exactly the params dvc.yaml declares for it."""
    logged = {**dvc_params.declared_params(name, all_params), **(extra or {})}
    return tracking.stage_run(name, logged, record=record, tags=tags)
