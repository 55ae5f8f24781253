"""params.yaml checked beyond its schema: every network it describes built once on a blank batch
on PyTorch's meta device (shapes, no memory) and held to a size budget (PARAMETER_BUDGET,
ACTIVATION_BUDGET), and the GAN judge's feature layer found in its classifier."""

from __future__ import annotations

import torch

from ..course.data import IMAGE_SHAPES
from ..course.gans.eras import ERAS, build, check_gan_buildable
from ..course.models import check_buildable
from . import params


# What check-params lets a network of params.yaml be: far above every network of the course (2.4 M
# parameters, 0.17 M activations per image at most), far below what takes a machine down. 50 M float32
# parameters are 200 MB, 0.8 GB with their gradients and Adam's two moments.
PARAMETER_BUDGET = 50_000_000  # per network
ACTIVATION_BUDGET = 5_000_000  # values output by its layers, per image


def meta_size(model, *inputs) -> tuple[int, int]:
    """A network built on PyTorch's meta device (shapes, no memory), run on `inputs` (a batch): its
    parameter count, and the values its leaf modules output per input."""
    outputs = [0]

    def count(module, args, output):
        if isinstance(output, torch.Tensor):
            outputs[0] += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(t.numel() for t in model.parameters()), outputs[0] // len(inputs[0])


def check_network_budget(name: str, what: str, model, *inputs) -> None:
    """Refuse a network (built on the meta device) over PARAMETER_BUDGET or ACTIVATION_BUDGET on
    `inputs`, naming the entry."""
    parameters, activations = meta_size(model, *inputs)
    if parameters > PARAMETER_BUDGET:
        raise ValueError(f"{name}: {what} has {parameters:,} parameters, over the budget of {PARAMETER_BUDGET:,} "
                         f"(checks.PARAMETER_BUDGET); a size with a digit too many?")
    if activations > ACTIVATION_BUDGET:
        raise ValueError(f"{name}: {what} outputs {activations:,} values per image, over the budget of "
                         f"{ACTIVATION_BUDGET:,} (checks.ACTIVATION_BUDGET); a size with a digit too many?")


def check(p: params.Params) -> None:
    """Raise ValueError, naming the params key, for a network that does not build or is over budget."""
    built = {}
    for name, entry in p.train_cnn.items():
        key = f"params.yaml: train_cnn.{name}"
        built[f"cnn/{name}"] = model = check_buildable(key, entry.architecture, entry.model, entry.dataset)
        check_network_budget(key, f"{entry.architecture}({entry.model})", model,
                                    torch.zeros(2, *IMAGE_SHAPES[entry.dataset], device="meta"))
    classifier = p.score_gan.classifier  # the schema checked it is a trained model: cnn/<entry> or linear/<run>
    model = built.get(classifier) or check_buildable(f"params.yaml: {classifier}", "reseau1", {}, "mnist")
    layers = dict(model.named_modules())
    if p.score_gan.feature_layer not in layers:
        linear = [name for name, module in layers.items() if type(module).__name__ == "Linear"]
        raise ValueError(f"params.yaml: score_gan.feature_layer: {classifier} has no layer "
                         f"{p.score_gan.feature_layer!r} (its Linear layers: {', '.join(linear)})")
    for name, entry in p.train_gan.items():
        key = f"params.yaml: train_gan.{name}"
        with torch.device("meta"):  # shapes only: no memory, whatever latent_dim and width say
            check_gan_buildable(key, entry.era, entry.latent_dim, entry.width, entry.dataset)
            generator, discriminator = build(entry.era, entry.latent_dim, entry.width, IMAGE_SHAPES[entry.dataset])
        labels = torch.zeros(2, dtype=torch.long, device="meta")
        check_network_budget(key, f"the {entry.era} generator (latent_dim {entry.latent_dim}, width {entry.width})",
                                    generator, torch.zeros(2, entry.latent_dim, device="meta"), labels)
        channels, *size = IMAGE_SHAPES[entry.dataset]  # a coupled GAN's images: its domains' channels, one by one
        check_network_budget(key, f"the {entry.era} discriminator (width {entry.width})", discriminator,
                                    torch.zeros(2, ERAS[entry.era].domains * channels, *size, device="meta"), labels)
