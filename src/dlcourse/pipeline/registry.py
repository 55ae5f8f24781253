"""The trained networks as MLflow models, and their versions in the Model Registry.

Each train stage logs, beside its DVC output, an MLflow model built from that output's weights
(the `.pt` under `models/` stays the source of truth): the `mlflow.pytorch` flavour, exported with
`torch.export` (a traced graph that loads without this package's code), a signature, an input
example and explicit pip requirements, so that `mlflow.pyfunc.load_model(uri).predict(batch)` and
`mlflow models serve` work; its pyfunc loader is `guards.py`, shipped in the model (it too needs
none of this package), which refuses the batches the network would answer with nonsense. A
classifier takes float images in [0, 1] (N x C x H x W, its dataset's shape) and returns class
probabilities; a generator takes latent vectors and returns images in [0, 1]. The run records
which DVC output the model came from (tags `dvc.output.path`, `dvc.output.md5`), and the model is
registered as a new version of `dl-course-<entry>`.

The `report` stage then tags each classifier's version with the claims it supports and gives the
alias `champion` to the best classifier of each dataset.

No stage output depends on this module (like `tracking`, it only logs): an edit of it reruns nothing.
It imports torch only where it uses it: the `report` stage, which promotes models, needs no torch.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Iterator

from . import guards
from .store import TrackingError

if TYPE_CHECKING:
    import torch

    from .tracking import StageRun

PREFIX = "dl-course-"
CHAMPION = "champion"
MODEL_NAME = "model"  # the logged model's name within its run
EXAMPLES = 2  # images in the input example: > 1, so that torch.export leaves the batch size free
GUARDS_MODULE = "dlcourse_guards"  # guards.py's name inside a logged model, its pyfunc loader
# What the logged model needs to load and predict, and no more: a torch.export graph runs without
# the project's code. Pinned to this environment's versions (local tags such as +cu130 dropped).
# Each requirement as the distributions that provide it (MLflow also comes as mlflow-skinny).
REQUIREMENTS = (("mlflow", "mlflow-skinny"), ("torch",), ("numpy",))


def registered_name(stage: str) -> str:
    """The Model Registry name of a train stage's model: `train-cnn@mnist` -> `dl-course-mnist`,
    `train-linear@one_epoch` -> `dl-course-linear-one_epoch`, `train-gan[@x]` -> `dl-course-gan[-x]`."""
    kind, _, entry = stage.partition("@")
    base = {"train-cnn": "", "train-linear": "linear", "train-gan": "gan"}[kind]
    return PREFIX + "-".join(filter(None, [base, entry]))


def classifier_stage(model: str) -> str:
    """The train stage of a model named as in `metrics/`: `cnn/mnist` -> `train-cnn@mnist`."""
    kind, entry = model.split("/", 1)
    return f"train-{kind}@{entry}"


def pip_requirements() -> list[str]:
    from .versions import installed_version  # where the report reads MLflow's version too

    pins = []
    for distributions in REQUIREMENTS:
        found = next(((d, v) for d in distributions if (v := installed_version(d))), None)
        if found is None:
            raise RuntimeError(f"none of {distributions} is installed: the logged model could not name its requirements")
        pins.append(f"{found[0]}=={found[1].split('+')[0]}")
    return pins


@contextmanager
def requirements_known_to_mlflow(pins: list[str]) -> Iterator[None]:
    """While open, MLflow's map from import names to distributions holds only REQUIREMENTS. MLflow
    builds the full map, scanning every installed distribution (about 1.5 s per model logged), only
    to warn when the pins of a model it saves and loads back do not match this environment; that
    check reads the installed version of each pinned distribution, which the map only names. A map
    already built is left as it is; the one set here is dropped afterwards, so that a later
    inference of a model's requirements in this process builds the full one. `pins`: `pip_requirements()`."""
    from mlflow.utils import requirements_utils

    if getattr(requirements_utils, "_MODULES_TO_PACKAGES", "renamed") is not None:  # built, or another MLflow
        yield
        return
    distributions = [pin.split("==")[0] for pin in pins]
    requirements_utils._MODULES_TO_PACKAGES = {names[0]: [found] for names, found in zip(REQUIREMENTS, distributions)}
    try:
        yield
    finally:
        requirements_utils._MODULES_TO_PACKAGES = requirements_utils._PACKAGES_TO_MODULES = None


def file_md5(path: str | Path) -> str:
    """The md5 DVC records for a file output in dvc.lock."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_signature(inputs: tuple[int, ...], outputs: tuple[int, ...]):
    """Float32 tensors with a free batch size: (-1, *inputs) -> (-1, *outputs)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    spec = lambda shape: Schema([TensorSpec(np.dtype(np.float32), (-1, *shape))])
    return ModelSignature(inputs=spec(inputs), outputs=spec(outputs))


@contextmanager
def prediction_device(device: str) -> Iterator[None]:
    """MLflow's device for loading PyTorch models (MLFLOW_DEFAULT_PREDICTION_DEVICE), for a while."""
    previous = os.environ.get("MLFLOW_DEFAULT_PREDICTION_DEVICE")
    os.environ["MLFLOW_DEFAULT_PREDICTION_DEVICE"] = device
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MLFLOW_DEFAULT_PREDICTION_DEVICE"]
        else:
            os.environ["MLFLOW_DEFAULT_PREDICTION_DEVICE"] = previous


def save_guarded_pytorch(path, mlflow_model, checks: dict, **kwargs) -> None:
    """The `save_model` of a flavour for MLflow's `Model.log`: `mlflow.pytorch.save_model(**kwargs)`,
    then its pyfunc flavour loaded through `guards.py` (shipped in the model's `code/` folder as the
    module GUARDS_MODULE) with the settings `checks`, so that a batch the network would answer with
    nonsense is refused. The `pytorch` flavour stays the plain exported graph."""
    import shutil
    import tempfile

    import mlflow.pytorch
    from mlflow.models.model import MLMODEL_FILE_NAME, MODEL_CONFIG
    from mlflow.pyfunc import FLAVOR_NAME, MAIN

    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / f"{GUARDS_MODULE}.py"
        shutil.copyfile(guards.__file__, code)
        mlflow.pytorch.save_model(path=path, mlflow_model=mlflow_model, code_paths=[str(code)], **kwargs)
    pyfunc = mlflow_model.flavors[FLAVOR_NAME]  # present: the input example is a numpy array
    pyfunc[MAIN] = GUARDS_MODULE
    pyfunc[MODEL_CONFIG] = {**(pyfunc.get(MODEL_CONFIG) or {}), **checks}
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


GUARDED_PYTORCH = SimpleNamespace(save_model=save_guarded_pytorch)


def log_model(run: StageRun, model: torch.nn.Module, example: torch.Tensor, outputs: tuple[int, ...], source: Path,
              description: str, checks: dict, tags: dict[str, str] | None = None):
    """Log `model` (on the CPU, in eval mode) to the stage's run, built from the DVC output `source`,
    and register it as a new version of the stage's registered model; its ModelVersion. `checks`:
    the checks of its input when loaded with `mlflow.pyfunc` (`guards.check_batch`'s settings)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    start = time.perf_counter()
    source_tags = {"dvc.output.path": Path(source).as_posix(), "dvc.output.md5": file_md5(source)}
    run.set_tags(source_tags)
    model = model.cpu().eval()
    example = example.detach().cpu().float()
    name = registered_name(run.stage)
    try:
        # The graph is exported on the CPU, and MLflow checks the input example by loading the model on
        # CUDA when it is available, which an exported CPU graph refuses: the check runs on the CPU.
        pins = pip_requirements()
        with requirements_known_to_mlflow(pins), prediction_device("cpu"):
            info = Model.log(
                flavor=GUARDED_PYTORCH, flavor_name="mlflow.pytorch", checks=checks, pytorch_model=model,
                serialization_format="pt2", artifact_path=None, name=MODEL_NAME,
                signature=tensor_signature(tuple(example.shape[1:]), outputs), input_example=example.numpy(),
                pip_requirements=pins, tags=source_tags, registered_model_name=name, await_registration_for=0)
    except MlflowException as exc:
        if "403" not in str(exc):
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "this user")
        raise TrackingError(f"MLflow tracking server {mlflow.get_tracking_uri()} refuses {user} a new version of the "
                            f"registered model {name} (created by another user): ask its admin for EDIT on it, "
                            f"auth.grant_user_permission({user!r}, 'registered_model', {name!r}, 'EDIT')") from None
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    client.update_model_version(name, version, description=description)
    for key, value in {"dvc.stage": run.stage, **source_tags, **(tags or {})}.items():
        client.set_model_version_tag(name, version, key, value)
    run.log_metrics({"mlflow_model_seconds": time.perf_counter() - start})
    return client.get_model_version(name, version)


def log_classifier(run: StageRun, path: str | Path, test_images: torch.Tensor, test_accuracy: float,
                   tags: dict[str, str] | None = None):
    """The classifier saved at `path` (a DVC output), as a model returning class probabilities.
    `test_images`: uint8 test images, the first EXAMPLES of which become the input example."""
    import torch

    from ..course.data import to_float
    from ..course.models import Probabilities, load_classifier

    classifier, checkpoint = load_classifier(path, "cpu", torch.contiguous_format)  # the graph as trained
    example = to_float(test_images[:EXAMPLES], "cpu")
    classes = len(checkpoint["classes"])
    description = (f"`{run.stage}`: {checkpoint['architecture']} on {checkpoint['dataset']}, test accuracy "
                   f"{test_accuracy:.4f}. Input: float32 images in [0, 1], N x {' x '.join(map(str, example.shape[1:]))}; "
                   f"output: the probabilities of the {classes} classes ({', '.join(checkpoint['classes'])}).")
    return log_model(run, Probabilities(classifier), example, (classes,), Path(path), description,
                     {"max_batch": guards.MAX_BATCH, "input_range": list(guards.CLASSIFIER_RANGE), "rows": "images"},
                     {"dataset": checkpoint["dataset"], "test_accuracy": f"{test_accuracy:.4f}", **(tags or {})})


def log_generator(run: StageRun, checkpoint_path: str | Path, generator, latent_dim: int, num_classes: int,
                  image_shape: tuple[int, int, int], seed: int = 0, domains: int = 1):
    """The generator of a GAN checkpoint (its moving average when it has one), loaded into `generator`
    (a network of the entry's era), as a model from latent vectors (the one-hot digit appended for a
    conditional one) to images in [0, 1] of `image_shape`, or with `domains` > 1 (a coupled GAN) to
    that many images of `image_shape` per latent vector, one after the other along the channels."""
    import copy

    import torch
    import torch.nn.functional as F

    from ..course.gans import generative
    from ..files import load_torch

    generator = copy.deepcopy(generator).cpu()
    generator.load_state_dict(generative.sampler_weights(load_torch(checkpoint_path, map_location="cpu")))
    noise = generative.fixed_noise(EXAMPLES, latent_dim, seed)
    if num_classes:
        noise = torch.cat([noise, F.one_hot(torch.arange(EXAMPLES) % num_classes, num_classes).float()], dim=1)
    size = noise.shape[1]
    digit = f" followed by the one-hot digit asked for ({num_classes} columns)" if num_classes else ""
    channels, *pixels = image_shape
    outputs = (domains * channels, *pixels)
    shape = " x ".join(str(n) for n in outputs)
    coupled = (f": each latent vector's images in its {domains} domains, one after the other along the channels "
               f"({channels} each)" if domains > 1 else "")
    description = (f"`{run.stage}`: the GAN's generator, from {Path(checkpoint_path).as_posix()}. Input: float32 "
                   f"N x {size}, standard normal noise ({latent_dim} columns){digit}; output: images in [0, 1], "
                   f"N x {shape}{coupled}.")
    model = generative.ImagesFromNoise(generator, latent_dim, num_classes)
    return log_model(run, model, noise, outputs, Path(checkpoint_path), description,
                     {"max_batch": guards.MAX_BATCH, "rows": "latent vectors"})


# --- the registered versions of runs -------------------------------------------------------------

def version_of_run(client, stage: str, run_id: str):
    """The registered version that the run `run_id` of `stage` logged, or None."""
    found = client.search_model_versions(f"name = '{registered_name(stage)}' and run_id = '{run_id}'")
    return max(found, key=lambda v: int(v.version), default=None)
