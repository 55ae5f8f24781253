"""Stage `check-params`: params.yaml checked against its schema, and every network it describes
built once on a blank batch, before any other stage runs. The networks are built on PyTorch's meta
device (shapes, no memory): one over params.PARAMETER_BUDGET or ACTIVATION_BUDGET is refused naming
its entry, and the check never allocates what a size typo asks for.

Every stage depends on its output, which stays the same while params are valid: an edit of
params.yaml reruns this check (seconds), and a typo stops `dvc repro` here, before DVC removes the
outputs of the stage that reads the key.
"""

from pathlib import Path

import torch

from dlcourse import params
from dlcourse.files import atomic_path
from dlcourse.gan_eras import build, check_gan_buildable
from dlcourse.models import IMAGE_SHAPES, check_buildable

VERDICT = Path("checks/params.ok")


def main() -> None:
    try:
        check(params.load())
    except ValueError as exc:  # ParamsError too: the message names the key
        raise SystemExit(str(exc)) from None
    with atomic_path(VERDICT) as tmp:
        tmp.write_text("params.yaml is valid: the schema of src/dlcourse/params.py, every network built\n")


def check(p: params.Params) -> None:
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
        params.check_network_budget(key, f"the {entry.era} discriminator (width {entry.width})", discriminator,
                                    torch.zeros(2, *IMAGE_SHAPES[entry.dataset], device="meta"), labels)


if __name__ == "__main__":
    main()
