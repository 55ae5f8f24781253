"""Stage `train-gan@<entry>`: one milestone of the slides' GAN timeline (params.yaml: train_gan.<entry>,
its era and recipe; the networks in src/dlcourse/gan_eras.py). A checkpoint and a grid of samples from
the same fixed noise after every epoch, losses as curves, and a latent-space interpolation.

A killed run goes on from its last checkpoint with `GAN_RESUME=1 dvc repro train-gan@<entry>` (or
`python stages/train_gan.py <entry> --resume`); without it, the stage starts afresh.

With `processes: N` > 1 the stage runs again under `torchrun` (N processes on this machine), or as it
is under a `torchrun` started by hand (several machines), as train-cnn does (README): both networks in
DistributedDataParallel, each process a shard of every global batch. Only rank 0 writes outputs and
logs the MLflow run; every process resumes from the same checkpoint.
"""

import os
import shutil
import sys
from contextlib import nullcontext

import pandas as pd
import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torchvision.utils import save_image

from dlcourse import data, distributed, gan_eras, generative, params, progress, registry, tracking
from dlcourse.files import atomic_path, load_torch, write_csv, write_json
from dlcourse.paths import METRICS, MODELS, PLOTS, PREPARED
from dlcourse.training import resolve_device, seed_everything


def save_grid(images: torch.Tensor, path, columns: int) -> None:
    """A caption-less grid of images in [0, 1], written atomically."""
    with atomic_path(path) as tmp:
        save_image(images, tmp, nrow=columns, padding=2, pad_value=1.0, format="png")


def recipe(p: params.GanParams) -> generative.Recipe:
    return generative.Recipe(p.loss, p.critic_steps, p.penalty, p.penalty_weight, p.penalty_every)


@record  # a failing rank's traceback, in torchrun's summary of the failure
def main(entry: str, resume: bool) -> None:
    all_params = params.load()
    p = all_params.entry("train_gan", entry)
    distributed.launch_if_asked(p.processes)
    stage = f"train-gan@{entry}"
    checkpoints, samples, plots = MODELS / "gan" / entry, PLOTS / "gan" / entry / "samples", PLOTS / "gan" / entry
    with distributed.initialized(resolve_device(all_params.device)) as (world, device):
        logged = {**tracking.declared_params(stage, all_params), "world_size": world.size} if world.is_main else None
        tags = {"gan.resume": str(resume).lower(), "gan.era": p.era}
        with tracking.stage_run(stage, logged, tags=tags) if world.is_main else nullcontext() as run:
            rng = seed_everything(all_params.seed, device)
            train = data.load_split(PREPARED, p.dataset, "train")
            if world.is_main:
                run.log_dataset(PREPARED / p.dataset / "train.pt", "training")
            num_classes = len(train.classes) if gan_eras.ERAS[p.era].conditional else 0
            generator, discriminator = gan_eras.build(p.era, p.latent_dim, p.width, tuple(train.images.shape[1:]),
                                                      num_classes)
            layout = torch.channels_last if p.channels_last else torch.contiguous_format
            generator, discriminator = generator.to(device, memory_format=layout), discriminator.to(device, memory_format=layout)
            opt_g, opt_d = generative.make_optimizers(generator, discriminator, (p.lr_g, p.lr_d), (p.beta1, p.beta2),
                                                      p.optimizer)
            ema = generative.exponential_moving_average(generator, p.ema_decay) if p.ema_decay else None
            sampler = ema.module if ema is not None else generator  # the generator whose samples are shown
            noise = generative.fixed_noise(p.grid_size, p.latent_dim, all_params.seed).to(device)
            noise_labels = generative.sample_labels(p.grid_size, num_classes, device)
            columns = 10 if num_classes else 8

            fingerprint = generative.run_fingerprint(p.model_dump(), all_params.seed, train.images, train.labels,
                                                     prefix=f"train_gan.{entry}")
            found = []  # rank 0 alone reads and writes the files
            if world.is_main:
                for stale in [*checkpoints.glob(".*.part"), *samples.glob(".*.part")]:  # left by a killed run
                    stale.unlink()
                found = sorted(checkpoints.glob("epoch_*.pt"))

            def draw_samples(epoch: int) -> None:
                save_grid(generative.sample(sampler, noise, noise_labels).cpu(), samples / f"epoch_{epoch:02d}.png",
                          columns)

            resumed = None  # the contents of the checkpoint to go on from, sent by rank 0 to every process
            if resume and found:
                try:
                    generative.check_resumable(found[-1], fingerprint, p.epochs)
                except generative.ResumeError as exc:
                    raise SystemExit(str(exc)) from None
                for checkpoint in found:  # a kill between a checkpoint and its samples: draw them now
                    if not (samples / f"{checkpoint.stem}.png").exists():
                        state = load_torch(checkpoint, map_location=device)
                        sampler.load_state_dict(generative.sampler_weights(state))
                        draw_samples(state["epoch"])
                resumed = load_torch(found[-1], map_location="cpu")
                print(f"resuming from {found[-1]} (epoch {resumed['epoch']} of {p.epochs})")
            elif world.is_main:  # persisted outputs (see dvc.yaml): a fresh run clears them itself
                shutil.rmtree(checkpoints, ignore_errors=True)
                shutil.rmtree(samples, ignore_errors=True)
            resumed = world.broadcast(resumed)
            start_epoch, history = 0, None
            if resumed is not None:
                start_epoch, history = generative.load_checkpoint(
                    resumed, generator=generator, discriminator=discriminator, opt_g=opt_g, opt_d=opt_d, rng=rng,
                    device=device, ema=ema)

            def end_of_epoch(epoch: int, history: generative.GanHistory) -> None:  # rank 0's
                draw_samples(epoch)  # first: the checkpoint is the last thing an epoch writes
                generative.save_checkpoint(checkpoints / f"epoch_{epoch:02d}.pt", epoch=epoch, generator=generator,
                                           discriminator=discriminator, opt_g=opt_g, opt_d=opt_d, rng=rng,
                                           history=history, ema=ema, fingerprint=fingerprint)
                run.log_metrics({"epoch_seconds": history.epoch_seconds[-1]}, step=epoch)

            history = generative.train_gan(generator, discriminator, opt_g, opt_d, train.images, train.labels,
                                           recipe=recipe(p), ema=ema, epochs=p.epochs, epoch_images=p.epoch_images,
                                           batch_size=p.batch_size, rng=rng, device=device, start_epoch=start_epoch,
                                           history=history, on_epoch_end=end_of_epoch, progress=stage,
                                           world=world)
            if not world.is_main:
                return  # rank 0 alone writes the outputs
            ends = generative.fixed_noise(2 * p.interpolation_rows, p.latent_dim, all_params.seed + 1).to(device)
            rows = [generative.interpolate(sampler, ends[2 * i], ends[2 * i + 1], p.interpolation_steps,
                                           label=i % num_classes if num_classes else None)
                    for i in range(p.interpolation_rows)]
            save_grid(torch.cat(rows).cpu(), plots / "interpolation.png", p.interpolation_steps)
            steps = list(range(1, len(history.g_loss) + 1))
            write_csv(pd.DataFrame({"step": steps, "generator": history.g_loss, "discriminator": history.d_loss}),
                      plots / "losses.csv")
            write_json(METRICS / "gan" / entry / "train.json", {
                "era": p.era, "epochs": p.epochs, "steps": len(steps), "generator_images": p.epochs * p.epoch_images,
                "generator_parameters": sum(t.numel() for t in generator.parameters()),
                "discriminator_parameters": sum(t.numel() for t in discriminator.parameters()),
                "final_generator_loss": history.g_loss[-1], "final_discriminator_loss": history.d_loss[-1]})
            write_json(METRICS / "timing" / f"{stage}.json", {
                "train_seconds": round(sum(history.epoch_seconds), 3), "device": str(device),
                "threads": torch.get_num_threads(), "world_size": world.size,
                "epochs_timed": f"{start_epoch + 1}-{p.epochs}",  # a resumed run times its own epochs only
                "epoch_seconds": [round(s, 3) for s in history.epoch_seconds]})

            run.log_curve("curve.generator_loss", steps, history.g_loss)
            run.log_curve("curve.discriminator_loss", steps, history.d_loss)
            for path in [plots / "interpolation.png", *sorted(samples.glob("*.png"))]:
                run.log_artifact(path, "figures")
            run.log_artifact(sorted(checkpoints.glob("epoch_*.pt"))[-1], "checkpoints")
            registry.log_generator(run, sorted(checkpoints.glob("epoch_*.pt"))[-1], sampler, p.latent_dim, num_classes,
                                   tuple(train.images.shape[1:]))
        progress.summary(stage, f"{p.era}, {p.epochs} epochs of {p.epoch_images} images ({len(steps)} generator "
                                f"steps), final losses G {history.g_loss[-1]:.3f} D {history.d_loss[-1]:.3f}")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--resume"]
    if len(arguments) != 1:
        raise SystemExit("usage: python stages/train_gan.py <entry of params.yaml: train_gan> [--resume]")
    main(arguments[0], resume="--resume" in sys.argv[1:] or os.environ.get("GAN_RESUME") == "1")
