"""A training step's activations, estimated before anything is allocated (avade.models.activations): counted on
the meta device, they are the tensors a real step saves for its backward pass, they grow with the batch as a real
step's memory does, and they tell `recipe check` and `doctor --recipe` what batch fits."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import avade.memory
from avade.cli.app import app
from avade.models.activations import ActivationEstimate, activation_estimate, step_memory_problem, step_saved_bytes
from avade.models.build import declared_data
from avade.nn.activations import _ELU
from avade.recipe.load import load_recipe

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
runner = CliRunner()
GB = 10**9

# one recipe of each kind of training step: flow + VAE + critic (av-ade), VAE + critic, VAE alone, a Glow flow
# alone (actnorm's data-dependent init), a GAN, a class-conditional av-ade (labels, conditional weight norm)
STEPS = [("quickstart.toml", []), ("vae.toml", []), ("glow.toml", []),
         ("paper/gan_cifar10.toml", []),
         ("paper/av_gde_cifar10.toml", ["data.resolution=16"]),
         ("paper/cond_av_ade_cifar10.toml", ["data.resolution=16", "model.flow.hidden=16"])]


def _recipe(name: str, overrides: list[str]):
    recipe = load_recipe(ROOT / "recipes" / name, overrides)
    shape, classes = declared_data(recipe)
    assert shape is not None
    return recipe, shape, 10 if classes is None else classes


@pytest.mark.parametrize(("name", "overrides"), STEPS, ids=[s[0] for s in STEPS])
def test_the_meta_count_is_what_a_real_step_saves(name: str, overrides: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the same forward passes on the CPU, with real tensors, save exactly the bytes counted without them. (torch's
    # own ELU as on a GPU: avade's CPU ELU saves its output, which the next convolution saves too, where F.elu
    # saves its input, a tensor of its own)
    monkeypatch.setattr(_ELU, "apply", F.elu)
    recipe, shape, classes = _recipe(name, overrides)
    for batch in (1, 3):
        counted = step_saved_bytes(recipe, shape, classes, batch)
        assert counted == step_saved_bytes(recipe, shape, classes, batch, device="cpu") > 0, (name, batch)


def test_the_estimate_grows_with_the_batch_as_counted() -> None:
    recipe, shape, classes = _recipe("quickstart.toml", [])
    estimate = activation_estimate(recipe, shape, classes)
    assert estimate is not None and estimate.per_image > 0 and estimate.fixed > 0
    assert estimate.at(5) == step_saved_bytes(recipe, shape, classes, 5)  # linear: batch 1 and 2 tell any batch
    assert estimate.largest_batch(estimate.at(7)) == 7 and estimate.largest_batch(estimate.at(7) - 1) == 6
    assert estimate.largest_batch(estimate.fixed - 1) == 0
    assert ActivationEstimate(fixed=10, per_image=0).largest_batch(10) == 2**31


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_the_estimate_is_the_same_when_asked_without_gradients(mode: type) -> None:
    # a caller's no_grad (an evaluation loop, a notebook cell) would save no tensor: activations of ~0 fit anything
    recipe, shape, classes = _recipe("quickstart.toml", [])
    estimate = activation_estimate(recipe, shape, classes)
    with mode():
        assert activation_estimate(recipe, shape, classes) == estimate
    assert torch.is_grad_enabled()


def test_the_estimate_is_near_a_measured_step() -> None:
    # the calibration the module's docstring states: within 25 % of a real step's peak memory above its weights
    # (torch.profiler's running sum of CPU allocations, as benchmarks/ measures it)
    from torch.profiler import ProfilerActivity, profile

    from avade.train.trainer import Trainer

    recipe = load_recipe(QUICKSTART, ["data.batch_size=16", "train.warmup_steps=0", "train.critic_warmup_steps=0"])
    shape, _ = declared_data(recipe)
    estimate = activation_estimate(recipe, shape, 0)
    assert estimate is not None
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, Path(run_dir) / "run", progress=False)
        try:
            x = torch.randint(0, 256, (16, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
            labels = torch.zeros(16, dtype=torch.long)
            trainer.train_step(x, labels)  # (the data-dependent init and the optimizer's state: before measuring)
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                trainer.train_step(x, labels)
        finally:
            trainer.close()
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    assert 0.75 * peak <= estimate.at(16) <= 1.25 * peak, (estimate.at(16), peak)


@pytest.mark.parametrize("overrides", [["model.encoder.norm=actnorm"],
                                       ["model.norm_options.weight-norm.init_scale=0.1"]],
                         ids=["actnorm", "weight-norm-init"])
def test_a_model_whose_norms_init_from_data_is_estimated(overrides: list[str]) -> None:
    # the norms' data-dependent init skips the meta device (no data to init from), as the actnorm flow's does
    recipe, shape, classes = _recipe("vae.toml", overrides)
    assert activation_estimate(recipe, shape, classes) is not None


def test_a_model_that_reads_its_values_is_not_estimated(monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. a plugin's component calling .item() while it runs: no estimate, and the summary says why
    from avade.models.generative import GenerativeModel

    real = GenerativeModel.log_likelihood

    def reads(self, x, *args, **kwargs):
        if x.is_meta:
            raise RuntimeError("Tensor.item() cannot be called on meta tensors")
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(GenerativeModel, "log_likelihood", reads)
    recipe, shape, classes = _recipe("quickstart.toml", [])
    assert activation_estimate(recipe, shape, classes) is None
    line = " ".join(runner.invoke(app, ["recipe", "memory", str(QUICKSTART)]).stdout.split())
    # the one reason that applies, and the line that read the values (the recipe declares its resolution)
    assert line.startswith("model: not estimated: the model does not run on torch's meta device: RuntimeError: "
                           "Tensor.item() cannot be called on meta tensors (at "), line
    assert f"{Path(__file__).name}:" in line and "resolution" not in line, line


def test_doctor_says_the_batch_that_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, shape, classes = _recipe("quickstart.toml", ["data.batch_size=64"])
    estimate = activation_estimate(recipe, shape, classes)
    assert estimate is not None
    # free memory: the training state and the activations of 20 images
    from avade.models.build import _meta_sizes, training_state_bytes

    need_state, _ = training_state_bytes(recipe, _meta_sizes(recipe, shape, classes))
    free = need_state + estimate.at(20)
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: free)
    problem = step_memory_problem(recipe, device="cpu")
    assert problem is not None and "a training step at data.batch_size = 64 needs ~" in problem, problem
    assert "estimated); this machine has" in problem and problem.endswith("data.batch_size = 20 would fit"), problem
    # within the count's error: not a problem (an estimate is no reason to refuse what may fit)
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: int((need_state + estimate.at(64)) / 1.2))
    assert step_memory_problem(recipe, device="cpu") is None
    # bf16: counted under autocast, so a larger batch fits, though not twice (flows stay float32)
    bf16 = load_recipe(QUICKSTART, ["data.batch_size=64", 'train.precision="bf16"'])
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: need_state + estimate.at(10))
    halved = activation_estimate(bf16, shape, classes)
    assert halved is not None
    fits = halved.largest_batch(estimate.at(10))
    assert 10 < fits < 20
    said = step_memory_problem(bf16, device="cpu") or ""
    assert said.endswith(f"estimated, bf16); this machine has {(need_state + estimate.at(10)) / 1e6:.3g} MB free: "
                         f"data.batch_size = {fits} would fit"), said
    # nothing fits: a smaller model
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: need_state // 2)
    assert "not even one image fits: use a smaller model" in (step_memory_problem(recipe, device="cpu") or "")
    # unknown free memory: nothing said
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: None)
    assert step_memory_problem(recipe, device="cpu") is None


def test_doctor_is_not_ready_for_a_batch_that_cannot_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, shape, classes = _recipe("quickstart.toml", ["data.batch_size=64"])
    estimate = activation_estimate(recipe, shape, classes)
    assert estimate is not None
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: estimate.at(4))
    result = runner.invoke(app, ["doctor", "--json", "--recipe", str(QUICKSTART), "--set", "data.batch_size=64"])
    report = json.loads(result.stdout)
    assert result.exit_code != 0 and not report["recipe"]["ready"], result.output
    assert any("a training step at data.batch_size = 64 needs" in p for p in report["recipe"]["problems"]), report


def test_recipe_memory_says_the_step_and_the_batch_that_fits() -> None:
    from avade.models.activations import step_memory

    recipe, _, _ = _recipe("quickstart.toml", [])
    plan = step_memory(recipe)
    assert plan is not None
    need = plan.need(32)
    result = runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--memory", f"{need * 3 / 1e6}MB"])
    assert result.exit_code == 0, result.output
    line = " ".join(result.stdout.split())
    assert line.startswith(f"model: a step at batch 32 needs ~{need / 1e6:.3g} MB ({plan.state / 1e6:.3g} MB of "
                           "training state, ~"), line
    assert line.endswith(f"estimated); in {need * 3 / 1e6}MB: fits, up to data.batch_size = "
                         f"{plan.largest_batch(int(need * 3))}"), line
    assert 3 * 32 <= plan.largest_batch(int(need * 3)) < 4 * 32  # (the state is small beside the activations)
    tight = " ".join(runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--memory", f"{need // 2}B"])
                     .stdout.split())
    assert tight.endswith(f"does not fit, data.batch_size = {plan.largest_batch(need // 2)} would fit"), tight
    none = " ".join(runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--memory", "1MB"]).stdout.split())
    assert none.endswith("in 1MB: not even one image fits: use a smaller model (model.*) or a device with more "
                         "memory"), none
    rows = json.loads(runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--json", "--memory", "1GiB"]).stdout)
    assert rows == [{"variants": ["quickstart"], "batch": 32, "processes": 1, "free_bytes": 2**30, "where": "in 1GiB",
                     "need_bytes": need, "state_bytes": plan.state, "activations_bytes": need - plan.state,
                     "per_image_bytes": plan.activations.per_image, "largest_batch": plan.largest_batch(2**30),
                     "precision": "fp32"}]


def test_recipe_memory_reads_this_machine_without_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: 5 * GB)
    line = " ".join(runner.invoke(app, ["recipe", "memory", str(QUICKSTART)]).stdout.split())
    assert "estimated); this machine has 5 GB free: fits, up to data.batch_size = " in line, line


def test_recipe_memory_of_a_sweep_is_one_line_per_model_and_batch(write) -> None:
    sweep = write("sweep.toml", f'extends = "{QUICKSTART.as_posix()}"\n[sweep]\n'
                                'grid = {"train.seed" = [0, 1], "data.batch_size" = [8, 16]}\n')
    result = runner.invoke(app, ["recipe", "memory", str(sweep), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["batch"] for r in rows) == [8, 16] and all(len(r["variants"]) == 2 for r in rows), rows
    same = write("same.toml", f'extends = "{QUICKSTART.as_posix()}"\n[sweep]\ngrid = {{"train.seed" = [0, 1, 2]}}\n')
    assert " ".join(runner.invoke(app, ["recipe", "memory", str(same)]).stdout.split()).startswith(
        "all 3 variants: a step at batch 32 needs ~")


def test_recipe_memory_says_a_step_within_the_estimate_s_error_may_not_fit() -> None:
    from avade.models.activations import step_memory

    plan = step_memory(_recipe("quickstart.toml", [])[0])
    assert plan is not None
    free = int(plan.need(32) / 1.1)
    line = " ".join(runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--memory", f"{free}B"]).stdout.split())
    assert line.endswith(f"in {free}B: may not fit (within the estimate's 25 %): data.batch_size = "
                         f"{plan.largest_batch(free)} would fit"), line


@pytest.mark.parametrize("options", [["--set", "data.batch_size=1"],
                                     ["--set", "data.batch_size=4", "--processes", "4"]])
def test_a_step_that_may_not_fit_at_one_image_names_no_batch_of_0(options: list[str]) -> None:
    # one image each, within the estimate's error: no smaller batch exists ("data.batch_size = 0 would fit")
    from avade.models.activations import step_memory

    plan = step_memory(_recipe("quickstart.toml", [])[0])
    assert plan is not None
    free = int(plan.need(1) / 1.1)
    result = runner.invoke(app, ["recipe", "memory", str(QUICKSTART), *options, "--memory", f"{free}B"])
    line = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "= 0" not in line, line
    assert line.endswith(f"in {free}B: may not fit (within the estimate's 25 %), and no smaller batch is estimated "
                         "to fit"), line


def test_recipe_memory_help_says_what_the_verdicts_are() -> None:
    # the help said "a step within 25 % of the memory may not fit", but one under the memory fits: only a step
    # past the memory, by up to the estimate's 25 %, may not
    from avade.models.activations import step_memory

    shown = " ".join(runner.invoke(app, ["recipe", "memory", "--help"]).stdout.split())
    assert "a step up to 25 % over the memory may not fit" in shown, shown
    plan = step_memory(_recipe("quickstart.toml", [])[0])
    assert plan is not None
    free = int(plan.need(32) * 1.1)  # the step is within 25 % of the memory, under it
    line = " ".join(runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--memory", f"{free}B"]).stdout.split())
    assert f"in {free}B: fits, up to data.batch_size = " in line, line


def test_recipe_memory_plans_a_torchrun_job(write) -> None:
    # each of N processes takes batch / N images and holds its own training state
    from avade.models.activations import step_memory

    plan = step_memory(_recipe("quickstart.toml", [])[0])
    assert plan is not None
    free = plan.need(8) * 2
    result = runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--processes", "4", "--memory", f"{free}B"])
    assert result.exit_code == 0, result.output
    line = " ".join(result.stdout.split())
    assert line.startswith(f"model: a step at batch 32 (8 in each of 4 processes) needs ~{plan.need(8) / 1e6:.3g} MB "
                           f"({plan.state / 1e6:.3g} MB of training state"), line
    assert line.endswith(f"estimated) in each; in {free}B: fits, up to data.batch_size = "
                         f"{4 * plan.largest_batch(free)}"), line
    rows = json.loads(runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--processes", "4", "--json"]).stdout)
    assert rows[0]["processes"] == 4 and rows[0]["need_bytes"] == plan.need(8), rows
    refused = runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--processes", "3"])
    assert refused.exit_code == 2, refused.output
    assert "data.batch_size: 32 is not divisible by --processes 3; set a multiple of 3" in refused.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="the note is for a machine without a GPU")
def test_recipe_memory_says_a_cuda_recipe_is_compared_with_the_host_here() -> None:
    result = runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--set", 'train.device="cuda"'])
    assert result.exit_code == 0, result.output
    assert "note: train.device = 'cuda', but this machine has no GPU: its host memory is what is compared; give " \
        "--memory SIZE for the GPU you plan for" in " ".join(result.stderr.split()), result.stderr
    assert "note" not in runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--set", 'train.device="cuda"',
                                             "--memory", "80GB"]).stderr


@pytest.mark.parametrize("size", ["1xB", "-3GB", "GB", "0", "1.2.3GB", "16iB", "0.1B", "1e9", ".5"])
def test_recipe_memory_refuses_a_size_it_cannot_read(size: str) -> None:
    result = runner.invoke(app, ["recipe", "memory", str(QUICKSTART), "--memory", size])
    assert result.exit_code == 2 and "Invalid value for --memory: " in result.output, result.output
    assert "is not a memory size; say e.g. 16GB, 80GiB or 512MB" in result.output


@pytest.mark.parametrize(("size", "expected"), [("16GB", 16 * GB), ("80GiB", 80 * 2**30), ("512 MiB", 512 * 2**20),
                                                ("1.5g", int(1.5 * GB)), ("100", 100), ("2kb", 2000),
                                                (".5GB", GB // 2), ("0.5 TB", 500 * GB), ("16 gb", 16 * GB)])
def test_memory_sizes_in_decimal_and_binary_units(size: str, expected: int) -> None:
    from avade.cli.app import _memory_size

    assert _memory_size(size) == expected


@pytest.mark.parametrize(("name", "overrides"), [("paper/gan_cifar10.toml", ["data.resolution=16"]),
                                                 ("paper/cond_av_ade_cifar10.toml",
                                                  ["data.resolution=16", "model.flow.hidden=16"])])
def test_bf16_is_counted_as_autocast_saves_it(name: str, overrides: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # under bf16 the step is counted under autocast (on fake tensors, no memory): exactly what a real bf16 step on
    # the CPU saves, less than float32's but well above half of it (the flows and casts' inputs stay float32), so
    # halving the float32 count would promise batches that do not fit
    from avade.models.activations import step_memory

    monkeypatch.setattr(_ELU, "apply", F.elu)
    recipe, shape, classes = _recipe(name, overrides)
    bf16 = load_recipe(ROOT / "recipes" / name, [*overrides, 'train.precision="bf16"'])
    counted = step_saved_bytes(bf16, shape, classes, 3)
    assert counted == step_saved_bytes(bf16, shape, classes, 3, device="cpu")
    fp32 = step_saved_bytes(recipe, shape, classes, 3)
    assert 0.6 * fp32 < counted < fp32, (counted, fp32)
    plan, full = step_memory(bf16), step_memory(recipe)
    assert plan is not None and full is not None
    assert plan.need(64) - plan.state > 0.6 * (full.need(64) - full.state)


def test_doctor_is_not_ready_for_a_model_that_cannot_run_on_the_images() -> None:
    # `recipe check` refuses it (exit 2): doctor, asked whether the recipe can start here, said ready
    result = runner.invoke(app, ["doctor", "--json", "--recipe", str(QUICKSTART), "--set", "data.resolution=15"])
    report = json.loads(result.stdout)
    assert result.exit_code == 2 and not report["recipe"]["ready"], result.output
    assert report["recipe"]["problems"] == [
        "model.encoder: encoder 'resnet': input resolution 15x15 is not divisible by 4 (= 2**(len(channels)-1) for 3 "
        "stages); use a resolution divisible by 4 or fewer entries in `channels`"], report
