"""The figures of the stages and of the report (matplotlib, PNG without timestamps)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch

from ..files import atomic_path


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def plot_curves(curves: dict[str, pd.DataFrame], x: str, y: str, title: str, path: Path, xlabel: str,
                ylabel: str = "test accuracy (%)", scale: float = 100) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, frame in curves.items():
        ax.plot(frame[x], scale * frame[y], label=label, marker="." if len(frame) < 60 else None)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_columns(frame: pd.DataFrame, x: str, columns: list[str], title: str, path: Path, xlabel: str,
                 ylabel: str = "test accuracy (%)", scale: float = 100) -> None:
    plot_curves({column: frame.rename(columns={column: "_y"}) for column in columns}, x, "_y", title, path, xlabel,
                ylabel, scale)


def plot_confusion(confusion: torch.Tensor, classes: list[str], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(confusion.numpy(), cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="actual", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    threshold = confusion.max().item() / 2
    for i in range(len(classes)):
        for j in range(len(classes)):
            value = int(confusion[i, j])
            ax.text(j, i, value, ha="center", va="center", fontsize=7, color="white" if value > threshold else "black")
    fig.colorbar(image, ax=ax)
    save_figure(fig, path)


def plot_reliability(bin_edges, bin_confidence, bin_accuracy, ece: float, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    centers = [(lo + hi) / 2 for lo, hi in zip(bin_edges[:-1], bin_edges[1:])]
    width = bin_edges[1] - bin_edges[0]
    accuracy = [a if a is not None else 0 for a in bin_accuracy]
    ax.bar(centers, accuracy, width=width, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{title}\nECE = {100 * ece:.2f} %")
    ax.legend(loc="upper left")
    save_figure(fig, path)


def image_grid(images: torch.Tensor, captions: list[str], path: Path, title: str = "", columns: int = 8,
               scale: float = 1.4) -> None:
    """A grid of images (N x C x H x W, floats in [0, 1]) with a caption under each."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * scale, rows * (scale + 0.45)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        picture = image.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
        ax.imshow(picture, cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=1)
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def image_columns(rows: list[list[tuple[str, Path, str]]], path: Path, title: str = "", scale: float = 2.6,
                  row_titles: list[str] | None = None) -> None:
    """Rows of images side by side (PNG files, e.g. sample grids), each with a title above and a caption
    under: the slides' GAN timeline, one column per era; a shorter row leaves its last cells blank."""
    width = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), width, figsize=(scale * width, (scale + 1.6) * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for ax, (heading, image_path, caption) in zip(axes[r], row):
            ax.imshow(plt.imread(image_path), cmap="gray")
            ax.set_title(heading, fontsize=10, fontweight="bold")
            ax.set_xlabel(caption, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r][len(row):]:
            ax.axis("off")
        if row_titles:
            axes[r][0].set_ylabel(row_titles[r], fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
