"""Compositional pattern-producing networks (CPPNs) evolved with MAP-Elites: the encoding of the
regular fooling images of Nguyen, Yosinski & Clune 2015 (the slides' "pingouin", "guitare"...).

A genome is a small network from pixel coordinates to intensity: inputs x, y in [-1, 1], the
distance d to the centre and a bias; hidden nodes with activations from the paper's set; one
output per colour channel, squashed into [0, 1] by a sigmoid. It grows by NEAT-style mutations
(weights perturbed, a connection split by a new node, a connection added, an activation changed).
Nodes are kept in a topological order (inputs first, outputs last) and a connection always goes
forward in it, so no mutation can make a cycle. A population is rendered at once in torch: every
genome is laid out on the same padded node slots, and one step per slot evaluates that node for
all genomes and pixels together.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import progress

INPUTS = ("x", "y", "d", "bias")
ACTIVATIONS = {  # the paper's set (sine, sigmoid, Gaussian, linear), with abs and tanh
    "sine": torch.sin,
    "gaussian": lambda z: torch.exp(-z * z),
    "sigmoid": torch.sigmoid,
    "identity": lambda z: z,
    "abs": torch.abs,
    "tanh": torch.tanh,
}
ACTIVATION_NAMES = tuple(ACTIVATIONS)
OUTPUT_ACTIVATION = "sigmoid"  # keeps every pixel in [0, 1]


@dataclass
class Genome:
    """Nodes by id (inputs 0..3, outputs next, hidden nodes after them), `order` a topological order
    of all ids (inputs first, outputs last), `weights` the connections (source, target) -> weight,
    each going forward in `order`, and `activation` of every hidden and output node."""

    channels: int
    order: list[int]
    weights: dict[tuple[int, int], float]
    activation: dict[int, str] = field(default_factory=dict)

    @property
    def outputs(self) -> list[int]:
        return list(range(len(INPUTS), len(INPUTS) + self.channels))

    @property
    def hidden(self) -> list[int]:
        return self.order[len(INPUTS):len(self.order) - self.channels]


def _uniform(rng: torch.Generator) -> float:
    return float(torch.rand((), generator=rng))


def _choice(items, rng: torch.Generator):
    return items[int(torch.randint(len(items), (), generator=rng))]


def _normal(rng: torch.Generator, sigma: float) -> float:
    return sigma * float(torch.randn((), generator=rng))


def random_genome(channels: int, rng: torch.Generator, weight_sigma: float = 1.0) -> Genome:
    """NEAT's minimal start: no hidden node, every input connected to every output."""
    outputs = range(len(INPUTS), len(INPUTS) + channels)
    weights = {(i, o): _normal(rng, weight_sigma) for o in outputs for i in range(len(INPUTS))}
    return Genome(channels, [*range(len(INPUTS)), *outputs], weights, dict.fromkeys(outputs, OUTPUT_ACTIVATION))


def add_node(genome: Genome, rng: torch.Generator) -> None:
    """Split a random connection a -> b into a -> new -> b (weights 1 and the old one, as NEAT)."""
    a, b = _choice(sorted(genome.weights), rng)
    new = max(genome.order) + 1
    weight = genome.weights.pop((a, b))
    genome.weights[(a, new)], genome.weights[(new, b)] = 1.0, weight
    genome.activation[new] = _choice(ACTIVATION_NAMES, rng)
    # just before b, and before every output: a precedes it, b follows it
    genome.order.insert(min(genome.order.index(b), len(genome.order) - genome.channels), new)


def add_connection(genome: Genome, rng: torch.Generator, weight_sigma: float, tries: int = 20) -> bool:
    """Connect two unconnected nodes, forward in the topological order (an input or hidden node to a
    later hidden or output node); False when `tries` random pairs were all taken or impossible."""
    sources = genome.order[:len(genome.order) - genome.channels]
    for _ in range(tries):
        i = int(torch.randint(len(sources), (), generator=rng))
        j = int(torch.randint(max(i + 1, len(INPUTS)), len(genome.order), (), generator=rng))
        pair = (genome.order[i], genome.order[j])
        if pair not in genome.weights:
            genome.weights[pair] = _normal(rng, weight_sigma)
            return True
    return False


def mutate(genome: Genome, rng: torch.Generator, weight_rate: float, weight_sigma: float, add_node_rate: float,
           add_connection_rate: float, activation_rate: float) -> Genome:
    """A mutated copy: each weight perturbed by N(0, weight_sigma) with probability weight_rate, then
    with their own probabilities a node added, a connection added, a hidden activation changed."""
    child = copy.deepcopy(genome)
    pairs = sorted(child.weights)
    chosen = (torch.rand(len(pairs), generator=rng) < weight_rate).tolist()
    deltas = (weight_sigma * torch.randn(len(pairs), generator=rng)).tolist()
    for pair, mutated, delta in zip(pairs, chosen, deltas):
        if mutated:
            child.weights[pair] += delta
    if _uniform(rng) < add_node_rate:
        add_node(child, rng)
    if _uniform(rng) < add_connection_rate:
        add_connection(child, rng, weight_sigma)
    if child.hidden and _uniform(rng) < activation_rate:
        child.activation[_choice(child.hidden, rng)] = _choice(ACTIVATION_NAMES, rng)
    return child


def coordinates(height: int, width: int) -> torch.Tensor:
    """The inputs of every pixel: x, y in [-1, 1], distance to the centre, bias (4 x H*W)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    return torch.stack([x, y, torch.sqrt(x * x + y * y), torch.ones_like(x)]).flatten(1)


def render(genomes: list[Genome], height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The images of a population, N x channels x H x W in [0, 1]. Every genome is laid out on the
    same slots (inputs, its hidden nodes padded to the population's largest count, outputs): slot s
    of all genomes is computed at once from the slots before it."""
    channels = genomes[0].channels
    hidden = max(len(g.hidden) for g in genomes)
    slots = len(INPUTS) + hidden + channels
    weights = torch.zeros(len(genomes), slots, slots)
    activation = torch.full((len(genomes), slots), ACTIVATION_NAMES.index("identity"))
    for n, genome in enumerate(genomes):
        slot = {node: node for node in range(len(INPUTS))}
        slot |= {node: len(INPUTS) + k for k, node in enumerate(genome.hidden)}
        slot |= {node: len(INPUTS) + hidden + k for k, node in enumerate(genome.outputs)}
        for (source, target), w in genome.weights.items():
            weights[n, slot[target], slot[source]] = w
        for node, name in genome.activation.items():
            activation[n, slot[node]] = ACTIVATION_NAMES.index(name)
    weights, activation = weights.to(device), activation.to(device)
    values = torch.zeros(len(genomes), slots, height * width, device=device)
    values[:, :len(INPUTS)] = coordinates(height, width).to(device)
    for s in range(len(INPUTS), slots):
        total = torch.bmm(weights[:, s:s + 1, :s], values[:, :s]).squeeze(1)  # N x pixels
        every = torch.stack([f(total) for f in ACTIVATIONS.values()])  # activations x N x pixels
        values[:, s] = every.gather(0, activation[None, :, s, None].expand(1, *total.shape))[0]
    return values[:, slots - channels:].reshape(len(genomes), channels, height, width)


@torch.no_grad()
def map_elites(score, channels: int, height: int, width: int, classes: int, rng: torch.Generator,
               generations_max: int, population: int, confidence: float = 1.0,  # as a probability
               device: torch.device | str = "cpu", label: str | None = None, **mutation,
               ) -> tuple[list[Genome], torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAP-Elites over the classes (Nguyen et al. 2015): one elite per class. Each generation,
    `population` parents drawn at random among the elites are mutated; `score` (images -> N x classes
    log-probabilities) judges the offspring for every class at once, and an offspring replaces the elite
    of every class it beats (the best offspring, where several do). Parents are drawn among the
    elites still below `confidence` only (the paper draws among all: here the search stops when every
    elite reaches `confidence`, so effort goes where it is still needed). Starts from `population`
    random genomes; stops when every elite reaches `confidence` or after `generations_max`.

    Returns the elites, their images as scored, their scores, and the generation at which each was found."""
    offspring = [random_genome(channels, rng, mutation["weight_sigma"]) for _ in range(population)]
    elites: list[Genome | None] = [None] * classes
    images = torch.zeros(classes, channels, height, width, device=device)
    fitness = torch.full((classes,), -torch.inf)
    found = torch.zeros(classes, dtype=torch.long)
    bar = progress.Bar(label or "", generations_max, "generation", "tenth", enabled=label is not None)  # on stderr
    for generation in range(generations_max + 1):
        bar.update(int(generation > 0))
        if generation > 0:
            short = (fitness.exp() < confidence).nonzero().flatten()
            if len(short) == 0:
                break
            parents = short[torch.randint(len(short), (population,), generator=rng)]
            offspring = [mutate(elites[int(k)], rng, **mutation) for k in parents]
        rendered = render(offspring, height, width, device)
        scores = score(rendered).float().cpu()  # offspring x classes
        best, which = scores.max(dim=0)
        for k in (best > fitness).nonzero().flatten().tolist():
            elites[k], images[k], fitness[k], found[k] = offspring[which[k]], rendered[which[k]], best[k], generation
    bar.close()
    return elites, images, fitness, found


@torch.no_grad()
def fool_cppn(model: nn.Module, shape, rng: torch.Generator, generations_max: int = 300, population: int = 100,
              confidence: float = 0.99, label: str | None = None,
              **mutation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[Genome]]:
    """One fooling image per class of `model`, a CPPN evolved with MAP-Elites on its log-probabilities
    (`mutation`: the arguments of `mutate` but rng). Returns the images, their confidences, the
    generation at which each was found, and the genomes."""
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    channels, height, width = shape
    classes = model(torch.zeros(1, *shape, device=device)).shape[1]
    score = lambda images: F.log_softmax(model(images), dim=1)
    elites, images, log_confidences, found = map_elites(score, channels, height, width, classes, rng,
                                                        generations_max, population, confidence, device, label,
                                                        **mutation)
    return images, log_confidences.exp().to(device), found.to(device), elites
