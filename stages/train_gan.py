"""Stage `train-gan`: a DCGAN on MNIST (the course's last part, GANs). A checkpoint and a grid of
samples from the same fixed noise after every epoch (the progression the slides show across
years, here across epochs), losses as curves, and a latent-space interpolation.

A killed run goes on from its last checkpoint with `GAN_RESUME=1 dvc repro train-gan` (or
`python stages/train_gan.py --resume`); without it, the stage starts afresh.
"""

import os
import shutil
import sys

import pandas as pd
import torch

from dlcourse import data, generative, params, registry, tracking
from dlcourse.figures import image_grid
from dlcourse.files import load_torch, write_csv, write_json
from dlcourse.paths import METRICS, MODELS, PLOTS, PREPARED
from dlcourse.training import resolve_device, seed_everything

CHECKPOINTS, SAMPLES = MODELS / "gan", PLOTS / "gan" / "samples"


def main(resume: bool) -> None:
    all_params = params.load()
    p = all_params.train_gan
    with tracking.stage_run("train-gan", tracking.declared_params("train-gan", all_params),
                            tags={"gan.resume": str(resume).lower()}) as run:
        device = resolve_device(all_params.device)
        rng = seed_everything(all_params.seed, device)
        train = data.load_split(PREPARED, "mnist", "train")
        num_classes = len(train.classes) if p.conditional else 0
        generator = generative.Generator(p.latent_dim, p.width, num_classes).to(device)
        discriminator = generative.Discriminator(p.width, num_classes).to(device)
        opt_g, opt_d = generative.make_optimizers(generator, discriminator, p.lr, (p.beta1, p.beta2))
        ema = generative.exponential_moving_average(generator, p.ema_decay) if p.ema_decay else None
        sampler = ema.module if ema is not None else generator  # the generator whose samples are shown
        noise = generative.fixed_noise(p.grid_size, p.latent_dim, all_params.seed).to(device)
        noise_labels = generative.sample_labels(p.grid_size, num_classes, device)
        columns = 10 if p.conditional else 8

        fingerprint = generative.run_fingerprint(p.model_dump(), all_params.seed, train.images, train.labels)
        for stale in [*CHECKPOINTS.glob(".*.part"), *SAMPLES.glob(".*.part")]:  # left by a killed run
            stale.unlink()
        checkpoints = sorted(CHECKPOINTS.glob("epoch_*.pt"))

        def draw_samples(epoch: int) -> None:
            image_grid(generative.sample(sampler, noise, noise_labels).cpu(), [""] * len(noise),
                       SAMPLES / f"epoch_{epoch:02d}.png", f"DCGAN samples after epoch {epoch}", columns=columns, scale=0.9)

        start_epoch, history = 0, None
        if resume and checkpoints:
            try:
                generative.check_resumable(checkpoints[-1], fingerprint, p.epochs)
            except generative.ResumeError as exc:
                raise SystemExit(str(exc)) from None
            for checkpoint in checkpoints:  # a kill between a checkpoint and its samples: draw them now
                if not (SAMPLES / f"{checkpoint.stem}.png").exists():
                    state = load_torch(checkpoint, map_location=device)
                    sampler.load_state_dict(generative.sampler_weights(state))
                    draw_samples(state["epoch"])
            start_epoch, history = generative.load_checkpoint(
                checkpoints[-1], generator=generator, discriminator=discriminator, opt_g=opt_g, opt_d=opt_d,
                rng=rng, device=device, ema=ema)
            print(f"resuming from {checkpoints[-1]} (epoch {start_epoch} of {p.epochs})")
        else:  # persisted outputs (see dvc.yaml): a fresh run clears them itself
            shutil.rmtree(CHECKPOINTS, ignore_errors=True)
            shutil.rmtree(SAMPLES, ignore_errors=True)

        def end_of_epoch(epoch: int, history: generative.GanHistory) -> None:
            draw_samples(epoch)  # first: the checkpoint is the last thing an epoch writes
            generative.save_checkpoint(CHECKPOINTS / f"epoch_{epoch:02d}.pt", epoch=epoch, generator=generator,
                                       discriminator=discriminator, opt_g=opt_g, opt_d=opt_d, rng=rng, history=history,
                                       ema=ema, fingerprint=fingerprint)
            run.log_metrics({"epoch_seconds": history.epoch_seconds[-1]}, step=epoch)

        history = generative.train_gan(generator, discriminator, opt_g, opt_d, train.images, train.labels, ema=ema,
                                       epochs=p.epochs,
                                       batch_size=p.batch_size, rng=rng, device=device, start_epoch=start_epoch,
                                       history=history, on_epoch_end=end_of_epoch)

        ends = generative.fixed_noise(2 * p.interpolation_rows, p.latent_dim, all_params.seed + 1).to(device)
        rows = [generative.interpolate(sampler, ends[2 * i], ends[2 * i + 1], p.interpolation_steps,
                                       label=i % num_classes if num_classes else None)
                for i in range(p.interpolation_rows)]
        image_grid(torch.cat(rows).cpu(), [""] * p.interpolation_steps * p.interpolation_rows,
                   PLOTS / "gan" / "interpolation.png", "latent-space interpolation (slerp), one row per pair",
                   columns=p.interpolation_steps, scale=0.9)
        steps = list(range(1, len(history.g_loss) + 1))
        write_csv(pd.DataFrame({"step": steps, "generator": history.g_loss, "discriminator": history.d_loss}),
                  PLOTS / "gan" / "losses.csv")
        write_json(METRICS / "gan" / "train.json", {
            "epochs": p.epochs, "steps": len(steps),
            "final_generator_loss": history.g_loss[-1], "final_discriminator_loss": history.d_loss[-1]})
        write_json(METRICS / "timing" / "train-gan.json", {
            "train_seconds": round(sum(history.epoch_seconds), 3), "device": str(device),
            "epochs_timed": f"{start_epoch + 1}-{p.epochs}",  # a resumed run times its own epochs only
            "epoch_seconds": [round(s, 3) for s in history.epoch_seconds]})

        run.log_curve("curve.generator_loss", steps, history.g_loss)
        run.log_curve("curve.discriminator_loss", steps, history.d_loss)
        for path in [PLOTS / "gan" / "interpolation.png", *sorted(SAMPLES.glob("*.png"))]:
            run.log_artifact(path, "figures")
        run.log_artifact(sorted(CHECKPOINTS.glob("epoch_*.pt"))[-1], "checkpoints")
        registry.log_generator(run, sorted(CHECKPOINTS.glob("epoch_*.pt"))[-1], p.latent_dim, p.width, num_classes)


if __name__ == "__main__":
    main(resume="--resume" in sys.argv[1:] or os.environ.get("GAN_RESUME") == "1")
