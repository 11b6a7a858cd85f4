"""Training, resuming and sampling on a CUDA GPU (skipped without one; `bash scripts/gpu_check.sh` runs them)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from tiny_recipes import SHIPPED, parting_report, shipped_id, shipped_recipe_step, tiny_recipe

from avade.train import checkpoint as ckpt
from avade.train.trainer import Trainer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# cuBLAS reads it when its first handle is made: set here for a process that starts with these tests
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture
def deterministic():
    """Deterministic kernels (cuDNN's convolution backward is not, by default), so that two runs can be compared
    bit for bit; a kernel without a deterministic version warns instead of failing."""
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = benchmark


def _state(run, step: int) -> dict[str, dict[str, torch.Tensor]]:
    return ckpt.read_checkpoint(run / "checkpoints" / f"step_{step:08d}")


def _differences(a: dict, b: dict) -> list[str]:
    return [f"{part}/{key}" for part in ("model", "optimizer") for key in a[part]
            if not torch.equal(a[part][key], b[part].get(key, torch.empty(0)))]


def _fit(recipe, run, **options) -> Trainer:
    """A run of ``recipe`` on CUDA into ``run``. With AVADE_TEST_EMPTY_CACHE=1 (default off; ``bash
    scripts/gpu_check.sh --only=determinism`` sets it in one variant), the caching allocator's unused blocks are
    first given back to the driver, so that every run starts from the same allocator state: whether what
    earlier work in the process left cached changes which cuDNN plans or workspaces a run gets."""
    if os.environ.get("AVADE_TEST_EMPTY_CACHE") == "1":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
    trainer = Trainer(recipe, run, device="cuda", progress=False, **options)
    trainer.fit()
    return trainer


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_resumed_run_on_cuda_is_bit_identical(tmp_path, deterministic, precision) -> None:
    full = tiny_recipe("train.steps=6", f"train.precision={precision}")
    first_run = _fit(full, tmp_path / "a")
    _fit(tiny_recipe("train.steps=4", f"train.precision={precision}"), tmp_path / "b")
    _fit(full, tmp_path / "b", resume=True)
    a, b = _state(tmp_path / "a", 6), _state(tmp_path / "b", 6)
    assert a["model"].keys() == b["model"].keys()
    differ = _differences(a, b)
    if differ:  # a resume bug, or kernels that are not deterministic: a second uninterrupted run tells which
        _fit(full, tmp_path / "c")
        repeat = _differences(a, _state(tmp_path / "c", 6))
        # the first checkpoint (every 2 steps) where the two uninterrupted runs part, its differing tensors and
        # the kinds of their layers (conv: cuDNN; linear: cuBLAS): where to look
        first, keys = next(((k, d) for k in (2, 4, 6)
                            if (d := _differences(_state(tmp_path / "a", k), _state(tmp_path / "c", k)))), (None, []))
        where = parting_report(first, keys, first_run.model, first_run.optimizers)
        cause = (f"two uninterrupted runs differ too ({repeat[:3]}, {where}): a nondeterministic CUDA kernel"
                 if repeat else "two uninterrupted runs are identical: the resume lost state")
        pytest.fail(f"the resumed run differs from the uninterrupted one in {differ[:5]}; {cause}")


def test_a_bf16_step_on_cuda_is_finite_and_keeps_the_flow_in_float32(tmp_path) -> None:
    trainer = Trainer(tiny_recipe("train.precision=bf16", "train.steps=3", "train.warmup_steps=0"), tmp_path,
                      device="cuda", progress=False)
    assert trainer.device.type == "cuda" and trainer.noise.device.type == "cuda"
    seen: list[torch.dtype] = []
    hook = trainer.model.flow.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    try:
        logs = [trainer.step_once() for _ in range(3)]
    finally:
        hook.remove()
    assert all(row["finite"] == 1.0 for row in logs), logs
    assert all(math.isfinite(v) for row in logs for v in row.values()), logs
    assert seen and all(d == torch.float32 for d in seen), seen  # flows stay float32 under autocast
    assert all(p.dtype == torch.float32 and p.is_cuda for p in trainer.model.parameters())
    assert math.isfinite(trainer.test_bpd())


def test_bf16_coupling_nets_on_cuda_run_the_coupling_networks_in_bf16_and_f_still_inverts(tmp_path) -> None:
    from avade.flows.coupling import AffineCoupling
    from avade.nn.precision import CouplingNetsInBF16

    trainer = Trainer(tiny_recipe("train.precision=bf16", "train.bf16_coupling_nets=true", "train.steps=3",
                                  "train.warmup_steps=0"), tmp_path, device="cuda", progress=False)
    nets: set[torch.dtype] = set()
    coupling = next(m for m in trainer.model.flow.modules() if isinstance(m, AffineCoupling))
    conv = next(m for m in coupling.net.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda m, i, o: nets.add(o.dtype))
    try:
        logs = [trainer.step_once() for _ in range(3)]
    finally:
        hook.remove()
    assert all(row["finite"] == 1.0 for row in logs), logs
    assert nets == {torch.bfloat16}, nets
    flow = trainer.model.flow.eval()
    x = torch.randn(4, *flow.in_shape, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16), CouplingNetsInBF16(), torch.autocast("cuda", enabled=False):
        y, _ = flow(x)
        back = flow.inverse(y)
    torch.testing.assert_close(back, x, atol=0.05, rtol=0)  # (bf16 precision: README)


def test_seeded_sampling_on_cuda_repeats_itself_and_leaves_the_global_rng(tmp_path) -> None:
    trainer = Trainer(tiny_recipe("train.steps=2"), tmp_path, device="cuda", progress=False)
    trainer.fit()
    model = trainer.model.eval()
    before = torch.cuda.get_rng_state()
    first = model.sample(8, generator=torch.Generator(device="cuda").manual_seed(5))
    again = model.sample(8, generator=torch.Generator(device="cuda").manual_seed(5))
    other = model.sample(8, generator=torch.Generator(device="cuda").manual_seed(6))
    assert first.is_cuda and first.dtype == torch.uint8
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(before, torch.cuda.get_rng_state())  # sampling does not move the training stream


def test_a_cuda_checkpoint_holds_the_cuda_random_states(tmp_path) -> None:
    trainer = Trainer(tiny_recipe("train.steps=2"), tmp_path, device="cuda", progress=False)
    trainer.fit()
    rng = ckpt.read_checkpoint(tmp_path / "checkpoints" / "step_00000002")["rng"]
    assert {"torch_cpu", "torch_cuda_0", "gen_noise"} <= set(rng), sorted(rng)
    assert torch.equal(rng["gen_noise"], trainer.noise.get_state())  # the CUDA generator's state, as it ended


@pytest.mark.filterwarnings("ignore:--set data.name")  # a sweep over the real dataset's options is dropped
@pytest.mark.parametrize("path", SHIPPED, ids=shipped_id)
def test_every_shipped_recipe_takes_a_full_deterministic_step_on_cuda(path, tmp_path) -> None:
    """Each component a shipped recipe uses runs forward and backward on CUDA (the reference Real-NVP's
    shift-only batch norm once had no bias gradient there, though all was well on the CPU), under strict
    deterministic mode (not warn_only, as the resume test's fixture): an op without a deterministic CUDA kernel
    (AdaptiveAvgPool2d or bilinear interpolate backward, histc, ...) raises, so bit-exact CUDA resumes stay
    possible for every shipped recipe."""
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    try:
        logs = shipped_recipe_step(path, "cuda", tmp_path)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = benchmark
    assert logs["finite"] == 1.0 and all(math.isfinite(v) for v in logs.values()), logs


@pytest.mark.parametrize("wanted", [True, False])
def test_train_cudnn_benchmark_sets_cudnns_flag_for_the_run_and_run_recipe_puts_it_back(tmp_path, wanted) -> None:
    from avade.train.run import run_recipe

    before = torch.backends.cudnn.benchmark
    seen = []
    try:
        torch.backends.cudnn.benchmark = not wanted
        trainer = Trainer(tiny_recipe("train.steps=1", f"train.cudnn_benchmark={str(wanted).lower()}"),
                          tmp_path / "a", device="cuda", progress=False)
        seen.append(torch.backends.cudnn.benchmark)
        trainer.close()
        torch.backends.cudnn.benchmark = not wanted
        run_recipe(tiny_recipe("train.steps=1", f"train.cudnn_benchmark={str(wanted).lower()}", "train.device=cuda"),
                   tmp_path / "b", progress=False)
        seen.append(torch.backends.cudnn.benchmark)
    finally:
        torch.backends.cudnn.benchmark = before
    assert seen == [wanted, not wanted]
