"""A GAN training step with the networks channels-last against the default layout, side by side in
one run, for each convolutional era of params.yaml's `train_gan` (its width and recipe: loss, critic
steps, gradient penalty), on random MNIST-shaped batches; the layouts take turns, several rounds,
so that a busy machine slows both alike. How each entry's `channels_last` was chosen.

Run: python benchmarks/gan_layout.py [--steps 25] [--rounds 2] [ENTRY ...]
"""

import argparse
import statistics

import torch

from dlcourse.course.gans import eras as gan_eras, generative, setup as gan_setup
from dlcourse.pipeline import params


def step_seconds(p, layout, steps: int) -> float:
    torch.manual_seed(0)
    classes = 10 if gan_eras.ERAS[p.era].conditional else 0
    generator, discriminator = gan_eras.build(p.era, p.latent_dim, p.width, (1, 28, 28), classes)
    generator, discriminator = generator.to(memory_format=layout), discriminator.to(memory_format=layout)
    opt_g, opt_d = generative.make_optimizers(generator, discriminator, (p.lr_g, p.lr_d), (p.beta1, p.beta2), p.optimizer)
    images = torch.randint(0, 256, (p.batch_size * (steps + 2) * p.critic_steps, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(len(images)) % 10
    recipe = gan_setup.recipe(p)
    history = generative.train_gan(generator, discriminator, opt_g, opt_d, images, labels, recipe=recipe, epochs=2,
                                   epoch_images=len(images) // 2 // p.critic_steps, batch_size=p.batch_size,
                                   rng=torch.Generator().manual_seed(0), device="cpu")
    return history.epoch_seconds[1] / (len(images) // 2 // p.critic_steps // p.batch_size)  # the second epoch: warm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("entries", nargs="*")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    all_params = params.load()
    entries = args.entries or [e for e, p in all_params.train_gan.items() if p.era != "gan-2014"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per generator step (with its critic steps)")
    print(f"{'entry':16s} {'default':>8s} {'channels-last':>13s} {'speed-up':>8s}")
    for entry in entries:
        p = all_params.train_gan[entry]
        times = {torch.contiguous_format: [], torch.channels_last: []}
        for _ in range(args.rounds):
            for layout in times:
                times[layout].append(step_seconds(p, layout, args.steps))
        before, after = (statistics.median(times[layout]) for layout in times)
        print(f"{entry:16s} {before * 1e3:8.1f} {after * 1e3:13.1f} {before / after:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
