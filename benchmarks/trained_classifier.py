"""What a benchmark of one trained classifier starts from: params.yaml, the device it names, the model
(models/<name>.pt) and the first test images of the dataset it was trained on. Imported by the
benchmarks beside it (run as `python benchmarks/<script>.py`, this folder is on the path)."""

import torch

from dlcourse.course import data
from dlcourse.course.models import Classifier, load_classifier
from dlcourse.course.training import resolve_device
from dlcourse.pipeline import params
from dlcourse.pipeline.layout import MODELS, PREPARED


def load(name: str, images: int) -> tuple[params.Params, Classifier, torch.Tensor, torch.Tensor]:
    """params.yaml, the model `name` ("cnn/mnist") on its device, and its first `images` test images and labels."""
    all_params = params.load()
    device = resolve_device(all_params.device)
    model, checkpoint = load_classifier(MODELS / f"{name}.pt", device)
    test = data.load_split(PREPARED, checkpoint["dataset"], "test")
    return all_params, model, data.to_float(test.images[:images], device), test.labels[:images].to(device)
