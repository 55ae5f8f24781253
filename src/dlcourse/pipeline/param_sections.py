"""Each stage's section of params.yaml, and the field types they share: what every key may hold.
`params.Params` puts them together into the one schema."""

from __future__ import annotations

import inspect
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Dataset = Literal["mnist", "cifar10"]

ENTRY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
EntryName = Annotated[str, StringConstraints(pattern=ENTRY_NAME)]

# Upper bounds. The datasets' training sets; both test sets hold 10 000 images.
DATASET_TRAIN_IMAGES = {"mnist": 60_000, "cifar10": 50_000}
TRAIN_IMAGES = max(DATASET_TRAIN_IMAGES.values())
TEST_IMAGES = 10_000
BatchSize = Annotated[int, Field(ge=1, le=TRAIN_IMAGES)]
TrainImages = Annotated[int, Field(ge=1, le=TRAIN_IMAGES)]
TestImages = Annotated[int, Field(ge=1, le=TEST_IMAGES)]
Steps = Annotated[int, Field(ge=1, le=10_000_000)]  # iterations, generations: days of compute at most
Epochs = Annotated[int, Field(ge=1, le=10_000)]
Population = Annotated[int, Field(ge=1, le=10_000)]  # candidates judged in one batch
GridImages = Annotated[int, Field(ge=1, le=1024)]  # images drawn in one figure
Threads = Annotated[int, Field(ge=0, le=1024)]
NetworkSize = Annotated[int, Field(ge=1, le=65_536)]  # a width or latent size; check-params bounds the network


class Section(BaseModel):
    # allow_inf_nan: a float is finite (YAML's .inf and .nan are refused, naming the key)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DownloadParams(Section):
    retries: Annotated[int, Field(ge=0, le=10)]
    backoff_s: Annotated[float, Field(ge=0, le=60)]
    timeout_s: Annotated[float, Field(gt=0, le=3600)]


class LinearRunParams(Section):
    """One run of the course's `Reseau1` (784 -> 10, softmax) on MNIST."""

    loss: Literal["log_softmax_nll", "softmax_nll"]
    reduction: Literal["sum", "mean"]
    iterations: Steps
    batch_size: BatchSize
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    eval_every: Steps
    init_eval_size: TestImages
    init_trials: Annotated[int, Field(ge=1, le=10_000)]  # fresh initialisations averaged for the "about 10 % at init" check


class AdversarialParams(Section):
    """Adversarial training (course/robust.py): each batch replaced by its adversarial examples."""

    method: Literal["fgsm_rs", "pgd"]  # FGSM from a random start (Wong et al. 2020) or PGD (Madry et al. 2018)
    eps: Annotated[float, Field(gt=0, le=1)]  # L-inf radius, in pixel units
    step_factor: PositiveFloat  # the step, in units of eps (fgsm_rs: 1.25 in the paper; pgd: about 2.5 / steps)
    steps: Annotated[int, Field(ge=1, le=100)]  # pgd's steps (fgsm_rs takes one)
    holdout: Annotated[int, Field(ge=10, le=10_000)]  # training images left out, for the per-epoch PGD check
    check_steps: Annotated[int, Field(ge=1, le=100)]  # that check's PGD steps, of 2.5 eps / check_steps
    overfit_drop: Annotated[float, Field(gt=0, lt=1)]  # a fall of the check this far below its best: overfitting
    eps_ramp: Annotated[float, Field(ge=0, lt=1)]  # the fraction of training over which eps rises from 0


class CnnRunParams(Section):
    """One entry of `train-cnn`: a dataset, an architecture and how to train it."""

    dataset: Dataset
    architecture: Literal["reseau2", "mnistnet", "mlp", "smallcnn", "airnet", "stridednet"]
    model: dict[str, int | float | str | bool | list[int]]  # the architecture's constructor arguments
    normalize: bool  # per-channel mean/std of the training set (False: pixels / 255, as ToTensor)
    epochs: Epochs
    epoch_images: TrainImages | None  # each epoch a fresh random draw of this many training images; None: all
    batch_size: BatchSize
    optimizer: Literal["sgd", "adam", "adamw", "adadelta"]
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    nesterov: bool
    weight_decay: Annotated[float, Field(ge=0)]
    schedule: Literal["constant", "step", "onecycle", "cosine"]
    warmup: Annotated[float, Field(ge=0, lt=1)]  # fraction of the steps
    gamma: Annotated[float, Field(gt=0, le=1)]  # per-epoch factor of the "step" schedule
    label_smoothing: Annotated[float, Field(ge=0, lt=1)]
    flip: bool
    crop_padding: Annotated[int, Field(ge=0, le=8)]
    # test-time augmentation of the final evaluation: none, the image and its mirror image (flip), or
    # those plus both mirrored one-pixel translations at half the weight (flip_translate, airbench's)
    tta: Literal["none", "flip", "flip_translate"]
    lookahead: bool  # airbench's look-ahead: an average of the weights, taken every 5 steps
    bias_lr_scale: PositiveFloat  # learning rate of 1-D parameters (BatchNorm) over the others' (airbench: 64)
    channels_last: bool
    bf16: bool  # autocast the forward pass to bfloat16 (fast on GPUs and on CPUs with AVX512-BF16 or AMX)
    threads: Threads  # CPU threads; 0 leaves torch's default
    # processes on this machine, each a shard of every batch (DistributedDataParallel under torchrun);
    # 1: one plain process. The global batch_size and lr stay those of one process.
    processes: Annotated[int, Field(ge=1, le=1024)]
    adversarial: AdversarialParams | None = None  # absent: standard training

    @model_validator(mode="after")
    def _adversarial_on_one_process(self):
        if self.adversarial is not None and self.processes > 1:
            raise ValueError("adversarial: trains on one process only (processes: 1)")
        return self

    @model_validator(mode="after")
    def _epoch_images_within_the_training_set(self):
        if self.epoch_images is not None:
            available = DATASET_TRAIN_IMAGES[self.dataset] - (self.adversarial.holdout if self.adversarial else 0)
            if not self.batch_size <= self.epoch_images <= available:
                raise ValueError(f"epoch_images: {self.epoch_images}, outside one batch ({self.batch_size}) to the "
                                 f"{available} training images of {self.dataset}"
                                 f"{' less the held-out ones' if self.adversarial else ''}")
        return self

    @model_validator(mode="after")
    def _model_arguments_exist(self):
        from ..course.models import ARCHITECTURES

        accepted = set(inspect.signature(ARCHITECTURES[self.architecture]).parameters) - {"num_classes"}
        unknown = sorted(set(self.model) - accepted)
        if unknown:
            raise ValueError(f"model: unknown argument(s) {unknown} for {self.architecture} (accepted: {sorted(accepted)})")
        return self


class ModelRef(Section):
    """A trained model another stage reads, by its name ("linear/<run>" or "cnn/<entry>"): the key."""

    dataset: Dataset  # what it was trained on: the stage reads this dataset only (checked against the entry)


class EvaluateParams(Section):
    models: dict[str, ModelRef] = Field(min_length=1)
    confident: Probability  # "very wrong": misclassified with at least this confidence
    ece_bins: Annotated[int, Field(ge=1, le=1000)]
    hardest: GridImages  # images in the grid of the most confidently wrong


class AttackModelParams(ModelRef):
    # the L-inf sweep, in pixel units; the claim's eps is chosen among them on half of the images
    eps: list[Annotated[float, Field(gt=0, le=1)]] = Field(min_length=1, max_length=100)
    # the robust accuracy at this eps under the strong attacks (attack.strong_*, and torchattacks' APGD)
    robust_eps: Annotated[float, Field(gt=0, le=1)] | None = None
    # the eps of the figure of a few digits attacked at growing eps (absent: those of the sweep)
    grid_eps: list[Annotated[float, Field(gt=0, le=1)]] | None = Field(None, min_length=1, max_length=10)


class AttackParams(Section):
    models: dict[str, AttackModelParams] = Field(min_length=1)  # "cnn/<entry>" or "linear/<run>"
    subset: TestImages  # test images attacked (a fixed random subset)
    pgd_steps: Annotated[int, Field(ge=1, le=10_000)]
    pgd_step_factor: PositiveFloat  # PGD step size = factor * eps / steps
    pgd_random_start: bool
    bf16: bool  # the attacks' gradients in bfloat16 (sign only is used); the accuracy judged stays float32
    examples: GridImages  # images in the clean / perturbed / amplified grid
    strong_pgd_steps: Annotated[int, Field(ge=1, le=10_000)]  # the robust accuracy's PGD (a model's robust_eps)
    strong_pgd_step: PositiveFloat  # its step, in pixel units
    strong_pgd_restarts: Annotated[int, Field(ge=1, le=100)]  # an image counts if no restart fools the network
    apgd_steps: Annotated[int, Field(ge=1, le=10_000)]  # the independent check: torchattacks' APGD (cross-entropy)


class FoolingParams(Section):
    dataset: Dataset | None = None  # the models' dataset; absent: the entry's name is the dataset's
    model: str  # the network fooled, models/<model>.pt
    transfer_model: str  # a second, independently trained network of the same data
    confidence: Annotated[float, Field(gt=0, lt=1)]
    gradient_steps_max: Steps
    gradient_lr: PositiveFloat  # signed step per pixel
    evolution_generations_max: Steps
    evolution_population: Population
    evolution_mutation_rate: Annotated[float, Field(gt=0, le=1)]
    cppn_generations_max: Steps  # MAP-Elites over the classes with a CPPN genome
    cppn_population: Population  # offspring per generation, judged in one batch
    cppn_weight_rate: Annotated[float, Field(gt=0, le=1)]  # chance that each weight is perturbed
    cppn_weight_sigma: PositiveFloat  # standard deviation of a weight's perturbation
    cppn_add_node_rate: Probability  # chance per offspring: a connection split by a new node
    cppn_add_connection_rate: Probability
    cppn_activation_rate: Probability  # chance per offspring: a hidden node's activation changed


class SgdSchedule(Section):
    """The 2014 GAN's SGD schedule (Goodfellow et al.'s code): after every update the learning rate is divided
    by `lr_decay` down to `lr_min`, and the momentum (beta1 at the start) rises linearly to `momentum_final`
    over the first `momentum_ramp_images` images seen by the generator."""

    lr_decay: Annotated[float, Field(ge=1, le=2)]
    lr_min: Annotated[float, Field(ge=0, le=1)]
    momentum_final: Annotated[float, Field(ge=0, lt=1)]
    momentum_ramp_images: Annotated[int, Field(ge=1, le=10**12)]


class GanParams(Section):
    """One entry of `train-gan`: a milestone of the GAN timeline (gan_eras.ERAS) and its recipe."""

    era: Literal["gan-2014", "dcgan-2015", "cogan-2016", "wgan-gp-2017", "progan-2017", "sngan-2018",
                 "stylegan-2019", "dcgan-conditional"]
    dataset: Dataset
    latent_dim: NetworkSize
    width: NetworkSize  # base channels (hidden units / 16 for the 2014 MLPs) of the generator and discriminator
    ema_decay: Annotated[float, Field(ge=0, lt=1)]  # moving average of the generator's weights; 0: none
    epochs: Epochs
    epoch_images: TrainImages  # images the generator sees per epoch (the budget: epochs x epoch_images)
    batch_size: BatchSize
    optimizer: Literal["adam", "sgd"]
    lr_g: PositiveFloat
    lr_d: PositiveFloat
    beta1: Annotated[float, Field(ge=0, lt=1)]  # Adam's, or SGD's momentum
    beta2: Annotated[float, Field(ge=0, lt=1)]  # Adam's; unused by SGD
    loss: Literal["non_saturating", "wasserstein", "hinge"]
    critic_steps: Annotated[int, Field(ge=1, le=100)]  # discriminator (critic) steps per generator step
    penalty: Literal["none", "gradient", "r1"]  # on the critic's input gradients: WGAN-GP's, or StyleGAN's R1
    penalty_weight: Annotated[float, Field(ge=0)]  # WGAN-GP's lambda, or R1's gamma
    penalty_every: Annotated[int, Field(ge=1, le=1000)]  # R1 applied lazily, every this many critic steps
    drift_weight: Annotated[float, Field(ge=0, le=1)] = 0.0  # ProGAN's epsilon_drift: E[D(real)^2] kept small
    sgd_schedule: SgdSchedule | None = None  # the 2014 GAN's learning-rate decay and momentum ramp (optimizer sgd)
    grid_size: GridImages  # samples from the fixed noise, after every epoch
    interpolation_steps: Annotated[int, Field(ge=2, le=100)]
    interpolation_rows: Annotated[int, Field(ge=1, le=100)]
    channels_last: bool  # the networks' convolutions laid out channels-last (the same sums in another order)
    # processes on this machine, each a shard of every batch (DistributedDataParallel under torchrun);
    # 1: one plain process. The global batch_size and learning rates stay those of one process.
    processes: Annotated[int, Field(ge=1, le=1024)]

    @model_validator(mode="after")
    def _recipe_is_consistent(self):
        if self.penalty == "none" and self.penalty_weight:
            raise ValueError(f"penalty_weight: {self.penalty_weight} with penalty none; set it to 0.0")
        if self.penalty != "none" and not self.penalty_weight:
            raise ValueError(f"penalty_weight: 0 with penalty {self.penalty}; give its weight, or penalty none")
        if self.epoch_images < self.batch_size:
            raise ValueError(f"epoch_images: {self.epoch_images}, fewer than one batch of {self.batch_size}")
        if self.sgd_schedule is not None and self.optimizer != "sgd":
            raise ValueError(f"sgd_schedule: set with optimizer {self.optimizer}; it schedules SGD only")
        return self


class ScoreGanParams(Section):
    classifier: str  # the project's classifier of the GANs' dataset, models/<classifier>.pt
    feature_layer: str  # the module whose input is the penultimate features (Fréchet distance, precision/recall)
    samples: TrainImages  # samples of the last epoch judged (and real training images for the baseline)
    curve_samples: Annotated[int, Field(ge=2, le=TRAIN_IMAGES)]  # samples of every epoch, for the Fréchet-distance curve (cheap)
    nearest_neighbours: Annotated[int, Field(ge=1, le=100)]  # k of precision / recall's k-NN manifolds (Kynkäänniemi et al.: 3)
    confident: Probability
