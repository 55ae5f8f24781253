"""Stage `score-gan`: the GAN's samples judged by the project's own MNIST classifier (no downloaded
weights): its confidence, the class distribution, an Inception-Score analogue and a Fréchet
distance on its penultimate features, per epoch, beside the real test set's own values. A stage of
its own, so that editing the classifier does not retrain the GAN."""

import pandas as pd
import torch

from dlcourse import data, generative, params, tracking
from dlcourse.figures import plot_columns
from dlcourse.files import load_torch, write_csv, write_json
from dlcourse.models import load_classifier
from dlcourse.paths import METRICS, MODELS, PLOTS, PREPARED
from dlcourse.training import predict_proba, resolve_device, seed_everything, to_float


def main() -> None:
    all_params = params.load()
    p, gan = all_params.score_gan, all_params.train_gan
    with tracking.stage_run("score-gan", tracking.declared_params("score-gan", all_params)) as run:
        rng = seed_everything(all_params.seed)
        device = resolve_device(all_params.device)
        classifier, _ = load_classifier(MODELS / f"{p.classifier}.pt", device)
        features = generative.hooked_features(classifier, p.feature_layer)
        test = to_float(data.load_split(PREPARED, "mnist", "test").images, device)
        train = data.load_split(PREPARED, "mnist", "train").images
        # The floor of the Fréchet distance: as many real training images as samples, against the test set.
        real_sample = to_float(train[torch.randperm(len(train), generator=rng)[: p.samples]], device)

        real_probs = predict_proba(classifier, test)
        real_features = features(test)
        real = {
            "inception_score": generative.inception_score(real_probs.cpu())[0],
            **generative.classifier_confidence(real_probs.cpu(), p.confident),
            "frechet_distance_train_vs_test": generative.frechet_distance(features(real_sample), real_features),
        }

        num_classes = real_probs.shape[1] if gan.conditional else 0
        generator = generative.Generator(gan.latent_dim, gan.width, num_classes).to(device)
        noise = generative.fixed_noise(p.samples, gan.latent_dim, all_params.seed + 2).to(device)
        asked = generative.sample_labels(p.samples, num_classes, device)  # every digit equally often
        rows = []
        for checkpoint in sorted((MODELS / "gan").glob("epoch_*.pt")):
            state = load_torch(checkpoint, map_location=device)
            generator.load_state_dict(generative.sampler_weights(state))
            rows.append({"epoch": state["epoch"], **generative.score_generator(
                generator, noise, asked, classifier, features, real_features, p.confident)})
        metrics = {"samples": p.samples, "classifier": p.classifier, "confident_threshold": p.confident,
                   "conditional": gan.conditional, "first_epoch": rows[0], "generated": rows[-1], "real": real}

        table = pd.DataFrame(rows).drop(columns="class_fractions")
        write_csv(table, PLOTS / "gan" / "scores.csv")
        plot_columns(table, "epoch", [c for c in ("confident_fraction", "label_agreement") if c in table],
                     f"GAN samples classified with confidence >= {p.confident}"
                     + (" / as the digit asked for" if gan.conditional else ""),
                     PLOTS / "gan" / "confident_fraction.png", "epoch", "samples (%)")
        plot_columns(table, "epoch", ["frechet_distance"], "Fréchet distance to the real test set "
                     f"(real training images: {real['frechet_distance_train_vs_test']:.2f})",
                     PLOTS / "gan" / "frechet_distance.png", "epoch", "Fréchet distance", scale=1)
        write_json(METRICS / "gan" / "scores.json", metrics)

        for row in rows:
            run.log_metrics({f"curve.{k}": v for k, v in row.items() if k not in ("epoch", "class_fractions")},
                            step=row["epoch"])
        run.log_metrics({f"real.{k}": v for k, v in real.items()})
        for figure in ("confident_fraction.png", "frechet_distance.png"):
            run.log_artifact(PLOTS / "gan" / figure)


if __name__ == "__main__":
    main()
