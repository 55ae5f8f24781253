"""params.yaml checked beyond its schema: every network it describes built once on a blank batch
on PyTorch's meta device (shapes, no memory) and held to a size budget (params.PARAMETER_BUDGET,
ACTIVATION_BUDGET), and the GAN judge's feature layer found in its classifier."""

from __future__ import annotations

import torch

from ..course.data import IMAGE_SHAPES
from ..course.gans.eras import ERAS, build, check_gan_buildable
from ..course.models import check_buildable
from . import params


def check(p: params.Params) -> None:
    """Raise ValueError, naming the params key, for a network that does not build or is over budget."""
    built = {}
    for name, entry in p.train_cnn.items():
        key = f"params.yaml: train_cnn.{name}"
        built[f"cnn/{name}"] = model = check_buildable(key, entry.architecture, entry.model, entry.dataset)
        params.check_network_budget(key, f"{entry.architecture}({entry.model})", model,
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
        params.check_network_budget(key, f"the {entry.era} generator (latent_dim {entry.latent_dim}, width {entry.width})",
                                    generator, torch.zeros(2, entry.latent_dim, device="meta"), labels)
        channels, *size = IMAGE_SHAPES[entry.dataset]  # a coupled GAN's images: its domains' channels, one by one
        params.check_network_budget(key, f"the {entry.era} discriminator (width {entry.width})", discriminator,
                                    torch.zeros(2, ERAS[entry.era].domains * channels, *size, device="meta"), labels)
