"""How much memory one training step's activations take, before anything is allocated.

Activations are the tensors autograd saves for the backward pass. They are counted by running a step's forward
passes on torch's meta device (shapes and dtypes, no memory, no arithmetic) under a saved-tensors hook, at batch 1
and at batch 2: what grows with the batch is the difference, and the rest (weight-normalized weights, a flow's
per-step constants) is fixed. Under ``train.precision = "bf16"`` the step runs instead on fake CPU tensors (shapes
and dtypes, as the meta device's) under the CPU's bfloat16 autocast, which casts the same convolutions and matrix
products as a GPU's: what it saves in bfloat16 and what stays float32 (the flows, an input saved before its cast)
is counted as it is (0.6 to 0.8 of the float32 count, not half). The count is with torch's own kernels as a GPU
runs them (on the CPU, avade's ELU saves its output, which the next convolution saves too, so a CPU step saves up
to ~10 % less). It leaves out the backward pass's own temporaries and the allocator's
slack, and counts the phases' tensors as alive together. Against measured peaks of a step's memory above its
weights it came within 25 %: on the CPU (torch.profiler), 446 MiB measured for 476 counted (av_ade_wg_rd, batch 16
of 32x32), 194 for 183 (gan_cifar10), 16 for 20 (vae, 16x16); on an H200, av_ade_wg_rd at batch 32 of 32x32
peaked at 1.1 GiB for 0.92 counted (benchmarks/README.md, scaling).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs
import torch

from avade.errors import AvadeError
from avade.recipe import Recipe
from avade.recipe.schema import ADVERSARIAL_VARIANTS, LIKELIHOOD_VARIANTS


@attrs.frozen
class ActivationEstimate:
    """The bytes of the tensors one training step saves for its backward pass: ``fixed`` whatever the batch, and
    ``per_image`` more for each image of the batch (float32)."""

    fixed: int
    per_image: int

    def at(self, batch: int) -> int:
        """The bytes at a batch of ``batch`` images (one process's)."""
        return self.fixed + batch * self.per_image

    def largest_batch(self, budget: int) -> int:
        """The largest batch whose activations fit in ``budget`` bytes (0: not even one image)."""
        if budget < self.fixed:
            return 0
        return (budget - self.fixed) // self.per_image if self.per_image else 2**31


class _SavedTensors:
    """Counts the bytes of the tensors autograd saves, each storage once (a view saved twice, the same input saved
    by two operations), by phase of the step; the model's parameters are left out (its training state)."""

    def __init__(self, parameters: Any) -> None:
        self.weights = {p.untyped_storage()._cdata for p in parameters}
        self.phase: dict[int, torch.UntypedStorage] = {}
        self.phases: dict[str, dict[int, torch.UntypedStorage]] = {}

    @contextlib.contextmanager
    def counting(self, name: str) -> Iterator[None]:
        self.phase = self.phases.setdefault(name, {})
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in self.weights:  # (the storage kept: freed, its address could name another)
            self.phase[storage._cdata] = storage
        return t

    def of(self, *names: str) -> int:
        """The bytes saved by the phases ``names`` together (alive at once)."""
        merged: dict[int, torch.UntypedStorage] = {}
        for name in names:
            merged.update(self.phases.get(name, {}))
        return sum(storage.nbytes() for storage in merged.values())


def step_saved_bytes(recipe: Recipe, shape: tuple[int, int, int], classes: int, batch: int,
                     device: str = "meta") -> int:
    """The most bytes of saved tensors alive at once in one training step at ``batch``, as
    :meth:`avade.train.trainer.Trainer.train_step` takes it: the critic's update (the samples' graph, kept for the
    generator's, and the critic on real and generated images with its gradient penalty), then the generator's
    (the likelihood bound and the critic's score of the same samples). On ``device``: the meta device, or a real
    one to check the count against (the same tensors are saved)."""
    return _counted(recipe, shape, classes, [batch], device)[1][0]


def _counted(recipe: Recipe, shape: tuple[int, int, int], classes: int, batches: list[int],
             device: str = "meta") -> tuple[dict[str, tuple[int, int]], list[int]]:
    """The model built once on ``device`` (without memory on the meta device): its parameters and their bytes by
    component, and :func:`step_saved_bytes` at each of ``batches``."""
    from avade.models.build import _sizes, build_model
    from avade.nn.precision import Contexts, CouplingNetsInBF16

    cfg = recipe.train
    bf16 = cfg.precision == "bf16"
    place: Any = torch.device(device)
    if bf16 and device == "meta":  # (the meta device has no autocast: fake CPU tensors, which CPU autocast casts
        from torch._subclasses.fake_tensor import FakeTensorMode  # and which hold no memory either)

        place = FakeTensorMode()
    # as Trainer._autocast: the forward passes under autocast, the dequantization and the gradient penalty outside
    kind = "cpu" if device == "meta" else torch.device(device).type
    # (gradients on whatever the caller's mode: under no_grad or inference_mode autograd saves nothing to count)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad(), place:
        model = build_model(recipe, shape, classes)
        model.train()
        counts = []
        for batch in batches:
            autocast: Any = contextlib.nullcontext() if not bf16 else Contexts(
                torch.autocast(kind, dtype=torch.bfloat16), CouplingNetsInBF16(cfg.bf16_coupling_nets))
            counts.append(_step(model, recipe, shape, batch, autocast))
        return _sizes(model), counts


def _step(model: Any, recipe: Recipe, shape: tuple[int, int, int], batch: int, autocast: Any) -> int:
    from avade.losses.adversarial import gradient_penalty
    from avade.models.preprocess import to_unit

    cfg = recipe.train
    likelihood, adversarial = recipe.variant in LIKELIHOOD_VARIANTS, recipe.variant in ADVERSARIAL_VARIANTS
    saved = _SavedTensors(model.parameters())
    x = torch.zeros(batch, *shape, dtype=torch.uint8)
    labels = torch.zeros(batch, dtype=torch.long) if model.num_classes else None
    kept = []  # (the graphs stay alive, as in the step, until everything is counted)
    if adversarial:
        disc = model.discriminator
        assert disc is not None
        with saved.counting("samples"), autocast:
            fake = to_unit(model.generate(batch, labels, flow_grad=cfg.flow_adv_grad, temperature=1.0)).float()
        with saved.counting("critic"):
            real = to_unit(model.preprocess.dequantize(x))
            with autocast:
                kept += [disc(real, labels), disc(fake.detach(), labels)]
            if cfg.gp_weight > 0:
                kept.append(gradient_penalty(disc, real, fake.detach(), labels, cfg.gp_weight))
        with saved.counting("generator"), autocast:
            kept.append(disc(fake, labels))
    if likelihood:
        with saved.counting("generator"), autocast:
            kept.append(model.log_likelihood(x, labels))
    return max(saved.of("samples", "critic"), saved.of("samples", "generator"))


def _estimate(recipe: Recipe, shape: tuple[int, int, int], classes: int
              ) -> tuple[dict[str, tuple[int, int]], ActivationEstimate] | None:
    """The model's component sizes and its :class:`ActivationEstimate`, from one build; None where it cannot be
    built or run on the meta device."""
    try:
        sizes, (one, two) = _counted(recipe, shape, classes, [1, 2])
    except Exception:
        return None
    per_image = max(two - one, 0)
    return sizes, ActivationEstimate(fixed=max(one - per_image, 0), per_image=per_image)


def activation_estimate(recipe: Recipe, shape: tuple[int, int, int], classes: int) -> ActivationEstimate | None:
    """The activations of one training step of ``recipe``'s model on ``shape`` images (``classes`` classes, 0:
    unconditional); None where the model cannot run on the meta device (e.g. a plugin's component that reads its
    tensors' values while running)."""
    found = _estimate(recipe, shape, classes)
    return None if found is None else found[1]


#: how far past the memory free an estimate must be before a recipe is called unable to fit (the count's error
#: against measured peaks reached 25 %)
MARGIN = 1.25


@attrs.frozen
class StepMemory:
    """What one training step of a recipe holds: its training state (``state`` bytes: weights, gradients, optimizer
    moments, weight average) and its activations, counted at the recipe's ``precision`` ("fp32" or "bf16")."""

    state: int
    activations: ActivationEstimate
    precision: str = "fp32"

    def need(self, batch: int) -> int:
        """The bytes of a step at ``batch`` images."""
        return self.state + self.activations.at(batch)

    def largest_batch(self, free: int) -> int:
        """The largest batch whose step fits in ``free`` bytes (0: not even one image)."""
        return self.activations.largest_batch(free - self.state) if free > self.state else 0


def step_memory(recipe: Recipe) -> StepMemory | None:
    """:class:`StepMemory` of ``recipe`` on its dataset's declared image shape; None where that is not declared or
    the model cannot be built or run on the meta device (`recipe check` says why a recipe cannot be built)."""
    from avade.models.build import declared_data, training_state_bytes

    shape, classes = declared_data(recipe)
    if shape is None:
        return None
    found = _estimate(recipe, shape, 10 if classes is None else classes)  # (10: a stand-in, as check_model's)
    if found is None:
        return None
    sizes, estimate = found
    return StepMemory(state=training_state_bytes(recipe, sizes)[0], activations=estimate,
                      precision=recipe.train.precision)


def not_estimated(recipe: Recipe) -> str:
    """Why :func:`step_memory` of ``recipe`` is None, in one line: its dataset declares no resolution, or its model
    cannot be built or run on the meta device (then what raised, where: e.g. a plugin's ``.item()``)."""
    from avade.blame import plugin_at_fault, raised_where
    from avade.models.build import declared_data

    shape, classes = declared_data(recipe)
    if shape is None:
        return f"data '{recipe.data.options.name}' declares no resolution"
    try:
        _counted(recipe, shape, 10 if classes is None else classes, [1])
    except AvadeError as exc:  # a model that cannot be built at all: its own one line
        return f"the model cannot be built: {exc}"
    except Exception as exc:  # (where: the line that read a value, e.g. a plugin's .item())
        culprit = plugin_at_fault(exc)
        return f"the model does not run on torch's meta device: {culprit + ' raised ' if culprit else ''}" \
               f"{raised_where(exc)}"
    return "the model does not run on torch's meta device"


def step_memory_problem(recipe: Recipe, device: str | None = None) -> str | None:
    """Why one training step of ``recipe`` at its ``data.batch_size`` cannot fit in the memory free on its device
    (``device``, else ``train.device``): its :class:`StepMemory` past the free memory by more than the count's
    error, with the largest batch that fits. None where it fits, or where it cannot be told (no declared
    resolution, free memory unknown, a model that cannot run on the meta device)."""
    from avade.memory import memory_free
    from avade.models.build import _run_device

    free, machine = memory_free(_run_device(recipe, device))
    plan = step_memory(recipe) if free is not None else None
    if free is None or plan is None:
        return None
    batch = recipe.data.options.batch_size
    if plan.need(batch) <= MARGIN * free:
        return None
    return f"a training step at data.batch_size = {batch} needs {describe(plan, batch)}; {machine} has " \
           f"{_bytes(free)} free: {fits(plan, free)}"


def describe(plan: StepMemory, batch: int) -> str:
    """``plan`` at ``batch`` in words: "~15.6 GB (73.9 MB of training state, ~15.5 GB of activations, estimated)"."""
    bf16 = ", bf16" if plan.precision == "bf16" else ""
    return (f"~{_bytes(plan.need(batch))} ({_bytes(plan.state)} of training state, "
            f"~{_bytes(plan.need(batch) - plan.state)} of activations, estimated{bf16})")


def fits(plan: StepMemory, free: int) -> str:
    """The batch that fits in ``free`` bytes, as the fix to say."""
    largest = plan.largest_batch(free)
    return (f"data.batch_size = {largest} would fit" if largest else
            "not even one image fits: use a smaller model (model.*) or a device with more memory")


def _bytes(n: float) -> str:
    from avade.models.build import _count

    return f"{_count(n)}B"
