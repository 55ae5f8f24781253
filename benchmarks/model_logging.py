"""Time what logging a trained network as an MLflow model adds to its train stage.

    python benchmarks/model_logging.py [--runs N]

Logs every classifier of `models/linear` and `models/cnn` and the last checkpoint of each GAN entry
(`models/gan/<entry>/`), as the train stages do (`registry.log_classifier`, `registry.log_generator`: export,
signature, input example, registration), into a throwaway MLflow store (SQLite, in a temporary
folder), each inside a stage run of its own, and prints the wall and CPU seconds of each call.
The workspace's own `mlflow.db` is left alone. Run it from the repository root after `dvc pull`
or `dvc repro`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="times each model is logged (the median is shown)")
    args = parser.parse_args()

    from dlcourse.course import data
    from dlcourse.course.gans import eras as gan_eras
    from dlcourse.pipeline import layout, params, registry, tracking
    from dlcourse.pipeline.layout import MODELS, PREPARED

    p = params.load()
    tests = {dataset: data.load_split(PREPARED, dataset, "test").images[: registry.EXAMPLES]
             for dataset in ("mnist", "cifar10")}
    jobs = {f"train-linear@{path.stem}": (path, "mnist") for path in sorted((MODELS / "linear").glob("*.pt"))
            if path.stem in p.train_linear}
    jobs.update({f"train-cnn@{path.stem}": (path, p.train_cnn[path.stem].dataset)
                 for path in sorted((MODELS / "cnn").glob("*.pt")) if path.stem in p.train_cnn})
    gans = {f"train-gan@{entry}": checkpoints[-1] for entry in p.train_gan
            if (checkpoints := sorted(layout.gan_checkpoints(entry).glob("epoch_*.pt")))}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        os.environ["MLFLOW_EXPERIMENT_NAME"] = "model-logging-benchmark"
        rows = []
        for stage in [*jobs, *gans]:
            walls, cpus = [], []
            for _ in range(args.runs):
                with tracking.stage_run(stage, {}, record=Path(folder) / f"{stage}.json") as run:
                    wall, cpu = time.perf_counter(), cpu_seconds()
                    if stage in gans:
                        g = p.train_gan[stage.partition("@")[2]]
                        shape = tuple(tests[g.dataset].shape[1:])
                        num_classes = 10 if gan_eras.ERAS[g.era].conditional else 0
                        generator = gan_eras.build(g.era, g.latent_dim, g.width, shape, num_classes)[0]
                        registry.log_generator(run, gans[stage], generator, g.latent_dim, num_classes, shape,
                                               domains=gan_eras.ERAS[g.era].domains)
                    else:
                        path, dataset = jobs[stage]
                        registry.log_classifier(run, path, tests[dataset], 0.0)
                    walls.append(time.perf_counter() - wall)
                    cpus.append(cpu_seconds() - cpu)
            rows.append((stage, statistics.median(walls), statistics.median(cpus)))
            print(f"{stage:32s} {rows[-1][1]:6.2f} s wall  {rows[-1][2]:6.2f} s CPU", flush=True)
    print(f"{'median':32s} {statistics.median(r[1] for r in rows):6.2f} s wall  "
          f"{statistics.median(r[2] for r in rows):6.2f} s CPU  (the first model also pays MLflow's imports)")


if __name__ == "__main__":
    sys.exit(main())
