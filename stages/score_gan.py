"""Stage `score-gan@<entry>`: a train-gan entry's samples judged by the project's own classifier (no
downloaded weights), the same way for every era: its confidence, the class coverage of its samples,
an Inception-Score analogue, and in its penultimate feature space the Fréchet distance and precision /
recall (Kynkäänniemi et al. 2019), beside real training images scored the same way. Every epoch's
checkpoint gets the cheap scores on `curve_samples` samples (the Fréchet-distance curve); the last
one gets all of them on `samples`. A coupled GAN (cogan-2016) is judged domain by domain, its negatives
negated back for the classifier of digits: its curve and main scores are its digits', and it gets the
fraction of latent vectors whose two images show the same digit. A stage of its own, so that editing
the classifier does not retrain the GANs."""

import sys
import time

import pandas as pd
import torch

from dlcourse import progress
from dlcourse.course import data
from dlcourse.course.gans import cogan, eras as gan_eras, metrics as gan_metrics, generative
from dlcourse.files import check_finite_tensors, load_torch, write_csv, write_json
from dlcourse.course.training import resolve_device, seed_everything
from dlcourse.pipeline import layout
from dlcourse.pipeline.stage import stage


def scoring_noise(latent_dim: int, samples: int, curve_samples: int, seed: int, device) -> torch.Tensor:
    """The latent vectors every checkpoint is judged on: the first `curve_samples` for the curve, the first
    `samples` for the last checkpoint."""
    return generative.fixed_noise(max(samples, curve_samples), latent_dim, seed).to(device)


def score_checkpoints(generator: torch.nn.Module, checkpoints: list, judge: gan_metrics.Judge, samples: int,
                      curve_samples: int, seed: int, num_classes: int, device, label: str | None = None,
                      judged: torch.nn.Module | None = None) -> tuple[list[dict], dict]:
    """The cheap scores of every checkpoint on `curve_samples` samples, and all the scores of the last
    on `samples`; the same noise (and, when conditional, every class equally often) for each. Each
    checkpoint's weights go into `generator`; what is judged is `judged` (a view of it: one domain of a
    coupled generator), else `generator`. With a `label`, the progress over the checkpoints on stderr."""
    judged = judged if judged is not None else generator
    noise = scoring_noise(generator.latent_dim, samples, curve_samples, seed, device)
    asked = generative.sample_labels(len(noise), num_classes, device)
    curve = []
    with progress.bar(label or "", len(checkpoints) + 1, "checkpoint", enabled=label is not None) as bar:
        for checkpoint in checkpoints:
            state = load_torch(checkpoint, map_location=device)
            weights = generative.sampler_weights(state)
            check_finite_tensors(weights, checkpoint)  # a diverged generator's samples would be scored as any other
            generator.load_state_dict(weights)
            scores = gan_metrics.score_generator(judged, noise[:curve_samples],
                                                 asked[:curve_samples] if num_classes else None, judge, full=False)
            curve.append({"epoch": state["epoch"], **scores})
            bar.update()
        final = gan_metrics.score_generator(judged, noise[:samples], asked[:samples] if num_classes else None, judge)
        bar.update()
    return curve, final


def main(entry: str) -> None:
    with stage("score-gan", entry, entry="train_gan", seed=seed_everything, device=resolve_device) as job:
        all_params, run, rng, device = job.params, job.run, job.rng, job.device
        p, gan = all_params.score_gan, job.entry
        test, train = (data.load_split(layout.PREPARED, gan.dataset, split) for split in ("test", "train"))
        for split, context in (("test", "evaluation"), ("train", "reference")):  # the real images compared to
            run.log_dataset(layout.prepared_split(gan.dataset, split), context)
        judge = gan_metrics.load_judge(layout.model(p.classifier), p.feature_layer, test.images, train.images,
                                       p.samples, p.confident, p.nearest_neighbours, rng, device)
        era = gan_eras.ERAS[gan.era]
        num_classes = len(train.classes) if era.conditional else 0
        generator, _ = gan_eras.build(gan.era, gan.latent_dim, gan.width, tuple(train.images.shape[1:]), num_classes)
        checkpoints = sorted(layout.gan_checkpoints(entry).glob("epoch_*.pt"))
        if not checkpoints:
            raise SystemExit(f"{layout.gan_checkpoints(entry)}: no checkpoint; run `dvc repro train-gan@{entry}` first")
        generator = generator.to(device)
        digits = cogan.judged_domains(generator)[cogan.DOMAINS[0]] if era.domains == 2 else None
        curve, final = score_checkpoints(generator, checkpoints, judge, p.samples, p.curve_samples, all_params.seed + 2,
                                         num_classes, device, label=job.name, judged=digits)
        noise = scoring_noise(gan.latent_dim, p.samples, p.curve_samples, all_params.seed + 2, device)[:p.samples]
        coupled = gan_metrics.score_domains(generator, noise, judge, final) if era.domains == 2 else {}

        table = pd.DataFrame(curve).drop(columns="class_fractions")
        write_csv(table, layout.gan_plots(entry) / "scores.csv")
        write_json(layout.gan_metrics(entry, "scores"), {
            "entry": entry, "era": gan.era, "year": era.year, "method": era.method, "paper": era.paper,
            "conditional": era.conditional, "dataset": gan.dataset, "generator_images": gan.epochs * gan.epoch_images,
            "classifier": p.classifier, "samples": p.samples, "curve_samples": p.curve_samples,
            "nearest_neighbours": p.nearest_neighbours, "confident_threshold": p.confident,
            "first_epoch": curve[0], "last_epoch": curve[-1], "generated": final, "real": judge.real, **coupled})
        job.write_timing({
            "score_seconds": round(time.perf_counter() - job.started, 3), "device": str(device),
            "threads": torch.get_num_threads()})

        for row in curve:
            run.log_metrics({f"curve.{k}": v for k, v in row.items() if k not in ("epoch", "class_fractions")},
                            step=row["epoch"])
        run.log_metrics({f"generated.{k}": v for k, v in final.items() if k != "class_fractions"})
        run.log_metrics({f"real.{k}": v for k, v in judge.real.items() if k != "class_fractions"})
        if coupled:  # domains.<name>.<score> and pair_agreement (log_metrics keeps the numbers)
            run.log_metrics(coupled)
    progress.summary(job.name, f"{100 * final['confident_fraction']:.1f} % of {p.samples} samples confidently "
                               f"classified, Fréchet distance {final['frechet_distance']:.2f}, "
                               f"{progress.counted(len(checkpoints), 'epoch')} scored"
                               + (f", {100 * coupled['pair_agreement']:.1f} % of pairs one digit" if coupled else ""))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python stages/score_gan.py <entry of params.yaml: train_gan>")
    main(sys.argv[1])
