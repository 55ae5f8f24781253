"""The networks. `forward` returns class scores (logits); softmax is applied by the losses and
by `predict_proba`, exactly as the course's formulas do."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import IMAGE_SHAPES, to_float


class Reseau1(nn.Module):
    """The course's first network: a dense layer with no hidden layer, 784 -> 10, then softmax."""

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.layer = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.flatten(1))


class Reseau2(nn.Module):
    """The course's CNN, line for line: conv 32, conv 64, max-pool, dropout, fc 128, dropout, fc 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout2d(0.25)
        # The slide has Dropout2d here, which on this 2-D input drops single units: plain Dropout,
        # as torch now requires for 2-D inputs, behaves the same.
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.conv2(x)
        x = self.dropout1(F.max_pool2d(x, 2))
        x = torch.flatten(x, 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_bn(c_in: int, c_out: int, activation) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), activation()]


class AirNet(nn.Module):
    """A small fast-training network in the style of Keller Jordan's airbench: a frozen 2x2 patch-
    whitening stem, three blocks [conv, max-pool, BN, act, conv, BN, act], global max-pool, and a
    bias-free linear head whose logits are scaled down. `widths` = (stem, block 1, 2, 3).

    airbench's batch-norm setup is optional: `bn_momentum` (torch's convention: airbench's 0.6 is
    0.4 here), `bn_eps`, `bn_weight=False` (the scales frozen at 1, only the shifts learned), and
    `dirac=True` (each block conv starts as the identity on its first input channels)."""

    def __init__(self, widths=(24, 64, 128, 128), activation: str = "gelu", whiten: bool = True,
                 logit_scale: float = 1 / 9, bn_momentum: float = 0.1, bn_eps: float = 1e-5, bn_weight: bool = True,
                 dirac: bool = False, num_classes: int = 10):
        super().__init__()
        act = {"gelu": nn.GELU, "relu": nn.ReLU}[activation]
        if whiten and widths[0] != 24:
            raise ValueError("AirNet: the whitening stem has 24 channels (12 patch directions and their negatives)")

        def conv(c_in, c_out):
            layer = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            if dirac:
                nn.init.dirac_(layer.weight.data[:min(c_in, c_out)])
            return layer

        def norm(channels):
            layer = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)
            layer.weight.requires_grad_(bn_weight)
            return layer

        self.whiten = whiten
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 2), act()) if whiten else nn.Sequential(*conv_bn(3, widths[0], act))
        layers, c_in = [], widths[0]
        for width in widths[1:]:
            layers += [conv(c_in, width), nn.MaxPool2d(2), norm(width), act(), conv(width, width), norm(width), act()]
            c_in = width
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale

    @torch.no_grad()
    def fit_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the frozen stem to whiten 2x2 patches of (normalised) training images."""
        if not self.whiten:
            return
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 12).double()
        patches = patches - patches.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(12, 3, 2, 2)
        conv = self.stem[0]
        conv.weight.copy_(torch.cat([filters, -filters]).float())
        conv.weight.requires_grad_(False)
        conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.amax(x, dim=(2, 3))) * self.logit_scale


class MnistNet(nn.Module):
    """A small BatchNorm CNN for MNIST: two blocks [conv, BN, ReLU, conv, BN, ReLU, max-pool], then fc."""

    def __init__(self, widths=(16, 32), hidden: int = 128, dropout: float = 0.0, num_classes: int = 10):
        super().__init__()
        layers, c_in = [], 1
        for width in widths:
            layers += [*conv_bn(c_in, width, nn.ReLU), *conv_bn(width, width, nn.ReLU), nn.MaxPool2d(2)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 7 * 7, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class StridedNet(nn.Module):
    """The MNIST network of Wong, Rice and Kolter 2020 (and Wong and Kolter 2018) for adversarial
    training: two strided 4x4 convolutions, one hidden layer, no batch norm, no pooling."""

    def __init__(self, widths=(16, 32), hidden: int = 100, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, widths[0], 4, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(widths[0], widths[1], 4, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[1] * 7 * 7, hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Dense layers with ReLU; `hidden=[]` is the linear softmax classifier."""

    def __init__(self, in_shape=(3, 32, 32), hidden=(512,), dropout: float = 0.0, num_classes: int = 10):
        super().__init__()
        size = in_shape[0] * in_shape[1] * in_shape[2]
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout)]
            size = width
        layers.append(nn.Linear(size, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """A course-style CNN (LeNet-like): conv 5x5, ReLU, pool, conv 5x5, ReLU, pool, fc, fc."""

    def __init__(self, in_channels: int = 3, widths=(32, 64), hidden: int = 256, size: int = 32, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 5, padding=2)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 5, padding=2)
        self.fc1 = nn.Linear(widths[1] * (size // 4) ** 2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "reseau1": Reseau1, "reseau2": Reseau2, "airnet": AirNet, "mnistnet": MnistNet, "mlp": MLP, "smallcnn": SmallCNN,
    "stridednet": StridedNet,
}


class Classifier(nn.Module):
    """A network with its input normalisation inside: it takes images as floats in [0, 1], so
    attacks and evaluations work in pixel space whatever the network."""

    def __init__(self, architecture: str, kwargs: dict, channels: int):
        super().__init__()
        self.architecture, self.kwargs = architecture, dict(kwargs)
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        self.net = ARCHITECTURES[architecture](**kwargs)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def fit_input_statistics(self, images: torch.Tensor, normalize: bool, whitening_images: int = 5000) -> None:
        """From uint8 training images: the per-channel mean and std of their pixels (when
        `normalize`), then the whitening stem of a network that has one."""
        if normalize:
            pixels = to_float(images)
            self.mean.copy_(pixels.mean((0, 2, 3), keepdim=True))
            self.std.copy_(pixels.std((0, 2, 3), keepdim=True))
            del pixels
        if hasattr(self.net, "fit_whitening"):
            self.net.fit_whitening(self.normalize(to_float(images[:whitening_images])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class Probabilities(nn.Module):
    """A classifier that returns softmax probabilities instead of logits (what an MLflow model of it
    serves); the classifier keeps its input normalisation, so this too takes images in [0, 1]."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.classifier(x), dim=1)


def save_classifier(model: Classifier, dataset: str, classes: list[str], path) -> None:
    from ..files import save_torch

    save_torch({"architecture": model.architecture, "kwargs": model.kwargs, "dataset": dataset, "classes": classes,
                "state_dict": model.state_dict()}, path)


def load_classifier(path, device: torch.device | str = "cpu",
                    memory_format: torch.memory_format = torch.channels_last) -> tuple[Classifier, dict]:
    """A saved classifier, ready for inference. Its convolution weights are laid out channels-last
    by default: with them, a convolution takes the faster channels-last kernels whatever the layout
    of its input (on this project's CPU, the airnet's forward pass and its input gradient about 1.9x
    faster; `benchmarks/inference_layout.py`), with the same sums in another order."""
    from ..files import check_finite_tensors, load_torch

    checkpoint = load_torch(path, map_location=device)
    check_finite_tensors(checkpoint["state_dict"], path)  # a diverged network's answers are meaningless
    channels = checkpoint["state_dict"]["mean"].shape[1]
    model = Classifier(checkpoint["architecture"], checkpoint["kwargs"], channels).to(device)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(memory_format=memory_format).eval(), checkpoint




def check_buildable(name: str, architecture: str, kwargs: dict, dataset: str) -> Classifier:
    """The classifier of a train entry, built and run on one blank batch of its dataset's images on
    the meta device (shapes only: no memory, whatever the sizes), so that arguments that do not fit
    (widths of the wrong length, an input shape of another dataset) are refused naming the entry
    before any training. The model returned is on the meta device."""
    channels = IMAGE_SHAPES[dataset][0]
    try:
        with torch.device("meta"):
            model = Classifier(architecture, kwargs, channels).eval()
            with torch.no_grad():
                logits = model(torch.zeros(2, *IMAGE_SHAPES[dataset]))
    except Exception as exc:  # noqa: BLE001 - any failure means the params do not describe a network
        raise ValueError(f"{name}: {architecture}({kwargs}) does not build or run on {dataset} images "
                         f"{IMAGE_SHAPES[dataset]}: {exc}") from None
    if logits.shape != (2, 10):
        raise ValueError(f"{name}: {architecture}({kwargs}) gives outputs of shape {tuple(logits.shape[1:])} "
                         f"on {dataset} images, not 10 class scores")
    return model
