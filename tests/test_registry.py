"""The trained networks as MLflow models: logged from their DVC outputs, registered, promoted by the
report, loaded with `mlflow.pyfunc` and served with `mlflow models serve` as the README shows."""

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dlcourse.course import data
from dlcourse.course.gans import eras as gan_eras, generative
from dlcourse.pipeline import registry, store, tracking
from dlcourse.report.champions import best_by_dataset
from dlcourse.report.claims import CLAIMS, supported_claims
from dlcourse.course.models import Classifier, Probabilities, load_classifier
from workspace import free_port, stop_group

SERVE_WAIT_S = 120


# --- units --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, name", [("train-cnn@mnist", "dl-course-mnist"),
                                         ("train-cnn@cifar10-airnet", "dl-course-cifar10-airnet"),
                                         ("train-linear@one_epoch", "dl-course-linear-one_epoch"),
                                         ("train-gan", "dl-course-gan"), ("train-gan@wide", "dl-course-gan-wide")])
def test_registered_names(stage, name):
    assert registry.registered_name(stage) == name


def test_the_best_classifier_of_each_dataset():
    classifiers = {"linear/one_epoch": {"dataset": "mnist", "test_accuracy": 0.91},
                   "cnn/mnist": {"dataset": "mnist", "test_accuracy": 0.99},
                   "cnn/mnist-course": {"dataset": "mnist", "test_accuracy": 0.99},  # a tie: the first name wins
                   "cnn/cifar10-linear": {"dataset": "cifar10", "test_accuracy": 0.41},
                   "cnn/cifar10-mlp": {"dataset": "cifar10", "test_accuracy": 0.56}}
    assert best_by_dataset(classifiers) == {"mnist": "cnn/mnist", "cifar10": "cnn/cifar10-mlp"}


def test_a_model_supports_the_claims_that_hold_and_that_its_own_numbers_back():
    verdicts = {claim.id: {"holds": False, "values": {}} for claim in CLAIMS}
    verdicts["linear-one-epoch"] = {"holds": True, "values": {"test_accuracy": 0.91}}
    verdicts["cifar10-50"] = {"holds": True, "values": {"cifar10-mlp": {"passes": True}, "cifar10-linear": {"passes": False}}}
    verdicts["hard-errors"] = {"holds": False, "values": {"cnn/mnist": 3, "linear/one_epoch": 0}}  # fails: backs nothing
    verdicts["fooling"] = {"holds": True,
                           "values": {"mnist": {"model": "cnn/mnist", "methods_reaching_every_class": ["gradient"]},
                                      "cifar10": {"model": "cnn/cifar10-cnn", "methods_reaching_every_class": []}}}
    assert supported_claims(verdicts) == {"linear/one_epoch": ["linear-one-epoch"], "cnn/cifar10-mlp": ["cifar10-50"],
                                          "cnn/mnist": ["fooling"]}


def test_probabilities_wrap_the_classifier():
    classifier = Classifier("mnistnet", {"widths": [4, 8], "hidden": 16}, channels=1).eval()
    images = torch.rand(5, 1, 28, 28)
    probabilities = Probabilities(classifier)(images)
    assert torch.allclose(probabilities.sum(1), torch.ones(5))
    assert torch.equal(probabilities.argmax(1), classifier(images).argmax(1))
    assert torch.allclose(probabilities, torch.softmax(classifier(images), 1))


@pytest.mark.parametrize("era", sorted(gan_eras.ERAS))
def test_every_eras_generator_exports_for_any_batch_size(era):
    """What `mlflow.pytorch.log_model` does (torch.export, the batch dimension dynamic): a generator
    that read its batch size as a Python int would serve batches of the example's size only."""
    from torch.export import Dim

    num_classes = 10 if gan_eras.ERAS[era].conditional else 0
    generator, _ = gan_eras.build(era, 6, 4, (1, 28, 28), num_classes)
    model = generative.ImagesFromNoise(generator, 6, num_classes)
    exported = torch.export.export(model, (torch.randn(2, 6 + num_classes),), dynamic_shapes=({0: Dim("batch")},))
    domains = gan_eras.ERAS[era].domains  # a coupled GAN's images: its domains' channels, one by one
    assert exported.module()(torch.randn(7, 6 + num_classes)).shape == (7, domains, 28, 28)


@pytest.mark.parametrize("era, num_classes", [("dcgan-conditional", 10), ("gan-2014", 0), ("dcgan-2015", 0),
                                              ("sngan-2018", 0), ("cogan-2016", 0)])
def test_images_from_noise_are_the_samples_of_the_generator(era, num_classes):
    generator, _ = gan_eras.build(era, 6, 4, (1, 28, 28), num_classes)
    noise, labels = torch.randn(4, 6), generative.sample_labels(4, num_classes)
    latent = torch.cat([noise, torch.nn.functional.one_hot(labels, 10).float()], 1) if num_classes else noise
    images = generative.ImagesFromNoise(generator, 6, num_classes)(latent)
    assert images.shape == (4, gan_eras.ERAS[era].domains, 28, 28)
    assert torch.allclose(images, generative.sample(generator, noise, labels), atol=1e-6)


def test_the_md5_is_the_one_dvc_records(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(os.urandom(3 << 20))
    assert registry.file_md5(path) == hashlib.md5(path.read_bytes()).hexdigest()


def test_the_pip_requirements_pin_what_the_model_needs_without_local_tags():
    requirements = registry.pip_requirements()
    assert [r.split("==")[0] for r in requirements] == ["mlflow", "torch", "numpy"]
    assert all("+" not in r for r in requirements)



def test_mlflow_checks_the_pins_without_scanning_every_installed_distribution(monkeypatch):
    from mlflow.utils import requirements_utils

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(requirements_utils, "_PACKAGES_TO_MODULES", None)
    monkeypatch.setattr(requirements_utils.importlib_metadata, "packages_distributions",
                        lambda: pytest.fail("scanned every installed distribution"))
    warnings = []
    monkeypatch.setattr(requirements_utils._logger, "warning", lambda message, *args, **kwargs: warnings.append(message))
    pins = registry.pip_requirements()
    with registry.requirements_known_to_mlflow(pins):
        requirements_utils.warn_dependency_requirement_mismatches(pins)
        assert warnings == []
        requirements_utils.warn_dependency_requirement_mismatches(["torch==1.0"])
    assert len(warnings) == 1 and "torch (current: " in warnings[0]
    assert requirements_utils._MODULES_TO_PACKAGES is None  # a later inference builds the full map


def test_a_model_logged_on_a_machine_with_a_gpu_passes_mlflows_check(tmp_path, monkeypatch):
    """MLflow loads a PyTorch model on CUDA whenever it is available, and checks the input example so
    when logging; our models are exported on the CPU, so that check failed for every logged model on
    an H200. Logging now checks on the CPU; loading elsewhere chooses its device (README)."""
    import logging

    import mlflow  # noqa: F401 - its import configures its loggers, which would drop the handler below

    from dlcourse.course.models import save_classifier

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    save_classifier(Classifier("mlp", {"in_shape": [1, 28, 28], "hidden": []}, channels=1), "mnist",
                    data.MNIST_CLASSES, tmp_path / "m.pt")
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("mlflow").addHandler(handler)
    try:
        with tracking.stage_run("train-cnn@tiny", {}) as run:
            version = registry.log_classifier(run, tmp_path / "m.pt", torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 0.5)
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    assert version.name == "dl-course-tiny"
    assert not [w for w in warnings if "validate" in w], warnings
    assert "MLFLOW_DEFAULT_PREDICTION_DEVICE" not in os.environ  # left as it was


def test_a_coupled_generator_is_logged_with_its_two_domains_output(tmp_path, monkeypatch):
    """cogan-2016's model: one latent vector in, its two domains' images out (N x 2C x H x W), as its
    signature and description say."""
    import mlflow

    from dlcourse.files import save_torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    torch.manual_seed(0)
    generator, _ = gan_eras.build("cogan-2016", 6, 4, (1, 28, 28))
    save_torch({"generator": generator.state_dict()}, tmp_path / "generator.pt")
    try:
        with tracking.stage_run("train-gan@tiny", {}) as run:
            version = registry.log_generator(run, tmp_path / "generator.pt", generator, 6, 0, (1, 28, 28), domains=2)
        model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    finally:
        mlflow.set_tracking_uri(None)
    assert model.metadata.get_output_schema().inputs[0].shape == (-1, 2, 28, 28)
    assert "N x 2 x 28 x 28: each latent vector's images in its 2 domains" in version.description
    latent = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    expected = generative.sample(generator, torch.from_numpy(latent)).numpy()
    assert np.allclose(model.predict(latent), expected, atol=1e-6)


# --- the tiny workspace's registry ---------------------------------------------------------------

@pytest.fixture
def client(built, monkeypatch):
    """MLflow pointed at the built tiny workspace's store (read only), for `models:/` URIs too."""
    import mlflow

    uri = f"sqlite:///{built.path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


def classifier_stages(built) -> dict[str, str]:
    """{stage: its output}, for every classifier the tiny params train."""
    params = built.params()
    return {**{f"train-linear@{n}": f"models/linear/{n}.pt" for n in params["train_linear"]},
            **{f"train-cnn@{n}": f"models/cnn/{n}.pt" for n in params["train_cnn"]}}


def lock_md5(built, path: str) -> str:
    lock = yaml.safe_load((built.path / "dvc.lock").read_text())
    return next(out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", []) if out["path"] == path)


@pytest.mark.slow
def test_every_classifier_registers_a_version_built_from_its_dvc_output(built, client):
    stages = classifier_stages(built)
    assert len(stages) == 10
    [robust] = client.search_model_versions(f"name = '{registry.registered_name('train-cnn@mnist-robust')}'")
    assert robust.tags["adversarial_training"] == "fgsm_rs, eps 0.3"
    assert 0 <= float(robust.tags["holdout_robust_accuracy"]) <= 1
    for stage, output in stages.items():
        run_id = json.loads((built.path / "tracking" / f"{stage}.json").read_text())["run_id"]
        [version] = client.search_model_versions(f"name = '{registry.registered_name(stage)}'")
        assert version.run_id == run_id and int(version.version) == 1, stage
        run = client.get_run(run_id)
        md5 = lock_md5(built, output)
        assert run.data.tags["dvc.output.path"] == version.tags["dvc.output.path"] == output
        assert run.data.tags["dvc.output.md5"] == version.tags["dvc.output.md5"] == md5
        assert version.tags["test_accuracy"] == f"{run.data.metrics['test_accuracy']:.4f}"
        assert 0 < run.data.metrics["mlflow_model_seconds"] < 120
        info = registry_model_info(version)
        dataset = version.tags["dataset"]
        shape = [-1, *data_shape(dataset)]
        assert info.signature.inputs.inputs[0].shape == tuple(shape) and info.signature.outputs.inputs[0].shape == (-1, 10)
        assert "pytorch" in info.flavors and info.saved_input_example_info["type"] == "ndarray"


def data_shape(dataset: str) -> tuple[int, ...]:
    return {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}[dataset]


def registry_model_info(version):
    from mlflow.models import get_model_info

    return get_model_info(f"models:/{version.name}/{version.version}")


@pytest.mark.slow
def test_the_report_promotes_the_best_classifier_of_each_dataset(built, client):
    metrics = {stage: json.loads((built.path / "metrics" / out.removeprefix("models/").replace(".pt", ".json")).read_text())
               for stage, out in classifier_stages(built).items()}
    claims = json.loads((built.path / "reports/claims.json").read_text())
    supported = supported_claims(claims)
    champions = {}
    for stage, m in metrics.items():
        rm = client.get_registered_model(registry.registered_name(stage))
        [version] = client.search_model_versions(f"name = '{rm.name}'")
        model_key = stage.removeprefix("train-").replace("@", "/")
        expected = supported.get(model_key, [])
        assert version.tags["claims"] == (", ".join(expected) or "none"), stage
        assert {k for k in version.tags if k.startswith("claim.")} == {f"claim.{c}" for c in expected}
        if registry.CHAMPION in rm.aliases:
            champions[m.get("dataset", "mnist")] = (stage, rm.aliases[registry.CHAMPION], version.version)
    best = {}
    for stage, m in sorted(metrics.items(), key=lambda item: item[0].removeprefix("train-").replace("@", "/")):
        dataset = m.get("dataset", "mnist")
        if dataset not in best or m["test_accuracy"] > metrics[best[dataset]]["test_accuracy"]:
            best[dataset] = stage
    assert {d: stage for d, (stage, _, _) in champions.items()} == best
    assert all(alias == version for _, alias, version in champions.values())
    report_run = client.get_run(json.loads((built.path / "reports/run.json").read_text())["run_id"])
    assert report_run.data.tags["champion.mnist"] == f"{registry.registered_name(best['mnist'])}@champion"


def champion(client, dataset: str):
    """The version with the alias champion among the registered models of `dataset`'s classifiers."""
    found = [client.get_model_version_by_alias(rm.name, registry.CHAMPION) for rm in client.search_registered_models()
             if registry.CHAMPION in rm.aliases]
    [version] = [v for v in found if v.tags.get("dataset") == dataset]
    return version


def first_test_images(built, dataset: str, n: int = 100) -> np.ndarray:
    split = data.load_split(built.path / "data/prepared", dataset, "test")
    return split.images[:n].float().div(255).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_the_champion_predicts_as_load_classifier(built, client, dataset):
    import mlflow

    version = champion(client, dataset)
    uri = f"models:/{version.name}@{registry.CHAMPION}"
    images = first_test_images(built, dataset)
    assert images.shape[1:] == data_shape(dataset) and len(images) == (100 if dataset == "mnist" else 40)  # tiny CIFAR-10: 40
    probabilities = mlflow.pyfunc.load_model(uri).predict(images)
    classifier, _ = load_classifier(built.path / version.tags["dvc.output.path"])
    with torch.no_grad():
        logits = classifier(torch.from_numpy(images))
    assert probabilities.shape == (len(images), 10)
    assert np.array_equal(probabilities.argmax(1), logits.argmax(1).numpy())
    assert np.allclose(probabilities, torch.softmax(logits, 1).numpy(), atol=1e-5)


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_posted_batch(built, client, tmp_path):
    uri = f"models:/{champion(client, 'mnist').name}@{registry.CHAMPION}"
    images = first_test_images(built, "mnist", 20)
    port = free_port()
    env = {**built.env, "MLFLOW_TRACKING_URI": f"sqlite:///{built.path / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log_path = tmp_path / "serve.log"
    mlflow = Path(sys.executable).parent / "mlflow"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(mlflow), "models", "serve", "-m", uri, "--env-manager", "local",
                                   "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        problem = store.wait_until_healthy(url, SERVE_WAIT_S, server, poll_s=0.5)
        assert problem is None, f"mlflow models serve {problem}:\n{log_path.read_text()}"
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": images.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = np.array(json.loads(response.read())["predictions"])
    finally:
        stop_group(server)
    import mlflow as mlflow_module

    expected = mlflow_module.pyfunc.load_model(uri).predict(images)
    assert predictions.shape == (20, 10)
    assert np.array_equal(predictions.argmax(1), expected.argmax(1))


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["conditional", "stylegan-2019", "cogan-2016"])
def test_the_generator_model_returns_images(built, client, entry):
    import mlflow

    stage = f"train-gan@{entry}"
    run_id = json.loads((built.path / "tracking" / f"{stage}.json").read_text())["run_id"]
    version = registry.version_of_run(client, stage, run_id)
    gan = built.params()["train_gan"][entry]
    conditional = gan_eras.ERAS[gan["era"]].conditional
    assert version.tags["dvc.output.path"] == f"models/gan/{entry}/epoch_02.pt"
    assert version.tags["dvc.output.md5"] == registry.file_md5(built.path / f"models/gan/{entry}/epoch_02.pt")
    assert version.description.startswith(f"`{stage}`: the GAN's generator")
    columns = gan["latent_dim"] + (10 if conditional else 0)
    latent = np.random.default_rng(0).standard_normal((7, columns)).astype(np.float32)
    if conditional:
        latent[:, gan["latent_dim"]:] = np.eye(10, dtype=np.float32)[np.arange(7)]
    images = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}").predict(latent)
    assert images.shape == (7, gan_eras.ERAS[gan["era"]].domains, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0
