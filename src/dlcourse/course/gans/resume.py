"""Resuming a killed GAN run, all in one place: what identifies a run (its fingerprint), the
checkpoint written after every epoch and read back, and the choice, at the start of a run, between
going on from the last checkpoint of the same run and starting afresh."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ...files import load_torch, save_torch
from . import eras, generative
from .generative import GanHistory


class ResumeError(ValueError):
    pass


NOT_TRAINING = ("metrics.py",)  # the scoring of samples: editing it changes no training run


def run_fingerprint(settings: dict, seed: int, images: torch.Tensor, labels: torch.Tensor,
                    prefix: str = "train_gan", by_length: bool = False) -> dict[str, str]:
    """What determines a GAN run but its number of epochs and of processes (the same global batches):
    its params (named `prefix.<key>`), the seed, the training data (what the GAN learns from: a coupled
    GAN's pairs) and the code that trains (the modules of this package: the loop, the networks; not the
    scoring, `NOT_TRAINING`). A checkpoint carries it; a run resumes only from its own.
    `by_length`: the run's schedule depends on its length (ProGAN's growing), so its epochs count too."""
    data = hashlib.sha256(images.cpu().numpy().tobytes() + labels.cpu().numpy().tobytes()).hexdigest()
    modules = sorted(path for path in Path(eras.__file__).parent.glob("*.py") if path.name not in NOT_TRAINING)
    code = hashlib.sha256(b"".join(path.read_bytes() for path in modules))
    ignored = ("processes",) if by_length else ("epochs", "processes")
    return {**{f"{prefix}.{key}": repr(value) for key, value in sorted(settings.items()) if key not in ignored},
            "seed": repr(seed), "data (sha256)": data,
            "code (sha256 of the training modules of dlcourse.course.gans)": code.hexdigest()}


def check_resumable(path: str | Path, fingerprint: dict[str, str], epochs: int) -> None:
    """Refuse to resume from a checkpoint of another run (other params, seed, data or code) or of
    more epochs than asked, naming what differs."""
    state = load_torch(path)
    found = state.get("fingerprint") or {}
    differing = [f"{key}: checkpoint {found.get(key, 'none')}, now {value}" for key, value in fingerprint.items()
                 if found.get(key) != value]
    if state["epoch"] > epochs:
        differing.append(f"epochs: the checkpoint has {state['epoch']} done, now {epochs} asked")
    if differing:
        raise ResumeError(f"{path}: cannot resume from a checkpoint of another run:\n  " + "\n  ".join(differing)
                          + "\na plain `dvc repro` (without GAN_RESUME=1) starts afresh")


def save_checkpoint(path: str | Path, *, epoch: int, generator: nn.Module, discriminator: nn.Module,
                    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, rng: torch.Generator,
                    history: GanHistory, ema: torch.optim.swa_utils.AveragedModel | None = None,
                    fingerprint: dict[str, str] | None = None) -> None:
    """Everything a killed run needs to go on from the end of `epoch`, written atomically."""
    state = {
        "epoch": epoch,
        "fingerprint": fingerprint or {},
        "generator": generator.state_dict(),
        "discriminator": discriminator.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "rng": rng.get_state(),
        "torch_rng": torch.get_rng_state(),  # StyleGAN's per-pixel noise
        "history": {"g_loss": history.g_loss, "d_loss": history.d_loss},  # no wall times: the bytes are reproducible
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    save_torch(state, path)


def load_checkpoint(checkpoint: str | Path | dict, *, generator: nn.Module, discriminator: nn.Module,
                    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, rng: torch.Generator,
                    device: torch.device | str = "cpu", ema: torch.optim.swa_utils.AveragedModel | None = None
                    ) -> tuple[int, GanHistory]:
    """Restore a checkpoint (its file, or its contents as `load_torch` reads them) in place; return
    (epochs done, history) for `train_gan`'s `start_epoch` and `history`. The networks must already be
    on `device`."""
    state = checkpoint if isinstance(checkpoint, dict) else load_torch(checkpoint, map_location=device)
    generator.load_state_dict(state["generator"])
    discriminator.load_state_dict(state["discriminator"])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    rng.set_state(state["rng"].cpu())
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"].cpu())
    if ema is not None:
        if "ema" not in state:
            where = f"epoch {state['epoch']}'s checkpoint" if isinstance(checkpoint, dict) else checkpoint
            raise ValueError(f"{where}: no moving-average generator to resume (saved with ema_decay 0?)")
        ema.load_state_dict(state["ema"])
    return state["epoch"], GanHistory(**state["history"])


def start(checkpoints: Path, samples: Path, *, resume: bool, fingerprint: dict[str, str], epochs: int,
          sampler: nn.Module, draw_samples: Callable[[int], None], device: torch.device) -> dict | None:
    """The contents of the checkpoint to go on from, or None to start afresh; for the process that
    writes the files (the main one).

    Always: the temporary files a killed run left are removed. With `resume` and checkpoints of the
    same run (`check_resumable`), the sample grids a kill left undrawn are drawn (`sampler` given
    that epoch's weights, then `draw_samples(epoch)`) and the last checkpoint is read. Otherwise the
    checkpoints and samples of an earlier run are removed: they are DVC's persisted outputs, which a
    fresh run clears itself."""
    for stale in [*checkpoints.glob(".*.part"), *samples.glob(".*.part")]:
        stale.unlink()
    found = sorted(checkpoints.glob("epoch_*.pt"))
    if not (resume and found):
        shutil.rmtree(checkpoints, ignore_errors=True)
        shutil.rmtree(samples, ignore_errors=True)
        return None
    check_resumable(found[-1], fingerprint, epochs)
    for checkpoint in found:  # a kill between a checkpoint and its samples: draw them now
        if not (samples / f"{checkpoint.stem}.png").exists():
            state = load_torch(checkpoint, map_location=device)
            sampler.load_state_dict(generative.sampler_weights(state))
            draw_samples(state["epoch"])
    resumed = load_torch(found[-1], map_location="cpu")
    print(f"resuming from {found[-1]} (epoch {resumed['epoch']} of {epochs})")
    return resumed
