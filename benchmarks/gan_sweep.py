"""Which GAN settings give digits that the MNIST classifier recognises? Trains `train_gan`
variants and scores the sampled generator after every epoch exactly as `score-gan` does (its
confidence, the share of each digit, the Inception-Score analogue, the Fréchet distance), so a
change of the defaults in params.yaml rests on measured numbers.

Each variant is a JSON object of `train_gan` overrides; one process per variant, so several can
share a GPU. One JSON line per epoch goes to stdout (and to --out).
Needs `dvc repro preprocess train-cnn@mnist`.
Run: python benchmarks/gan_sweep.py '{"conditional": true, "ema_decay": 0.999}' [--out results.jsonl]
"""

import argparse
import json
import time

import torch

from dlcourse import data, generative, params
from dlcourse.models import load_classifier
from dlcourse.paths import MODELS, PREPARED
from dlcourse.training import predict_proba, resolve_device, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", help="JSON object of train_gan overrides")
    parser.add_argument("--out", help="append the JSON lines to this file too")
    args = parser.parse_args()
    overrides = json.loads(args.overrides)
    all_params = params.load()
    p = all_params.train_gan.model_validate({**all_params.train_gan.model_dump(), **overrides})
    s = all_params.score_gan

    device = resolve_device(all_params.device)
    rng = seed_everything(all_params.seed, device)
    train = data.load_split(PREPARED, "mnist", "train")
    classifier, _ = load_classifier(MODELS / f"{s.classifier}.pt", device)
    features = generative.hooked_features(classifier, s.feature_layer)
    test = data.load_split(PREPARED, "mnist", "test").images.to(device).float().div_(255)
    real_features = features(test)
    real_confident = generative.classifier_confidence(predict_proba(classifier, test).cpu(), s.confident)

    num_classes = len(train.classes) if p.conditional else 0
    generator = generative.Generator(p.latent_dim, p.width, num_classes).to(device)
    discriminator = generative.Discriminator(p.width, num_classes).to(device)
    opt_g, opt_d = generative.make_optimizers(generator, discriminator, p.lr, (p.beta1, p.beta2))
    ema = generative.exponential_moving_average(generator, p.ema_decay) if p.ema_decay else None
    noise = generative.fixed_noise(s.samples, p.latent_dim, all_params.seed + 2).to(device)
    asked = generative.sample_labels(s.samples, num_classes, device)

    def score(epoch: int, history: generative.GanHistory) -> None:
        scores = generative.score_generator(ema.module if ema else generator, noise, asked, classifier, features,
                                            real_features, s.confident)
        fractions = scores.pop("class_fractions")
        line = json.dumps({"variant": overrides, "epoch": epoch, "train_seconds": round(sum(history.epoch_seconds), 1),
                           **{k: round(v, 4) for k, v in scores.items()}, "rarest_digit": round(min(fractions), 4),
                           "real_confident_fraction": round(real_confident["confident_fraction"], 4),
                           "device": str(device), "threads": torch.get_num_threads()})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as sink:
                sink.write(line + "\n")

    start = time.perf_counter()
    generative.train_gan(generator, discriminator, opt_g, opt_d, train.images, train.labels, ema=ema, epochs=p.epochs,
                         batch_size=p.batch_size, rng=rng, device=device, on_epoch_end=score)
    print(f"# {overrides}: {time.perf_counter() - start:.1f} s with scoring", flush=True)


if __name__ == "__main__":
    main()
