"""Stage `train-gan@<entry>`: one milestone of the slides' GAN timeline (params.yaml: train_gan.<entry>,
its era and recipe; the networks in src/dlcourse/course/gans/eras.py). A checkpoint and a grid of samples from
the same fixed noise after every epoch, losses as curves, and a latent-space interpolation. A coupled
GAN (cogan-2016) learns from unpaired pairs of its two domains (a digit, another digit's negative), and
its grids show each latent vector's two images side by side.

A killed run goes on from its last checkpoint with `GAN_RESUME=1 dvc repro train-gan@<entry>` (or
`python stages/train_gan.py <entry> --resume`); without it, the stage starts afresh.

With `processes: N` > 1 the stage runs again under `torchrun` (N processes on this machine), or as it
is under a `torchrun` started by hand (several machines), as train-cnn does (README): both networks in
DistributedDataParallel, each process a shard of every global batch. Only rank 0 writes outputs and
logs the MLflow run; every process resumes from the same checkpoint.
"""

import os
import sys
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from torchvision.utils import save_image

from dlcourse import progress
from dlcourse.course import data
from dlcourse.course.gans import cogan, eras as gan_eras, generative
from dlcourse.course.gans import resume as resume_
from dlcourse.course.gans.setup import build_networks, recipe
from dlcourse.course.divergence import check_gan_epoch, divergence_explained
from dlcourse.course.training import resolve_device, seed_everything
from dlcourse.files import atomic_path, write_csv, write_json
from dlcourse.pipeline import distributed, layout, params, registry
from dlcourse.pipeline.stage import Stage, stage


def save_grid(images: torch.Tensor, path, columns: int) -> None:
    """A caption-less grid of images in [0, 1], written atomically."""
    with atomic_path(path) as tmp:
        save_image(images, tmp, nrow=columns, padding=2, pad_value=1.0, format="png")


@dataclass
class Gan:
    """The entry's networks on their device, their optimizers, and the fixed noise its grids are drawn from."""
    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: torch.optim.swa_utils.AveragedModel | None
    sampler: nn.Module  # the generator whose samples are shown: the moving average when there is one
    noise: torch.Tensor
    noise_labels: torch.Tensor | None
    num_classes: int
    image_shape: tuple[int, ...]  # one domain's images (C x H x W): the dataset's
    domains: int  # images per latent vector (2 for a coupled GAN, along the channels)
    columns: int  # of its grids: each latent vector's images side by side


def build(p: params.GanParams, seed: int, train: data.Split, device: torch.device) -> Gan:
    era = gan_eras.ERAS[p.era]
    num_classes = len(train.classes) if era.conditional else 0
    image_shape = tuple(train.images.shape[1:])
    generator, discriminator, opt_g, opt_d, ema = build_networks(p, image_shape, num_classes, device, train.images)
    return Gan(generator, discriminator, opt_g, opt_d, ema, ema.module if ema is not None else generator,
               generative.fixed_noise(p.grid_size, p.latent_dim, seed).to(device),
               generative.sample_labels(p.grid_size, num_classes, device), num_classes, image_shape, era.domains,
               era.domains * (10 if num_classes else 8))


def training_split(p: params.GanParams, train: data.Split, seed: int) -> data.Split:
    """What the entry's GAN learns from: the training images, or for a coupled GAN their unpaired pairs
    (cogan.two_domains), labelled -1: none (a CoGAN is unconditional, and a pair's two digits differ)."""
    if gan_eras.ERAS[p.era].domains == 1:
        return train
    pairs = cogan.two_domains(train.images, seed)
    return data.Split(pairs, torch.full((len(pairs),), -1), train.classes)


def train_networks(job: Stage, gan: Gan, train: data.Split, resumed: dict | None, checkpoints, fingerprint: dict,
                   draw_samples) -> tuple[generative.GanHistory, int]:
    """Train from `resumed` (a checkpoint's contents) or from scratch; the history, and the epoch it started from."""
    p, rng, device = job.entry, job.rng, job.device
    start_epoch, history = 0, None
    if resumed is not None:
        start_epoch, history = resume_.load_checkpoint(
            resumed, generator=gan.generator, discriminator=gan.discriminator, opt_g=gan.opt_g, opt_d=gan.opt_d,
            rng=rng, device=device, ema=gan.ema)

    def end_of_epoch(epoch: int, history: generative.GanHistory) -> None:  # rank 0's
        # a diverged epoch stops here, before its samples or checkpoint are written
        check_gan_epoch(history.g_loss, history.d_loss, epoch, p.epochs,
                        {"generator": gan.generator, "discriminator": gan.discriminator})
        draw_samples(epoch)  # first: the checkpoint is the last thing an epoch writes
        resume_.save_checkpoint(checkpoints / f"epoch_{epoch:02d}.pt", epoch=epoch, generator=gan.generator,
                                discriminator=gan.discriminator, opt_g=gan.opt_g, opt_d=gan.opt_d, rng=rng,
                                history=history, ema=gan.ema, fingerprint=fingerprint)
        job.run.log_metrics({"epoch_seconds": history.epoch_seconds[-1]}, step=epoch)

    with divergence_explained(job.name, job.entry_params("lr_g", "lr_d", "beta1", "beta2", "penalty_weight")):
        history = generative.train_gan(gan.generator, gan.discriminator, gan.opt_g, gan.opt_d, train.images,
                                       train.labels, recipe=recipe(p), ema=gan.ema, epochs=p.epochs,
                                       epoch_images=p.epoch_images, batch_size=p.batch_size, rng=rng, device=device,
                                       start_epoch=start_epoch, history=history, on_epoch_end=end_of_epoch,
                                       progress=job.name, world=job.world)
    return history, start_epoch


@record  # a failing rank's traceback, in torchrun's summary of the failure
def main(entry: str, resume: bool) -> None:
    tags = {"gan.resume": str(resume).lower()}
    with stage("train-gan", entry, entry="train_gan", seed=seed_everything, device=resolve_device, distributed=distributed,
               tags=tags) as job:
        train = data.load_split(layout.PREPARED, job.entry.dataset, "train")
        if job.run is not None:
            job.run.set_tags({"gan.era": job.entry.era})
            job.run.log_dataset(layout.prepared_split(job.entry.dataset, "train"), "training")
        gan = build(job.entry, job.params.seed, train, job.device)
        train = training_split(job.entry, train, job.params.seed)  # a coupled GAN's: unpaired pairs of its domains
        checkpoints, samples = layout.gan_checkpoints(entry), layout.gan_plots(entry) / "samples"
        fingerprint = resume_.run_fingerprint(job.entry.model_dump(), job.params.seed, train.images, train.labels,
                                              prefix=f"train_gan.{entry}",
                                              by_length=hasattr(gan.generator, "set_progress"))

        def draw_samples(epoch: int) -> None:
            images = generative.sample(gan.sampler, gan.noise, gan.noise_labels).cpu()
            save_grid(cogan.side_by_side(images, gan.domains), samples / f"epoch_{epoch:02d}.png", gan.columns)

        resumed = None  # the contents of the checkpoint to go on from, sent by rank 0 to every process
        if job.is_main:  # rank 0 alone reads and writes the files
            try:
                resumed = resume_.start(checkpoints, samples, resume=resume, fingerprint=fingerprint,
                                        epochs=job.entry.epochs, sampler=gan.sampler, draw_samples=draw_samples,
                                        device=job.device)
            except resume_.ResumeError as exc:
                raise SystemExit(str(exc)) from None
        history, start_epoch = train_networks(job, gan, train, job.world.broadcast(resumed), checkpoints, fingerprint,
                                              draw_samples)
        if job.is_main:  # rank 0 alone writes the outputs
            write_outputs(job, entry, gan, history, start_epoch)
    if job.is_main:
        p = job.entry
        progress.summary(job.name, f"{p.era}, {progress.counted(p.epochs, 'epoch')} of {p.epoch_images} images "
                                   f"({progress.counted(len(history.g_loss), 'generator step')}), "
                                   f"final losses G {history.g_loss[-1]:.3f} D {history.d_loss[-1]:.3f}")


def write_outputs(job: Stage, entry: str, gan: Gan, history: generative.GanHistory, start_epoch: int) -> None:
    p, run, device = job.entry, job.run, job.device
    checkpoints, plots = layout.gan_checkpoints(entry), layout.gan_plots(entry)
    ends = generative.fixed_noise(2 * p.interpolation_rows, p.latent_dim, job.params.seed + 1).to(device)
    rows = [generative.interpolate(gan.sampler, ends[2 * i], ends[2 * i + 1], p.interpolation_steps,
                                   label=i % gan.num_classes if gan.num_classes else None)
            for i in range(p.interpolation_rows)]
    save_grid(cogan.side_by_side(torch.cat(rows).cpu(), gan.domains), plots / "interpolation.png",
              gan.domains * p.interpolation_steps)
    steps = list(range(1, len(history.g_loss) + 1))
    write_csv(pd.DataFrame({"step": steps, "generator": history.g_loss, "discriminator": history.d_loss}),
              plots / "losses.csv")
    write_json(layout.gan_metrics(entry, "train"), {
        "era": p.era, "epochs": p.epochs, "steps": len(steps), "generator_images": p.epochs * p.epoch_images,
        "generator_parameters": sum(t.numel() for t in gan.generator.parameters()),
        "discriminator_parameters": sum(t.numel() for t in gan.discriminator.parameters()),
        "final_generator_loss": history.g_loss[-1], "final_discriminator_loss": history.d_loss[-1]})
    job.write_timing({
        "train_seconds": round(sum(history.epoch_seconds), 3), "device": str(device),
        "threads": torch.get_num_threads(), "world_size": job.world.size,
        "epochs_timed": f"{start_epoch + 1}-{p.epochs}",  # a resumed run times its own epochs only
        "epoch_seconds": [round(s, 3) for s in history.epoch_seconds]})

    run.log_curve("curve.generator_loss", steps, history.g_loss)
    run.log_curve("curve.discriminator_loss", steps, history.d_loss)
    for path in [plots / "interpolation.png", *sorted((plots / "samples").glob("*.png"))]:
        run.log_artifact(path, "figures")
    run.log_artifact(sorted(checkpoints.glob("epoch_*.pt"))[-1], "checkpoints")
    registry.log_generator(run, sorted(checkpoints.glob("epoch_*.pt"))[-1], gan.sampler, p.latent_dim, gan.num_classes,
                           gan.image_shape, domains=gan.domains)


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--resume"]
    if len(arguments) != 1:
        raise SystemExit("usage: python stages/train_gan.py <entry of params.yaml: train_gan> [--resume]")
    main(arguments[0], resume="--resume" in sys.argv[1:] or os.environ.get("GAN_RESUME") == "1")
