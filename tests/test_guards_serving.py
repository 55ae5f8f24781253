"""Issue #23: a logged model refuses what its network would answer with nonsense (pixels in 0-255,
NaN or infinite values, more images than a request may hold), with an error that says what was wrong
and where, when loaded with `mlflow.pyfunc` and when served with `mlflow models serve` (HTTP 400),
without this package's code."""

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dlcourse.course import data
from dlcourse.course.gans import eras as gan_eras
from dlcourse.course.models import Classifier, Probabilities, save_classifier
from dlcourse.files import save_torch
from dlcourse.pipeline import guards, registry, store, tracking
from workspace import free_port, stop_group

SERVE_WAIT_S = 120
MNIST = (1, 28, 28)
LATENT = 6


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny MNIST classifier and a GAN generator, logged and registered as the train stages do, in
    a store of their own; each model also downloaded to a folder."""
    import mlflow

    root = tmp_path_factory.mktemp("guards")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    torch.manual_seed(0)
    classifier = Classifier("mnistnet", {"widths": [4, 8], "hidden": 16}, channels=1).eval()
    save_classifier(classifier, "mnist", data.MNIST_CLASSES, root / "classifier.pt")
    generator, _ = gan_eras.build("gan-2014", LATENT, 4, MNIST, 0)
    save_torch({"generator": generator.state_dict()}, root / "generator.pt")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        try:
            with tracking.stage_run("train-cnn@tiny", {}) as run:
                version = registry.log_classifier(run, root / "classifier.pt",
                                                  torch.randint(0, 256, (2, *MNIST), dtype=torch.uint8), 0.5)
            with tracking.stage_run("train-gan@tiny", {}) as run:
                gan_version = registry.log_generator(run, root / "generator.pt", generator, LATENT, 0, MNIST)
            paths = {name: mlflow.artifacts.download_artifacts(f"models:/{v.name}/{v.version}", dst_path=str(root / name))
                     for name, v in {"classifier": version, "generator": gan_version}.items()}
        finally:
            mlflow.set_tracking_uri(None)
    return {"root": root, "tracking_uri": uri, "uri": f"models:/{version.name}/{version.version}",
            "classifier": paths["classifier"], "generator": paths["generator"], "network": Probabilities(classifier)}


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *MNIST), dtype=np.float32)


def with_nan(n: int = 5) -> np.ndarray:
    batch = images(n)
    batch[2, 0, 3, 4] = np.nan
    batch[4, 0, 0, 1] = np.nan
    return batch


def refused(model, batch) -> str:
    """The message of the MlflowException with which `model` refuses `batch` (INVALID_PARAMETER_VALUE: a 400)."""
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as refusal:
        model.predict(batch)
    assert refusal.value.error_code == "INVALID_PARAMETER_VALUE"
    assert refusal.value.get_http_status_code() == 400
    return refusal.value.message


# --- the model loaded with mlflow.pyfunc ---------------------------------------------------------

def test_the_model_ships_its_checks_and_keeps_the_pytorch_flavour(logged):
    mlmodel = yaml.safe_load((Path(logged["classifier"]) / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == registry.GUARDS_MODULE and pyfunc["code"] == "code"
    assert pyfunc["config"] == {"device": None, "max_batch": guards.MAX_BATCH, "input_range": [0.0, 1.0], "rows": "images"}
    shipped = Path(logged["classifier"]) / pyfunc["code"] / f"{registry.GUARDS_MODULE}.py"
    assert shipped.read_text() == Path(guards.__file__).read_text()
    assert mlmodel["flavors"]["pytorch"]["model_data"] == "data"
    assert (Path(logged["classifier"]) / "data" / "model.pt2").exists()  # the torch.export graph, as before


def test_a_good_batch_gets_the_networks_probabilities(logged):
    import mlflow

    model = mlflow.pyfunc.load_model(logged["classifier"])
    for batch in (images(1), images(7), images(guards.MAX_BATCH), np.zeros((3, *MNIST), np.float32),
                  np.ones((3, *MNIST), np.float32)):
        probabilities = model.predict(batch)
        with torch.no_grad():
            expected = logged["network"](torch.from_numpy(batch)).numpy()
        assert probabilities.shape == (len(batch), 10)
        assert np.allclose(probabilities, expected, atol=1e-6)


def test_pixels_in_0_255_are_refused_with_the_range_found(logged):
    import mlflow

    batch = np.round(images(4) * 255)
    message = refused(mlflow.pyfunc.load_model(logged["classifier"]), batch)
    low, high = batch.min(), batch.max()
    assert f"input values outside [0, 1]: they range from {low:g} to {high:g}" in message
    first = tuple(np.argwhere(batch > 1)[0])
    assert f"the first, {batch[first]:g}, at image {first[0]}, channel 0, row {first[2]}, column {first[3]}" in message
    assert "the model expects float32 images in [0, 1], e.g. pixels divided by 255" in message


def test_values_below_0_are_refused(logged):
    import mlflow

    batch = images(3)
    batch[1, 0, 27, 27] = -0.5
    message = refused(mlflow.pyfunc.load_model(logged["classifier"]), batch)
    assert "outside [0, 1]" in message and "from -0.5 to" in message
    assert "1 of 2352 values outside, the first, -0.5, at image 1, channel 0, row 27, column 27" in message


@pytest.mark.parametrize("value, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_values_are_refused_with_where_they_are(logged, value, shown):
    import mlflow

    batch = with_nan()
    batch[np.isnan(batch)] = value
    message = refused(mlflow.pyfunc.load_model(logged["classifier"]), batch)
    assert (f"non-finite input: 2 of 3920 values are NaN or infinite, the first ({shown}) at image 2, channel 0, "
            "row 3, column 4; the model takes finite float32 values") in message


def test_a_batch_over_the_maximum_is_refused(logged):
    import mlflow

    message = refused(mlflow.pyfunc.load_model(logged["classifier"]), np.zeros((guards.MAX_BATCH + 1, *MNIST), np.float32))
    assert (f"{guards.MAX_BATCH + 1} images in one request, more than the {guards.MAX_BATCH} this model takes per "
            f"request: send them in requests of at most {guards.MAX_BATCH} images") in message


def test_an_empty_batch_gets_an_empty_answer(logged):
    import mlflow

    assert mlflow.pyfunc.load_model(logged["classifier"]).predict(images(0)).shape == (0, 10)


def test_the_maximum_can_be_raised_when_loading(logged):
    import mlflow

    model = mlflow.pyfunc.load_model(logged["classifier"], model_config={"max_batch": guards.MAX_BATCH + 1})
    assert model.predict(np.zeros((guards.MAX_BATCH + 1, *MNIST), np.float32)).shape == (guards.MAX_BATCH + 1, 10)
    assert "outside [0, 1]" in refused(model, images(2) * 255)  # the other checks stay


def test_the_generator_refuses_non_finite_noise(logged):
    import mlflow

    model = mlflow.pyfunc.load_model(logged["generator"])
    noise = np.random.default_rng(0).standard_normal((4, LATENT)).astype(np.float32)
    generated = model.predict(noise)
    assert generated.shape == (4, *MNIST) and np.isfinite(generated).all()
    noise[1, 3] = np.nan
    assert "the first (nan) at latent vector 1, column 3" in refused(model, noise)
    assert f"{guards.MAX_BATCH + 1} latent vectors in one request" in refused(
        model, np.zeros((guards.MAX_BATCH + 1, LATENT), np.float32))


def without_this_package(root: Path) -> dict[str, str]:
    """The environment of a process in which `import dlcourse` stops it: the models must not need it."""
    blocker = root / "blocker" / "dlcourse"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text("raise SystemExit('the model imported dlcourse')\n")
    return {**os.environ, "PYTHONPATH": str(blocker.parent), "MLFLOW_DISABLE_TELEMETRY": "true",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_the_models_load_and_refuse_without_this_package(logged):
    script = textwrap.dedent("""
        import sys
        import mlflow, numpy as np
        from mlflow.exceptions import MlflowException

        classifier, generator = (mlflow.pyfunc.load_model(path) for path in sys.argv[1:])
        print(classifier.predict(np.full((3, 1, 28, 28), 0.5, np.float32)).shape,
              generator.predict(np.zeros((2, 6), np.float32)).shape)
        try:
            classifier.predict(np.full((3, 1, 28, 28), 255.0, np.float32))
        except MlflowException as refusal:
            print(refusal.error_code, refusal.message)
    """)
    result = subprocess.run([sys.executable, "-c", script, logged["classifier"], logged["generator"]],
                            cwd=logged["root"], env=without_this_package(logged["root"]), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    shapes, refusal = result.stdout.strip().splitlines()
    assert shapes == "(3, 10) (2, 1, 28, 28)"
    assert refusal.startswith("INVALID_PARAMETER_VALUE input values outside [0, 1]: they range from 255 to 255")


# --- mlflow models serve ---------------------------------------------------------------------------

def post(url: str, batch) -> tuple[int, dict]:
    """POST `batch` as MLflow's JSON ({"inputs": ...}, NaN written as NaN); the status and the JSON answer."""
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": batch.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mlflow_models_serve_answers_400_with_the_reason(logged, tmp_path):
    """The README's command, in an environment without this package: 200 for good batches up to the
    maximum, 400 with the reason in the JSON body's message for anything else."""
    import mlflow

    port = free_port()
    env = {**without_this_package(logged["root"]), "MLFLOW_TRACKING_URI": logged["tracking_uri"]}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", logged["uri"],
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        problem = store.wait_until_healthy(url, SERVE_WAIT_S, server, poll_s=0.5)
        assert problem is None, f"mlflow models serve {problem}:\n{log_path.read_text()}"
        answers = {name: post(url, batch) for name, batch in {
            "good": images(20), "most": np.zeros((guards.MAX_BATCH, *MNIST), np.float32),
            "0-255": np.round(images(20) * 255), "nan": with_nan(),
            "too many": np.zeros((guards.MAX_BATCH + 1, *MNIST), np.float32)}.items()}
    finally:
        stop_group(server)
    status, body = answers["good"]
    assert status == 200, body
    expected = mlflow.pyfunc.load_model(logged["classifier"]).predict(images(20))
    assert np.allclose(np.array(body["predictions"]), expected, atol=1e-6)
    status, body = answers["most"]
    assert status == 200 and len(body["predictions"]) == guards.MAX_BATCH
    reasons = {"0-255": "input values outside [0, 1]: they range from 0 to 255",
               "nan": "non-finite input: 2 of 3920 values are NaN or infinite, the first (nan) at image 2, channel 0, "
                      "row 3, column 4",
               "too many": f"{guards.MAX_BATCH + 1} images in one request, more than the {guards.MAX_BATCH}"}
    for name, reason in reasons.items():
        status, body = answers[name]
        assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), (name, body)
        assert reason in body["message"], (name, body["message"][-500:])
