"""Which GAN settings give digits that the MNIST classifier recognises? Trains a variant of one
`train_gan` entry (its era and recipe, with overrides) and scores the generator after every epoch
with the judge `score-gan` uses (gan_metrics.load_judge: the classifier's confidence, the share of
each digit, the Inception-Score analogue, the Fréchet distance, precision / recall), so a change of
the defaults in params.yaml rests on measured numbers.

Each variant is a JSON object of overrides of the entry; one process per variant, so several can
share a GPU. One JSON line per epoch goes to stdout (and to --out).
Needs `dvc repro preprocess train-cnn@mnist`.
Run: python benchmarks/gan_sweep.py dcgan-2015 '{"ema_decay": 0.999}' [--out results.jsonl] [--threads 2]
"""

import argparse
import json
import time

import torch

from dlcourse.course import data
from dlcourse.course.gans import cogan, eras as gan_eras, metrics as gan_metrics, generative, setup as gan_setup
from dlcourse.course.gans.setup import build_networks
from dlcourse.pipeline import params
from dlcourse.pipeline.layout import MODELS, PREPARED
from dlcourse.course.training import resolve_device, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("entry", help="the train_gan entry varied (gan-2014, dcgan-2015, ..., conditional)")
    parser.add_argument("overrides", nargs="?", default="{}", help="JSON object of overrides of the entry")
    parser.add_argument("--out", help="append the JSON lines to this file too")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = json.loads(args.overrides)
    all_params = params.load()
    p = params.GanParams.model_validate({**all_params.train_gan[args.entry].model_dump(), **overrides})
    s = all_params.score_gan

    device = resolve_device(all_params.device)
    rng = seed_everything(all_params.seed, device)
    train, test = data.load_split(PREPARED, p.dataset, "train"), data.load_split(PREPARED, p.dataset, "test")
    judge = gan_metrics.load_judge(MODELS / f"{s.classifier}.pt", s.feature_layer, test.images, train.images,
                                   s.samples, s.confident, s.nearest_neighbours, torch.Generator().manual_seed(0),
                                   device)
    num_classes = len(train.classes) if gan_eras.ERAS[p.era].conditional else 0
    generator, discriminator, opt_g, opt_d, ema = build_networks(p, tuple(train.images.shape[1:]), num_classes, device)
    coupled = gan_eras.ERAS[p.era].domains == 2  # as train-gan and score-gan: unpaired pairs, judged on the digits
    images = cogan.two_domains(train.images, all_params.seed) if coupled else train.images
    noise = generative.fixed_noise(s.samples, p.latent_dim, all_params.seed + 2).to(device)
    asked = generative.sample_labels(s.samples, num_classes, device)

    def score(epoch: int, history: generative.GanHistory) -> None:
        sampler = ema.module if ema else generator
        judged = cogan.judged_domains(sampler)[cogan.DOMAINS[0]] if coupled else sampler
        scores = gan_metrics.score_generator(judged, noise, asked, judge)
        scores.pop("class_fractions")
        line = json.dumps({"entry": args.entry, "variant": overrides, "epoch": epoch,
                           "train_seconds": round(sum(history.epoch_seconds), 1),
                           **{k: round(v, 4) for k, v in scores.items()},
                           "real_frechet_distance": round(judge.real["frechet_distance"], 4),
                           "device": str(device), "threads": torch.get_num_threads()})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as sink:
                sink.write(line + "\n")

    start = time.perf_counter()
    recipe = gan_setup.recipe(p)
    generative.train_gan(generator, discriminator, opt_g, opt_d, images, train.labels, recipe=recipe, ema=ema,
                         epochs=p.epochs, epoch_images=p.epoch_images, batch_size=p.batch_size, rng=rng, device=device,
                         on_epoch_end=score, progress=True)
    print(f"# {args.entry} {overrides}: {time.perf_counter() - start:.1f} s with scoring", flush=True)


if __name__ == "__main__":
    main()
