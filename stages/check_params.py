"""Stage `check-params`: params.yaml checked against its schema, and every network it describes
built once on a blank batch, before any other stage runs.

Every stage depends on its output, which stays the same while params are valid: an edit of
params.yaml reruns this check (seconds), and a typo stops `dvc repro` here, before DVC removes the
outputs of the stage that reads the key.
"""

from pathlib import Path

from dlcourse import params, progress
from dlcourse.files import atomic_path
from dlcourse.gan_eras import check_gan_buildable
from dlcourse.models import check_buildable

VERDICT = Path("checks/params.ok")


def main() -> None:
    try:
        check(params.load())
    except ValueError as exc:  # ParamsError too: the message names the key
        raise SystemExit(str(exc)) from None
    with atomic_path(VERDICT) as tmp:
        tmp.write_text("params.yaml is valid: the schema of src/dlcourse/params.py, every network built\n")
    progress.summary("check-params", "params.yaml valid, every network built")


def check(p: params.Params) -> None:
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


if __name__ == "__main__":
    main()
