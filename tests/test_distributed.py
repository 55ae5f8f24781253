"""One train-cnn or train-gan run on several processes (DistributedDataParallel under torchrun, gloo on
the CPU): the same global batch, learning rate and batch-norm statistics as one process, so the same
weights up to the rounding of sums taken in another order."""

import json
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from dlcourse.pipeline import distributed, params
from dlcourse.course.gans import eras as gan_eras, generative, setup as gan_setup
from dlcourse.pipeline.distributed import World
from dlcourse.files import load_torch
from dlcourse.course.models import load_classifier
from workspace import ROOT, free_port

STAGE, ENTRY = "train-cnn@mnist", "mnist"  # mnistnet: batch norm, no dropout
# The processes sum each batch's gradients and batch-norm statistics in halves, then average them
# (gloo), where one process sums them at once: the same numbers up to float32 rounding, which 10 steps
# of SGD at lr 0.1 with batch norm amplify. The difference is measured relative to each tensor's scale
# (max |a - b| / max(1, max |a|)): the running_var of the head's batch norm reaches 46, so rounding noise
# that is 2e-4 of it is 0.01 in absolute terms. Measured: on an AMD EPYC, 0.0032 absolute at most (one
# process with only its memory layout changed ends as far); on an Intel Xeon, 0.0103 absolute on that
# running_var (2.2e-4 relative) and 6.2e-4 relative at most (a running_mean of scale 1.5). The bar was
# an absolute 1e-2 until that Intel run failed it; it became this relative one after, a factor 5 over
# the largest relative noise measured. The batch norm's exact equivalence is tested on its own above.
WEIGHT_TOLERANCE = 3e-3


def test_the_shards_are_those_of_distributed_sampler():
    """Over the shuffled order of an epoch, DistributedSampler (W replicas, no shuffle of its own) with
    batches of B / W gives each process the shards of the global batches of B, in order."""
    order = torch.randperm(1024, generator=torch.Generator().manual_seed(0))
    batch_size, size = 64, 4
    for rank in range(size):
        world = World(rank, size)
        sampler = DistributedSampler(order.tolist(), num_replicas=size, rank=rank, shuffle=False)
        positions = torch.tensor(list(sampler))
        expected = [order[chunk] for chunk in positions.split(batch_size // size)]
        shards = [world.shard(batch) for batch in order.split(batch_size)]
        assert len(shards) == len(expected) and all(torch.equal(a, b) for a, b in zip(shards, expected))
    assert torch.equal(torch.cat([World(r, size).shard(order[:64]) for r in range(size)]).sort().values,
                       order[:64].sort().values)  # together, exactly the global batch


def test_a_batch_that_does_not_split_is_refused():
    with pytest.raises(ValueError, match="batch_size 64 does not split evenly over 3 processes"):
        World(0, 3).check_batch_size(64, 600, "train_cnn.mnist")
    with pytest.raises(ValueError, match="the last batch of each epoch has 1 images, fewer than the 2 processes"):
        World(0, 2).check_batch_size(64, 641, "train_cnn.mnist")
    World(0, 2).check_batch_size(64, 600, "train_cnn.mnist")  # a last batch of 24: 12 each
    assert World(0, 2).loss_weight(32, 64) == 1.0 and World(1, 2).loss_weight(12, 64) == 0.375


def in_two_processes(target, *args) -> dict:
    """`target(rank, *args)` in two spawned processes joined by gloo on loopback: what each returned
    (a tensor, or a dict of them, nested or not), by rank."""
    context = torch.multiprocessing.get_context("spawn")
    results, port = context.Queue(), free_port()
    workers = [context.Process(target=_joined, args=(rank, port, results, target, *args)) for rank in range(2)]
    for worker in workers:
        worker.start()
    got = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    return {rank: _tensors(result, torch.from_numpy) for rank, result in got.items()}


def _joined(rank: int, port: int, results, target, *args) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    copied = _tensors(target(rank, *args), lambda tensor: tensor.detach().numpy().copy())
    results.put((rank, copied))  # not shared memory: it exits
    dist.destroy_process_group()


def _tensors(value, convert):
    return {key: _tensors(item, convert) for key, item in value.items()} if isinstance(value, dict) else convert(value)


def _batch_norm_in_two_processes(rank: int, x: torch.Tensor, out_grad: torch.Tensor) -> dict:
    torch.manual_seed(0)
    model = distributed.sync_batch_norm(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cpu"))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        model[0].bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    shard = x[rank::2].clone().requires_grad_()
    output = model(shard)
    (output * out_grad[rank::2]).sum().backward()
    return dict(enumerate((output, shard.grad, model[0].weight.grad, model[0].bias.grad, model[0].running_mean,
                           model[0].running_var)))


def test_gloo_batch_norm_over_two_processes_is_one_batch_norm_of_the_whole_batch():
    x = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 3 + 1
    out_grad = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    reference = nn.BatchNorm2d(3)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        reference.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    whole = x.clone().requires_grad_()
    expected = reference(whole)
    (expected * out_grad).sum().backward()

    results = in_two_processes(_batch_norm_in_two_processes, x, out_grad)
    got = {rank: list(result.values()) for rank, result in results.items()}
    close = dict(atol=1e-5, rtol=1e-5)
    for rank in range(2):
        output, x_grad, weight_grad, bias_grad, running_mean, running_var = got[rank]
        torch.testing.assert_close(output, expected[rank::2].detach(), **close)
        torch.testing.assert_close(x_grad, whole.grad[rank::2], **close)  # through the other half's statistics too
        torch.testing.assert_close(running_mean, reference.running_mean, **close)
        torch.testing.assert_close(running_var, reference.running_var, **close)  # unbiased, over all 10 x 4 x 4
    # The parameters' gradients, summed over the processes (DDP all-reduces them), are the whole batch's.
    torch.testing.assert_close(got[0][2] + got[1][2], reference.weight.grad, **close)
    torch.testing.assert_close(got[0][3] + got[1][3], reference.bias.grad, **close)


# --- train-gan ---------------------------------------------------------------------------------

GAN_ENTRIES = ["dcgan-2015", "wgan-gp-2017", "stylegan-2019", "sngan-2018", "conditional", "gan-2014", "progan-2017",
               "cogan-2016"]
# Two processes sum each batch's gradients (and batch-norm statistics) in halves, then average them,
# where one process sums them at once: the same numbers up to the rounding of float sums in another
# order. In float32 (1e-7 of each sum), Adam amplifies that rounding where a gradient is near zero:
# measured after these 8 steps, StyleGAN's weights end up to 2e-4 apart (its lr 0.0025; the other eras
# 3e-8), while Adam's steps bound what a bug can change to about 8 x lr (1.6e-3 at DCGAN's lr 2e-4): no
# float32 bar tells the two apart. Hence float64 (rounding: 1e-16 of each sum). Measured in float64 before
# setting the bar: 2 processes end at most 3e-14 from 1 (StyleGAN's generator; 2e-15 and less for the other
# eras), whereas each process drawing its own per-pixel noise instead of its shard of the global batch's
# ends 4e-2 away (StyleGAN; the 2014 discriminator's dropout: 3e-4), and batch norm over each shard instead of
# the global batch 1.6e-3 (DCGAN). The
# bar leaves a factor 3000 over the rounding, for other CPUs' kernels. The stage run below is float32.
GAN_WEIGHT_TOLERANCE = 1e-10


@pytest.fixture
def float64():
    """float64 as torch's default dtype for this test's own process (a spawned one sets it itself)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _train_tiny_gan(rank: int | None, entry: str) -> dict:
    """params.yaml's entry (its era, losses, critic steps, penalty, optimizer, moving average), narrowed to
    width 4 and 2 epochs of 4 global batches of 32 random images, in float64; on one process (rank None),
    or as the rank of two processes. Its trained networks' state dicts."""
    p = params.load(ROOT / "params.yaml").entry("train_gan", entry)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)  # as seed_everything: the same initial weights and StyleGAN noise in every process
    domains = gan_eras.ERAS[p.era].domains  # a coupled GAN's images: its domains' channels, one by one
    images = torch.randint(0, 256, (256, domains, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    labels = torch.arange(256) % 10
    classes = 10 if gan_eras.ERAS[p.era].conditional else 0
    generator, discriminator = gan_eras.build(p.era, p.latent_dim, 4, (1, 28, 28), classes)
    opt_g, opt_d = generative.make_optimizers(generator, discriminator, (p.lr_g, p.lr_d), (p.beta1, p.beta2),
                                              p.optimizer)
    ema = generative.exponential_moving_average(generator, p.ema_decay) if p.ema_decay else None
    recipe = gan_setup.recipe(p)
    generative.train_gan(generator, discriminator, opt_g, opt_d, images, labels, recipe=recipe, ema=ema, epochs=2,
                         epoch_images=128, batch_size=32, rng=torch.Generator().manual_seed(0), device="cpu",
                         world=World(rank, 2) if rank is not None else None)
    return {"generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else {}}


def _train_tiny_gans(rank: int | None) -> dict:
    """Every entry of GAN_ENTRIES trained tiny (`_train_tiny_gan`), one after the other in one process:
    two processes spawned once for all of them (each spawn costs seconds of imports)."""
    return {entry: _train_tiny_gan(rank, entry) for entry in GAN_ENTRIES}


@pytest.fixture(scope="module")
def gans_in_two_processes() -> dict:
    return in_two_processes(_train_tiny_gans)


@pytest.mark.xdist_group("gans-in-two-processes")  # one worker: the fixture's two processes spawned once
@pytest.mark.parametrize("entry", GAN_ENTRIES)
def test_two_processes_train_the_gan_of_one(entry, float64, gans_in_two_processes):
    """Batch norm over the global batch (DCGAN, conditional), the gradient penalty through the critic in
    DistributedDataParallel (WGAN-GP), spectral norm's power iteration (SNGAN), R1, the moving average
    and the per-pixel noise (StyleGAN), the layers not grown yet and the minibatch standard deviation
    (ProGAN), the layers two domains share (CoGAN): the networks of one process, the same in both processes."""
    one = _train_tiny_gan(None, entry)
    two = {rank: result[entry] for rank, result in gans_in_two_processes.items()}
    for network in one:
        assert all(torch.equal(two[0][network][k], two[1][network][k]) for k in one[network]), network  # buffers too
        if one[network]:
            difference = max_difference(one[network], two[0][network])
            print(f"{entry} {network}: 2 processes vs 1, max |difference| {difference:.3g}")
            assert difference <= GAN_WEIGHT_TOLERANCE, network


def weights(path) -> dict[str, torch.Tensor]:
    model, _ = load_classifier(path)
    return model.state_dict()


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def max_relative_difference(a: dict, b: dict) -> float:
    """The largest difference between two state dicts, each tensor's relative to its scale."""
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() / max(1.0, a[k].double().abs().max().item())
               for k in a)


def accuracy(ws) -> float:
    return json.loads((ws.path / f"metrics/cnn/{ENTRY}.json").read_text())["test_accuracy"]


def stage_runs(ws, stage: str = STAGE) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{ws.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dl-course")
    return client.search_runs([experiment.experiment_id], f"tags.`dvc.stage` = '{stage}'",
                              order_by=["attributes.start_time DESC"])


@pytest.mark.slow
@pytest.mark.system
def test_two_processes_train_the_weights_of_one(workspace, built):
    one = weights(built.path / f"models/cnn/{ENTRY}.pt")
    workspace.set_param(f"train_cnn.{ENTRY}.processes", 2)
    assert workspace.repro("-s", STAGE) == [STAGE]

    two = weights(workspace.path / f"models/cnn/{ENTRY}.pt")
    difference = max_relative_difference(one, two)
    print(f"2 processes vs 1: max relative |weight difference| {difference:.3g}, test accuracy "
          f"{accuracy(workspace)} vs {accuracy(built)}")
    assert difference <= WEIGHT_TOLERANCE
    assert accuracy(workspace) == accuracy(built)
    timing = json.loads((workspace.path / f"metrics/timing/{STAGE}.json").read_text())
    assert timing["world_size"] == 2
    latest = stage_runs(workspace)[0]  # one run, of rank 0, for the two processes
    assert latest.info.status == "FINISHED" and latest.data.params["world_size"] == "2"
    assert latest.data.params[f"train_cnn.{ENTRY}.processes"] == "2"
    assert len(stage_runs(workspace)) == len(stage_runs(built)) + 1


def torchrun(ws, *options: str, script: str = "stages/train_cnn.py", arguments=(ENTRY,)) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *options, script, *arguments],
                            cwd=ws.path, env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.system
def test_two_nodes_meet_at_a_rendezvous_and_train_the_weights_of_one(workspace, built):
    """Two `torchrun` commands, as on two machines, meeting at a c10d rendezvous on 127.0.0.1."""
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [torchrun(workspace, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                      f"--rdzv-endpoint={endpoint}", "--rdzv-id=two-nodes", f"--node-rank={rank}")
             for rank in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs

    difference = max_relative_difference(weights(built.path / f"models/cnn/{ENTRY}.pt"),
                                         weights(workspace.path / f"models/cnn/{ENTRY}.pt"))
    print(f"2 nodes vs 1 process: max relative |weight difference| {difference:.3g}")
    assert difference <= WEIGHT_TOLERANCE and accuracy(workspace) == accuracy(built)
    latest = stage_runs(workspace)[0]
    assert latest.info.status == "FINISHED" and latest.data.params["world_size"] == "2"


FAULTY_RANK = """
import os, runpy, sys
from dlcourse.course import data

if os.environ["RANK"] == "1":
    def unreadable(*args, **kwargs):
        raise OSError("rank 1 cannot read its data (a fault the test injects)")
    data.load_split = unreadable
sys.argv = ["stages/train_cnn.py", *sys.argv[1:]]
runpy.run_path("stages/train_cnn.py", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.system
def test_a_failing_rank_fails_the_whole_job_with_its_error(workspace, tmp_path):
    model = workspace.path / f"models/cnn/{ENTRY}.pt"
    before, runs_before = model.read_bytes(), len(stage_runs(workspace))
    (tmp_path / "faulty_rank.py").write_text(FAULTY_RANK)
    job = torchrun(workspace, "--standalone", "--nproc-per-node=2", script=str(tmp_path / "faulty_rank.py"))
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode != 0
    assert "OSError: rank 1 cannot read its data (a fault the test injects)" in stderr  # the rank's traceback
    assert "Root Cause" in stderr and re.search(r"rank\s*: 1 ", stderr), stderr  # torchrun names the rank
    assert model.read_bytes() == before  # rank 0 wrote nothing
    new_runs = stage_runs(workspace)[: len(stage_runs(workspace)) - runs_before]
    assert all(run.info.status != "FINISHED" for run in new_runs)


GAN_STAGE, GAN_ENTRY = "train-gan@dcgan-2015", "dcgan-2015"  # batch norm in both networks
# float32, as the stage runs: measured 8e-9 between 2 processes and 1 after the tiny entry's 4 steps of
# Adam at lr 2e-4; one step that a bug changes moves weights by up to 2e-4 (see GAN_WEIGHT_TOLERANCE).
GAN_STAGE_TOLERANCE = 1e-6


def gan_checkpoint(ws, epoch: int = 2) -> dict:
    return load_torch(ws.path / f"models/gan/{GAN_ENTRY}/epoch_{epoch:02d}.pt")


@pytest.mark.slow
@pytest.mark.system
def test_a_gan_stage_on_two_processes_trains_the_networks_of_one_and_logs_one_run(workspace, built):
    one, runs_before = gan_checkpoint(built), len(stage_runs(built, GAN_STAGE))
    workspace.set_param(f"train_gan.{GAN_ENTRY}.processes", 2)
    assert workspace.repro("-s", GAN_STAGE) == [GAN_STAGE]

    two = gan_checkpoint(workspace)
    for network in ("generator", "discriminator"):
        difference = max_difference(one[network], two[network])
        print(f"{GAN_STAGE} {network}: 2 processes vs 1, max |difference| {difference:.3g}")
        assert difference <= GAN_STAGE_TOLERANCE, network
    assert two["fingerprint"] == one["fingerprint"]  # the processes are not part of the run: either resumes it
    timing = json.loads((workspace.path / f"metrics/timing/{GAN_STAGE}.json").read_text())
    assert timing["world_size"] == 2
    runs = stage_runs(workspace, GAN_STAGE)  # one run, of rank 0, for the two processes
    assert len(runs) == runs_before + 1
    assert runs[0].info.status == "FINISHED" and runs[0].data.params["world_size"] == "2"
    assert runs[0].data.params[f"train_gan.{GAN_ENTRY}.processes"] == "2"


ONLY_RANK_0_WRITES = """
import os, runpy, shutil, sys
from dlcourse import files
from dlcourse.pipeline import tracking

if os.environ["RANK"] != "0":
    def refused(*args, **kwargs):
        raise AssertionError(f"rank {os.environ['RANK']} writes {args[:1]} (the test refuses it)")
    files.atomic_path = tracking.stage_run = shutil.rmtree = refused  # every output, the run, the clearing
sys.argv = ["stages/train_gan.py", *sys.argv[1:]]
runpy.run_path("stages/train_gan.py", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.system
def test_only_rank_0_of_a_gan_run_writes_and_every_rank_resumes_from_its_checkpoint(workspace, built, tmp_path):
    (tmp_path / "only_rank_0_writes.py").write_text(ONLY_RANK_0_WRITES)

    def run(*arguments: str) -> str:
        job = torchrun(workspace, "--standalone", "--nproc-per-node=2", script=str(tmp_path / "only_rank_0_writes.py"),
                       arguments=(GAN_ENTRY, *arguments))
        stdout, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stderr
        return stdout

    run()
    uninterrupted = gan_checkpoint(workspace)
    assert max_difference(gan_checkpoint(built)["generator"], uninterrupted["generator"]) <= GAN_STAGE_TOLERANCE
    (workspace.path / f"models/gan/{GAN_ENTRY}/epoch_02.pt").unlink()  # killed during epoch 2
    assert f"resuming from models/gan/{GAN_ENTRY}/epoch_01.pt" in run("--resume")
    resumed = gan_checkpoint(workspace)
    for network in ("generator", "discriminator"):  # the same processes, the same sums: the same bytes
        assert all(torch.equal(uninterrupted[network][k], resumed[network][k]) for k in resumed[network]), network
    assert resumed["history"] == uninterrupted["history"]

