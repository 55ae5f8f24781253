"""What a logged model refuses before its network sees a batch: more rows than it takes per request,
NaN or infinite values, and (a classifier) values outside [0, 1]. A refusal is an MlflowException
with the error code INVALID_PARAMETER_VALUE, whose message says what was wrong and where:
`mlflow.pyfunc.load_model(uri).predict(batch)` raises it, and `mlflow models serve` answers it with
HTTP 400 and the message in its JSON body, after a summary of the data (the scoring server turns an
MlflowException raised in predict into its error code's status; any other exception into a 400
saying only that the model failed). Without these checks a classifier answers pixels in 0-255 with
a confident class and NaN pixels with NaN probabilities, and the server runs the network on any
batch, however large. (The server reads and parses a request's whole body before the model sees
it: MAX_BATCH bounds what the network costs, not what parsing a larger body costs.)

`registry.py` ships this file inside each model it logs (the model's `code/` folder, as the module
`dlcourse_guards`) and makes it the model's pyfunc loader: MLflow's pyfunc loader for PyTorch
models, with these checks before each prediction. So this file imports only numpy and MLflow,
never this package: a model loads wherever its pinned `mlflow`, `torch` and `numpy` are installed.
The checks' settings are the pyfunc flavour's `config` in the model's MLmodel (`max_batch`,
`input_range`, `rows`); like the `device` there, they can be overridden when loading
(`model_config=` or MLFLOW_PYFUNC_INFERENCE_CONFIG).
"""

from __future__ import annotations

import numpy as np

# Rows per request. Served with `mlflow models serve -w 1`, a request of 1,000 images raised the
# server's peak memory from 0.8 GB idle to 1.1 GB (MNIST, mnistnet) and 1.3 GB (CIFAR-10, airnet).
MAX_BATCH = 1000
CLASSIFIER_RANGE = (0.0, 1.0)
SETTINGS = ("max_batch", "input_range", "rows")  # the keys of the pyfunc config that are the checks'


def refusal(message: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def position(index: tuple[int, ...], rows: str) -> str:
    """Where a value is: `(3, 0, 5, 7)` -> 'image 3, channel 0, row 5, column 7' (`rows`: "images")."""
    row = f"{rows.removesuffix('s')} {int(index[0])}"
    inside = [int(i) for i in index[1:]]
    names = {1: ("column",), 3: ("channel", "row", "column")}.get(len(inside))
    if names is None:
        return f"{row} at {tuple(inside)}" if inside else row
    return ", ".join([row, *(f"{name} {i}" for name, i in zip(names, inside))])


def check_batch(batch, max_batch: int = MAX_BATCH, input_range: tuple[float, float] | None = None,
                rows: str = "rows") -> None:
    """Raise `refusal(...)` unless `batch` (N x ..., after MLflow's own checks of its shape and dtype)
    holds at most `max_batch` rows of finite values, all within `input_range` when one is given."""
    values = np.asarray(batch)
    if len(values) > max_batch:
        raise refusal(f"{len(values)} {rows} in one request, more than the {max_batch} this model takes per "
                      f"request: send them in requests of at most {max_batch} {rows}")
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        raise refusal(f"non-finite input: {int(bad.sum())} of {values.size} values are NaN or infinite, the first "
                      f"({values[first]}) at {position(first, rows)}; the model takes finite float32 values")
    if input_range is not None and values.size:
        low, high = (float(v) for v in input_range)
        found_low, found_high = float(values.min()), float(values.max())
        if found_low < low or found_high > high:
            outside = (values < low) | (values > high)
            first = tuple(np.argwhere(outside)[0])
            raise refusal(f"input values outside [{low:g}, {high:g}]: they range from {found_low:g} to {found_high:g} "
                          f"({int(outside.sum())} of {values.size} values outside, the first, {float(values[first]):g}, "
                          f"at {position(first, rows)}); the model expects float32 {rows} in [{low:g}, {high:g}], "
                          f"e.g. pixels divided by 255")


class Guarded:
    """A pyfunc model implementation (`predict(data, params)`) that checks each batch first."""

    def __init__(self, model, max_batch: int = MAX_BATCH, input_range=None, rows: str = "rows"):
        self.model, self.max_batch, self.input_range, self.rows = model, int(max_batch), input_range, rows

    def predict(self, data, params=None):
        check_batch(data, self.max_batch, self.input_range, self.rows)
        return self.model.predict(data, params=params)

    def get_raw_model(self):
        return self.model.get_raw_model()


def _load_pyfunc(path, model_config=None):
    """MLflow's pyfunc loader interface: the model of the `mlflow.pytorch` flavour at `path` (its
    data folder), guarded. `model_config`: the pyfunc flavour's config, with any overrides."""
    import mlflow.pytorch

    config = dict(model_config or {})
    settings = {key: config.pop(key) for key in SETTINGS if key in config}
    return Guarded(mlflow.pytorch._load_pyfunc(path, config or None), **settings)
