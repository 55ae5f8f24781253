"""params.yaml checked beyond its schema: every network it describes built once on a blank batch,
and the GAN judge's feature layer found in its classifier."""

from __future__ import annotations

from ..course.gans.eras import check_gan_buildable
from ..course.models import check_buildable
from . import params


def check(p: params.Params) -> None:
    """Raise ValueError, naming the params key, for a network that does not build."""
    built = {f"cnn/{name}": check_buildable(f"params.yaml: train_cnn.{name}", entry.architecture, entry.model,
                                            entry.dataset)
             for name, entry in p.train_cnn.items()}
    classifier = p.score_gan.classifier  # the schema checked it is a trained model: cnn/<entry> or linear/<run>
    model = built.get(classifier) or check_buildable(f"params.yaml: {classifier}", "reseau1", {}, "mnist")
    layers = dict(model.named_modules())
    if p.score_gan.feature_layer not in layers:
        linear = [name for name, module in layers.items() if type(module).__name__ == "Linear"]
        raise ValueError(f"params.yaml: score_gan.feature_layer: {classifier} has no layer "
                         f"{p.score_gan.feature_layer!r} (its Linear layers: {', '.join(linear)})")
    for name, entry in p.train_gan.items():
        check_gan_buildable(f"params.yaml: train_gan.{name}", entry.era, entry.latent_dim, entry.width, entry.dataset)
