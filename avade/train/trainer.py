"""The one training loop: Algorithm 1 of the paper, for every variant.

Per step: (1) if the variant has L_Q: ``d_steps`` discriminator updates on real images vs samples,
with the gradient penalty; (2) one generator update on ``L_C + adv_weight * L_Q`` (L_C only for
V-ADE/VAE and during MLE warm-up, L_Q only for GAN). L_C is ``-log p(x)`` in nats per image (batch
mean), so ``adv_weight`` (paper: 10-100) weighs the adversarial term against the full likelihood.
With ``train.flow_adv_grad = false`` (paper) L_Q's gradient stops at f's parameters.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import math
import time
import traceback
import warnings
import weakref
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from avade.atomic_files import drop_stale_temporaries, locked_for, naming
from avade.contracts import ModuleLike
from avade.data.base import class_counts, data_of_trained_model
from avade.errors import AvadeError, CheckpointError, ConfigError, DataError, StoppedError, TrainingError, argument
from avade.flows.batch_norm import BatchNormFlow
from avade.losses.adversarial import (
    CollapseDetector,
    ModeCollapseDetector,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    mode_statistics,
)
from avade.memory import OutOfMemory, naming_memory
from avade.models import GenerativeModel
from avade.models.build import build_checked
from avade.models.preprocess import to_unit
from avade.nn import frozen
from avade.nn.precision import Contexts, CouplingNetsInBF16
from avade.nn.replicas import replica_statistics
from avade.recipe.load import saved_before_hint
from avade.recipe.schema import (
    ADVERSARIAL_VARIANTS,
    LIKELIHOOD_VARIANTS,
    AbsentConfig,
    Recipe,
    refuse_a_non_recipe,
    refuse_a_sweep,
)
from avade.recipe.write import recipe_to_dict, recipe_to_toml
from avade.train import checkpoint as ckpt
from avade.train.compiling import check_compile_backend, compile_in_place, compiled
from avade.train.data import BatchStream, eval_batches, indexed_batches
from avade.train.datasets import load_datasets_on_node
from avade.train.device import (
    configure_tf32,
    cpu_has_native_bf16,
    cuda_has_native_bf16,
    resolve_device,
    seed_everything,
)
from avade.train.distributed import (
    DistInfo,
    all_gather_bytes,
    all_sum,
    average_gradients,
    average_tensors,
    broadcast_buffers,
    broadcast_parameters,
    init_distributed,
)
from avade.train.ema import WeightAverage, averaged_names, check_fits
from avade.train.logger import MetricsLogger
from avade.train.optim import make_optimizer, total_norm
from avade.train.preemption import UNRESUMED_STOP, UNSTARTED_STOP, StopRequest, stop_on_signals
from avade.train.provenance import component_providers, data_changes_text, data_read, data_read_changes, environment
from avade.train.ranks import alike_on_this_node
from avade.train.rundir import RunDir, atomic_write_text, checkpoint_name, read_json_object, write_json
from avade.train.schedule import linear_warmup, lr_factor, schedule_changes, scheduled, whole_run_warm_up

#: how long a process other than rank 0 that fails right after a checkpoint waits for rank 0 to put it in place
#: (to name it as what --resume goes on from)
JOB_CHECKPOINT_WAIT_S = 30.0


class Trainer:
    """Trains one recipe into one run directory (see :mod:`avade.train.rundir`).

    It seeds the process's global random states (python's, numpy's, torch's: ``train.seed``), which training draws
    from and checkpoints: a notebook that wants its own back afterwards trains through
    :func:`avade.train.run.run_recipe`, which restores them."""

    def __init__(self, recipe: Recipe, run_dir: Path, *, resume: bool = False, device: str | None = None,
                 console: Console | None = None, progress: bool = True) -> None:
        refuse_a_non_recipe(recipe, "Trainer")
        refuse_a_sweep(recipe, "Trainer")
        self.recipe = recipe
        self.cfg = recipe.train
        self.run = RunDir(Path(run_dir))
        self.console = console or Console(stderr=True)
        self.progress = progress
        with alike_on_this_node():  # the recipe's or --device's device, on this node's GPUs: alike for every process
            try:
                self.device = resolve_device(device or self.cfg.device)
            except ConfigError as exc:
                if device is None:  # the recipe's train.device
                    raise
                raise ConfigError(exc.detail, path=argument("device")) from None  # the caller's (--device)
        self.dist: DistInfo = init_distributed(self.device.type)
        # Everything up to the first batch follows from the recipe, the files and the environment alone: under
        # torchrun every process on a node that fails here fails alike, and the node's first process alone says it.
        with alike_on_this_node():
            self._set_up(recipe, resume)
        if self.step == 0:
            self._data_init_in_every_process()
        if self.dist.enabled:
            self._sync_replicas()
        # The weight average starts from the initialised (and synced) weights, or continues the checkpoint's.
        self.ema = self._weight_average()
        # What train_step calls: the model's methods, or compiled versions of them (train.compile).
        self.log_likelihood = self.model.bound
        self.generate = self.model.generate
        if self.cfg.compile:
            self._compile()
        self.autocast = self._autocast()

    def _set_up(self, recipe: Recipe, resume: bool) -> None:
        """The run directory, data, model, optimizers and (``resume``) the checkpoint's state: nothing
        that depends on this process's rank (its first batch is read after)."""
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.gpu)
        if self.device.type == "cuda":
            configure_tf32(self.cfg.tf32)
            torch.backends.cudnn.benchmark = self.cfg.cudnn_benchmark
        critic = recipe.model.discriminator
        if critic is not None and isinstance(critic.config, AbsentConfig):  # e.g. a recipe from avade.load_model
            raise ConfigError(f"discriminator '{critic.name}' is not installed, and training needs it; install its "
                              "plugin", path="model.discriminator.name", source=recipe.source)
        self.recipe_dict = recipe_to_dict(recipe)
        self.fingerprint = ckpt.fingerprint(self.recipe_dict)
        self.providers = component_providers(recipe)  # recorded in checkpoints
        # recorded in the checkpoints, which rank 0 alone writes (git is asked in subprocesses)
        self.environment = environment() if self.dist.is_main else {}
        self._check_run_dir(resume)
        if self.cfg.compile:
            check_compile_backend(self.cfg.compile_backend)
        seed_everything(self.cfg.seed + self.dist.rank)
        with data_of_trained_model() if resume else contextlib.nullcontext():
            self.train_set, self.test_set = load_datasets_on_node(recipe, self.dist)
        # recorded in the checkpoints: which version, layout and split of the data were read (rank 0 writes them)
        self.data_read = data_read(recipe, self.train_set, self.test_set) if self.dist.is_main else {}
        # recorded in checkpoints: a conditional model is then sampled with the data's balance without the data
        self.class_counts = class_counts(self.train_set)
        # (a training state that cannot fit is refused before its weights are allocated: not killed later)
        self.model: GenerativeModel = build_checked(recipe, self.train_set.shape, self.train_set.num_classes,
                                                    str(self.device))
        self.model.to(self.device)
        from avade.evaluate import build_metrics, check_inception_weights

        # The recipe's eval metrics must fit the model, and find their weights: fail before step 0.
        check_inception_weights(build_metrics(recipe.eval.metrics, recipe, self.model.num_classes), recipe)
        self._make_run_dir()  # only once data and model exist: a bad recipe leaves no empty run behind
        self.likelihood = recipe.variant in LIKELIHOOD_VARIANTS
        self.adversarial = recipe.variant in ADVERSARIAL_VARIANTS
        self.g_params = self.model.generator_parameters()
        self.opt_g = make_optimizer(self.cfg.optimizer, self.g_params, self.cfg.lr, self.cfg.betas)
        self.optimizers: dict[str, torch.optim.Optimizer] = {"generator": self.opt_g}
        self.collapse: CollapseDetector | None = None
        self.mode_collapse: ModeCollapseDetector | None = None  # the generator's side: samples all alike
        if self.adversarial:
            assert self.model.discriminator is not None
            self.opt_d = make_optimizer(self.cfg.optimizer, list(self.model.discriminator.parameters()),
                                        self.cfg.d_lr or self.cfg.lr, self.cfg.betas)
            self.optimizers["discriminator"] = self.opt_d
            self.collapse = CollapseDetector(kind=self.cfg.adv_loss)
            self.mode_collapse = ModeCollapseDetector()
        # The recipe's learning rates; train.lr_schedule scales them step by step (set_learning_rates).
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        # Own generators: dequantization/penalty noise stays reproducible and is checkpointed.
        self.noise = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 7919 + self.dist.rank)
        self.generators = {"noise": self.noise}
        self.stream = BatchStream(self.train_set, recipe.data.options.batch_size, self.cfg.seed, self.dist.rank,
                                  self.dist.world, recipe.data.options.num_workers, self.device)
        # step_once's own batches (fit keeps its stream in its loop)
        self._batches: Generator[tuple[torch.Tensor, torch.Tensor], None, None] | None = None
        self._batches_step = -1
        self._warned_past_end = False  # step_once past train.steps, said once
        self._statistics: dict[str, torch.Tensor] | None = None  # train_step's buffer_snapshot, reused step to step
        self._batches_at_exit: Any = None  # what closes them at the interpreter's exit (see _next_batch)
        self.step = 0
        self.bad_steps = 0
        self.last_skip = ""  # what the latest non-finite step had (skip_description)
        self.grad_norm = torch.zeros(())  # the latest update's gradient norm, before clipping (_finite_update)
        self.rng_restored = False  # set by _resume: this process's random state came from the checkpoint
        self.bpd_untrained: float | None = None  # the test BPD before training (checkpointed)
        # summary.json of a resumed run that already finished (a done sweep variant): left exactly as it is.
        self.finished: dict[str, Any] | None = None
        self._saved_average: tuple[dict[str, torch.Tensor], Path] | None = None  # from a resumed checkpoint
        self._resumed: dict[str, Any] | None = None  # what a resume changed, for resumes.jsonl
        # the step of the newest checkpoint this job saved (every process calls save; rank 0 writes it)
        self._job_checkpoint: int | None = None
        # what each metric of the last evaluate() ran with (rank 0's; :func:`recorded_settings`): summary.json's
        self.eval_settings: dict[str, Any] = {}
        if resume:
            self._resume()
        if self.finished is None:
            self._write_recipe(fresh=self.step == 0)  # only now: a refused resume leaves the run as it was
        # summary.json as this training began (read again as fit starts): a failure it holds is an earlier one's
        self._summary_at_start = self._read_summary()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``train.precision = "bf16"``: bfloat16 autocast on CUDA and on CPU (flows stay float32, but for their
        coupling networks with ``train.bf16_coupling_nets``). A CPU
        without native bf16 (AVX512-BF16 or AMX) emulates it, slower than fp32: said once, at the start."""
        if self.cfg.precision != "bf16":
            return contextlib.nullcontext()
        if self.device.type == "cpu" and self.dist.is_main and not cpu_has_native_bf16():
            self.console.print("[yellow]warning:[/] train.precision = \"bf16\": this CPU has no native bfloat16 "
                               "(AVX512-BF16 or AMX), so bf16 is emulated and likely slower than fp32; "
                               "set train.precision = \"fp32\"")
        if self.device.type == "cuda" and self.dist.is_main and not cuda_has_native_bf16(self.device):
            name = torch.cuda.get_device_name(self.device)
            self.console.print(f"[yellow]warning:[/] train.precision = \"bf16\": {name} has no bfloat16 tensor cores "
                               "(they came with compute capability 8.0, Ampere), so bf16 is likely slower than fp32; "
                               "set train.precision = \"fp32\"")
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16)
        return Contexts(autocast, CouplingNetsInBF16()) if self.cfg.bf16_coupling_nets else autocast

    def _weight_average(self) -> WeightAverage | None:
        """``train.ema_decay``: the generator's weight average, continued from a resumed checkpoint's (one
        without an average, or a fresh start, starts it from the current weights)."""
        if not self.cfg.ema_decay:
            if self._saved_average is not None and self.dist.is_main:
                # Resumed without the run's --set train.ema_decay: say so, as for a changed lr, rather than
                # silently evaluating (and saving) the last iterate from here on.
                self.console.print(f"the checkpoint of step {self.step} has a weight average, but train.ema_decay "
                                   "is 0: it is dropped and the last iterate is used from here on (set "
                                   "train.ema_decay to continue it)")
            self._saved_average = None
            return None
        ema = WeightAverage(self.model, self.g_params, self.cfg.ema_decay, self.cfg.ema_start)
        if self._saved_average is not None:
            ema.load_state_dict(*self._saved_average)
        elif self.step > 0 and self.dist.is_main and self.finished is None:  # (a finished run does not train on)
            self.console.print(f"the checkpoint of step {self.step} has no weight average: train.ema_decay "
                               "starts one from its weights")
        self._saved_average = None
        return ema

    def averaged(self) -> contextlib.AbstractContextManager[None]:
        """A block in which the model holds the generator's averaged weights (``train.ema_decay``; with
        no average, the model as it is)."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def _compile(self) -> None:
        """``train.compile``: the flow (forward and inverse), the encoder and, without the gradient
        penalty, the critic are compiled in place (AOT autograd has no double backward); the model's
        two entry points into everything else (likelihood, sampling) are compiled for ``train_step``
        only, so that evaluation and sampling outside training keep the eager model's random streams."""
        backend = self.cfg.compile_backend
        critic = self.model.discriminator if self.cfg.gp_weight == 0 else None
        for m in (self.model.flow, self.model.encoder, critic):
            if m is not None:
                compile_in_place(m, backend)
        bound = compiled(self.model.bound_dequantized, backend)
        dequantize = self.model.preprocess.dequantize

        def log_likelihood(x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator | None,
                           importance_samples: int = 1) -> dict[str, torch.Tensor]:
            # the dequantization noise drawn eagerly, as bound draws it: its generator would break the graph
            return bound(dequantize(x, generator), x, labels, importance_samples)

        self.log_likelihood = log_likelihood
        self.generate = compiled(self.model.generate, backend)

    # -- run directory / resume ----------------------------------------------------------------------
    def _check_run_dir(self, resume: bool) -> None:
        existing = ckpt.list_checkpoints(self.run.checkpoints)
        if existing and not resume:
            raise CheckpointError(f"run directory {self.run.root} already holds checkpoints; continue it with "
                                  "--resume (from Python: Trainer(..., resume=True)) or choose another --out")
        done = self._read_summary() if not existing and not resume and self.run.summary.is_file() else {}
        if _finished(done):
            # a finished run whose checkpoints were deleted (disk space): a fresh start would replace its
            # metrics.jsonl and summary.json (as --resume refuses to, see _resume)
            raise CheckpointError(f"run directory {self.run.root} holds a finished run (summary.json: step "
                                  f"{done['steps']}, no checkpoint left), whose results a new run would replace; they "
                                  "stay as they are: train this recipe under another --out")
        step = ckpt.checkpoint_step(existing[-1]) if existing else 0
        if resume and step > self.cfg.steps:  # checked before anything in the run directory is rewritten
            ckpt.read_checkpoint(existing[-1], need_average=bool(self.cfg.ema_decay))  # one cut short is named
            raise CheckpointError(f"the run in {self.run.root} is already at step {step}, beyond train.steps = "
                                  f"{self.cfg.steps}; raise train.steps to train on (or evaluate it with `avade eval`)")

    def _make_run_dir(self) -> None:
        if self.dist.is_main:
            self.run.make()

    def _write_recipe(self, fresh: bool) -> None:
        """recipe.toml; a fresh start also drops the metrics a run without checkpoints left behind. On
        --resume too: a resumed run may change train settings (e.g. more steps); the fingerprint check
        (done before this) guarantees that the model and data are the same."""
        if self.dist.is_main:
            # what a process killed while rewriting the run's own files left (a long run's metrics.jsonl, rewritten
            # by every resume, can be hundreds of MB); the run directory is this process's alone now
            for path in (self.run.metrics, self.run.recipe, self.run.summary):
                drop_stale_temporaries(path)
            if fresh:
                MetricsLogger.truncate(self.run.metrics, -1)
            if "error" in self._read_summary():  # a failed run tried again: unfinished while it trains, not failed
                self.run.summary.unlink(missing_ok=True)  # (its bpd_untrained is in the checkpoints too)
            self._drop_stale_eval()
            atomic_write_text(self.run.recipe, recipe_to_toml(self.recipe))

    def _record_resume(self) -> None:
        """One line in resumes.jsonl per resume that changed settings (or the number of processes, or the data
        read: ``data_read``, each fact's old and new value) and trained on to a checkpoint of its own (called once
        it is saved: a resume stopped before then left nothing with the new settings): the step resumed from,
        the checkpoint and each key's old and new value."""
        resumed, self._resumed = self._resumed, None
        if not self.dist.is_main or not resumed or not (resumed["changed"] or "processes" in resumed
                                                        or "data_read" in resumed):
            return
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **resumed}
        with naming(self.run.resumes), self.run.resumes.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")

    def _drop_stale_eval(self) -> None:
        """Evaluations (eval.json, eval_checkpoints.json's records) of a checkpoint beyond this start (an
        earlier attempt, or steps about to be retrained) would describe other weights than the checkpoint of
        that name will hold."""
        last = read_json_object(self.run.eval)
        if last and not (isinstance(last.get("step"), int) and last["step"] <= self.step):
            self.run.eval.unlink(missing_ok=True)
        with locked_for(self.run.eval):  # as avade eval writes it
            records = read_json_object(self.run.eval_checkpoints).get("records")
            if not (isinstance(records, list) and all(isinstance(r, dict) for r in records)):
                return  # not a file avade wrote: left as it is
            kept = [r for r in records if isinstance(r.get("step"), int) and r["step"] <= self.step]
            if len(kept) != len(records):
                write_json(self.run.eval_checkpoints, {"records": kept})

    def _resume(self) -> None:
        """Continue from the newest checkpoint: weights, optimizer and RNG states, step, watches, with this
        recipe's hyper-parameters (the changes said, and kept in resumes.jsonl); without one, start from step 0
        (or leave a run that finished before its checkpoints were deleted as it is)."""
        existing = ckpt.list_checkpoints(self.run.checkpoints)
        if not existing:
            self._resume_without_checkpoints()
            return
        path = existing[-1]
        # (its weight average only when this recipe keeps one: with train.ema_decay = 0 it is dropped)
        data = ckpt.read_checkpoint(path, need_average=bool(self.cfg.ema_decay))
        state = data["state"]
        self._refuse_another_model(path, state)
        # The optimizers' hyper-parameters (lr, d_lr, betas) come from this recipe, their state from the
        # checkpoint: resuming with a lower train.lr must train with it.
        wanted = {name: [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
                  for name, opt in self.optimizers.items()}
        self.rng_restored = ckpt.restore(data, self.model, self.optimizers, self.generators, path,
                                         self.dist.rank)
        self.step = int(state["step"])
        # other data than the checkpoint's (moved to another disk, another version or count, a symlink re-pointed):
        # said and kept in resumes.jsonl, not refused (the fingerprint refuses another dataset; rank 0 alone knows
        # what it read)
        data_changes = data_read_changes(state.get("data_read"), self.data_read) if self.dist.is_main else {}
        notes, changed = self._take_recipe_settings(state, wanted, with_data=bool(data_changes))
        world = state.get("world", 1)
        if world != self.dist.world:
            notes.append(f"checkpoint written by {world} process(es), resumed with {self.dist.world}: the same "
                         f"global batches (data.batch_size) in the same order, but split over another number of "
                         "processes, so the noise (dequantization, latents) and the per-process batch statistics "
                         "differ from an uninterrupted run's from here on")
        self.bad_steps = int(state.get("bad_steps", 0))
        untrained = state.get("bpd_untrained")
        self.bpd_untrained = float(untrained) if isinstance(untrained, int | float) else None
        # the collapse watches' windows ("mode_collapse" is absent from checkpoints written before the
        # generator's watch existed: it then starts afresh)
        for key, watch in (("collapse", self.collapse), ("mode_collapse", self.mode_collapse)):
            if watch is None or not state.get(key):
                continue
            try:
                watch.load_state_dict(state[key])
            except (KeyError, TypeError, ValueError, OverflowError) as exc:  # (OverflowError: int(1e400))
                raise CheckpointError(f"checkpoint {path} is corrupt: state.json's {key} table cannot be read "
                                      f"({type(exc).__name__}: {exc}); {ckpt.fallback_hint(path)}") from None
        if "ema" in data and self.cfg.ema_decay:
            # checked now, as the rest of the checkpoint: a refused resume leaves the run as it was (below, a
            # finished run trained on loses its final records, and recipe.toml is rewritten)
            check_fits(data["ema"], averaged_names(self.model, self.g_params), path)
        if "ema" in data:
            self._saved_average = (data["ema"], path)
        ckpt.verify_digests(data, path)  # (last: damage the checks above name is named so)
        self.finished = self._finished_summary()
        if self.dist.is_main and self.finished is None:  # a finished run is left as it is
            every = self.recipe.eval.every
            # a finished run trained on: its final results are the evaluation eval.every makes at that step
            MetricsLogger.truncate(self.run.metrics, self.step,
                                   final_as_eval=bool(every) and self.step % every == 0 and self.step < self.cfg.steps)
        if self.dist.is_main:
            self.console.print(f"resumed from {escape(str(path))} (step {self.step})")
            for note in notes if self.finished is None else []:  # a finished run does not train on
                self.console.print(escape(note))
            if data_changes and self.finished is None:
                # (where the data live is said here, once, with what that changed, not again among the settings)
                moved = [f"{k} {_shown(changed[k][0])} -> {_shown(changed[k][1])}" for k in _DATA_PLACE if k in changed]
                how = f" after {', '.join(moved)}" if moved else ""
                self.console.print(f"[yellow]warning:[/] the data read differ from the checkpoint's (data_read)"
                                   f"{escape(how)}: {escape(data_changes_text(data_changes))}; results before and "
                                   f"after step {self.step} are of different data unless the files are the same "
                                   "(kept in resumes.jsonl once trained with)")
        self._resumed = {"step": self.step, "checkpoint": path.name, "changed": changed,
                         **({"processes": [world, self.dist.world]} if world != self.dist.world else {}),
                         **({"data_read": data_changes} if data_changes else {})}

    def _resume_without_checkpoints(self) -> None:
        """``--resume`` of a run directory with no checkpoint: start from step 0, unless the run finished (its
        summary.json) and its checkpoints were deleted since (disk space)."""
        done = self._read_summary() if self.run.summary.is_file() else {}
        if _finished(done):
            # a finished run whose checkpoints were deleted (disk space): starting over would replace its
            # metrics.jsonl and summary.json with a new run's. At its train.steps it is done (a sweep's
            # finished variant keeps its row); beyond, there is nothing to train on from. Its recipe.toml
            # stands in for the checkpoint's recipe: another model or data is refused, as with a checkpoint.
            saved = self._run_recipe()
            if saved is not None and not ckpt.same_model({"recipe": saved, "fingerprint": ckpt.fingerprint(saved)},
                                                         self.recipe_dict):
                differ = ckpt.fingerprint_differences(saved, self.recipe_dict)
                what = f": {differ}" if differ else " (different model or data)"
                raise CheckpointError(f"{self.run.root} finished (summary.json) with another model or data than "
                                      f"this recipe's{what}; its results stay as they are: train this recipe "
                                      "under another --out")
            if done["steps"] != self.cfg.steps:
                raise CheckpointError(f"{self.run.root} finished at step {done['steps']} (summary.json) and has "
                                      f"no checkpoint left in {self.run.checkpoints} to train on to "
                                      f"train.steps = {self.cfg.steps}; train again under another --out (its "
                                      "results stay as they are)")
            self.step, self.finished = done["steps"], done
            return
        if self.dist.is_main:
            self.console.print(f"no checkpoint in {escape(str(self.run.checkpoints))}: starting from step 0")

    def _refuse_another_model(self, path: Path, state: dict[str, Any]) -> None:
        """A CheckpointError when the checkpoint at ``path`` (its ``state``) holds another model or data than
        this recipe's, or a class-conditional model of another number of classes than the data have."""
        if not ckpt.same_model(state, self.recipe_dict):
            ckpt.state_intact(state, path)  # (a damaged state.json's recipe is no other model: named as damage)
            hint = saved_before_hint(state.get("recipe"), self.recipe_dict)
            if hint:
                raise CheckpointError(f"checkpoint {path} does not fit this recipe's model{hint}")
            differ = ckpt.fingerprint_differences(state.get("recipe"), self.recipe_dict)
            what = f": {differ}" if differ else " (different model or data)"
            raise CheckpointError(f"checkpoint {path} was written for another model or data{what}; resume it with "
                                  "its own recipe.toml or start a new run with another --out")
        trained = state.get("num_classes")
        if self.model.num_classes and isinstance(trained, int) and trained != self.model.num_classes:
            ckpt.state_intact(state, path)
            # (the class-conditional weights would not fit; say why rather than list their shapes)
            raise CheckpointError(f"checkpoint {path} is of a class-conditional model trained on {trained} classes, "
                                  f"but the data have {self.model.num_classes} now: its labels would mean other "
                                  "classes; resume it on the data it was trained on (data.root)")

    def _take_recipe_settings(self, state: dict[str, Any], wanted: dict[str, list[dict[str, Any]]],
                              with_data: bool = False) -> tuple[list[str], dict[str, Any]]:
        """Put this recipe's optimizer hyper-parameters (``wanted``, per optimizer and group) and learning rates
        in place of the checkpoint's; returns the notes that say what differs from the checkpoint's recipe
        (``state``), and every setting this resume changes (key -> (old, new)). ``with_data``: the data read
        differ too, and that warning names where the data live (``data.root``, ``data.folder``) instead."""
        notes = []
        for name, opt in self.optimizers.items():
            for group, hyper in zip(opt.param_groups, wanted[name], strict=True):
                if group.get("betas") != hyper.get("betas"):
                    notes.append(f"{name} optimizer: betas {hyper.get('betas')} from the recipe (checkpoint had "
                                 f"{group.get('betas')})")
                group.update(hyper)
        self.set_learning_rates()
        # The learning rates are the recipe's schedule at this step; say which settings differ from the run's.
        changes = schedule_changes(state.get("recipe"), self.cfg, self.adversarial)
        if changes:
            notes.append(f"learning rate from this recipe, not the checkpoint's: {', '.join(changes)}; step "
                         f"{self.step + 1} trains with lr {self.opt_g.param_groups[0]['lr']:.6g}")
        # every other setting this resume changes is said too, and kept with the step in resumes.jsonl (the
        # rewritten recipe.toml holds only the new values)
        changed = ckpt.setting_changes(state.get("recipe"), self.recipe_dict)
        said = {f"train.{k}" for k in ("lr", "d_lr", "lr_schedule", "lr_warmup_steps", "lr_final_ratio", "betas",
                                      "steps")} | (set(_DATA_PLACE) if with_data else set())
        others = [f"{k} {_shown(old)} -> {_shown(new)}" for k, (old, new) in changed.items() if k not in said]
        if others:
            notes.append(f"settings changed since the checkpoint: {', '.join(others)} (kept in resumes.jsonl once "
                         "trained with)")
        return notes, changed

    def _run_recipe(self) -> dict[str, Any] | None:
        """The run directory's recipe.toml as a dict (None when it is missing or unreadable)."""
        from avade.recipe.load import read_toml

        try:
            return read_toml(self.run.recipe, str(self.run.recipe))
        except ConfigError:
            return None

    def _data_init(self) -> None:
        """A fresh run starts with one no-grad likelihood pass (and, for adversarial variants, one
        critic pass on the real images) on the first batch: the data-dependent initialisation of
        ActNorm (and of weight norm when ``model.norm_options`` gives ``weight-norm`` an
        ``init_scale > 0``; off by default) happens there, before any step (as in the Glow and
        Real-NVP reference code), so no step mutates parameters a graph of that same step holds --
        which compiled steps (``train.compile``) cannot tolerate -- and replicas can be synchronised
        right after it."""
        x, y = self.stream.batch(0)  # (read in this process: no loader workers started for one batch)
        labels = y if self.model.num_classes else None
        self.model.train()
        with torch.no_grad():
            self.model.bound(x, labels, self.noise)
            disc = self.model.discriminator
            if self.adversarial and disc is not None:  # e.g. an actnorm critic initialises on real images
                disc(to_unit(self.model.preprocess.dequantize(x, self.noise)), labels)

    def _data_init_in_every_process(self) -> None:
        """:meth:`_data_init`; under torchrun its failure in one process (an unreadable image in its first
        batch, memory run out) becomes the whole job's, said once by rank 0 as ``rank N: <error>``: the
        processes stop alike (a sweep's row holds that error, and its next variant starts in every process)
        rather than the others seeing only their partner gone."""
        failure: AvadeError | None = None
        try:
            with naming_memory("in the data-dependent initialisation (a no-grad pass on the first batch)",
                               self._batch_fix):
                self._data_init()
        except (TrainingError, ConfigError, DataError, OutOfMemory) as exc:  # (what a sweep takes for a variant's
            # failure and goes on past: any other error stops this process's sweep, so it must stop the others')
            if not self.dist.enabled:
                raise
            failure = exc
            # the failed pass's activations, held by its frames, freed before the collective; the traceback's lines
            # stay (a GPU out of memory: naming_memory's as_out_of_memory has emptied the cache for NCCL's set-up)
            traceback.clear_frames(exc.__traceback__)
        if not self.dist.enabled:
            return
        # (an error without a message is still a failure: an empty blob says "this process is fine")
        said = all_gather_bytes(b"" if failure is None else (str(failure) or type(failure).__name__).encode(),
                                self.dist, self.device)
        first = next((rank for rank, blob in enumerate(said) if blob), None)
        if first is None:
            return
        try:
            if failure is not None and first == self.dist.rank:
                failure.every_process = True  # type: ignore[attr-defined]  # (rank 0 says it: said_by_another_process)
                raise failure
            message = said[first].decode(errors="replace")
            raise TrainingError(f"rank {first}: {message}" if first else message, every_process=True) from failure
        finally:  # (else failure -> its traceback -> this frame -> failure: a cycle keeping this Trainer, its model
            del failure  # and the failed pass's tensors, a GPU's too, until the garbage collector runs, past the
            # next sweep variant's start; as in avade.memory.naming_memory)

    def _sync_replicas(self) -> None:
        """Data parallel: identical replicas after data-dependent initialisation (:meth:`_data_init`,
        on the first batch each rank sees: rank 0's weights and buffers are broadcast), distinct noise
        per rank. A resumed process restores its own random state from the checkpoint; one the
        checkpoint has none for (the job grew) reseeds from (seed, step, rank).
        """
        broadcast_parameters(self.model, self.dist)
        if self.step > 0 and not self.rng_restored:
            seed = (self.cfg.seed * 1_000_003 + self.step) * 101 + self.dist.rank
            seed_everything(seed)
            self.noise.manual_seed(seed)

    def save(self, train_bpd: float | None = None) -> Path | None:
        """Checkpoint (written by rank 0; every process must call it: their random states are gathered).
        ``train_bpd``, the step's training bits/dim, is recorded so that a diverged run can show which
        checkpoint was still sound. Non-finite weights are never saved (:meth:`_check_weights_finite`)."""
        self._check_weights_finite()  # (before the gather: every process holds the same weights and stops alike)
        rng = all_gather_bytes(ckpt.rng_bundle(self.generators), self.dist, self.device)
        if not self.dist.is_main:
            self._job_checkpoint = self.step  # rank 0 writes it now, while this process goes on
            return None
        path = ckpt.save_checkpoint(
            self.run.checkpoints, self.step, self.model, self.optimizers, rng,
            {"fingerprint": self.fingerprint, "recipe_name": self.recipe.name, "recipe": self.recipe_dict,
             "bad_steps": self.bad_steps, "world": self.dist.world, "bpd_untrained": self.bpd_untrained,
             "train_bpd": train_bpd,
             # what the model was built for, so that it can be rebuilt without the dataset (avade.load_model)
             "data_shape": list(self.train_set.shape), "num_classes": int(self.train_set.num_classes),
             "class_counts": self.class_counts,
             # who provided each component, so that a run evaluated without its plugin can name it
             "providers": self.providers,
             # the versions, command line and commit it was trained with, so that a reviewer can reproduce it
             "environment": self.environment,
             # the data each split read (paths, layout, version, image count): bits/dim compare only on the same
             "data_read": self.data_read,
             "collapse": self.collapse.state_dict() if self.collapse is not None else None,
             "mode_collapse": self.mode_collapse.state_dict() if self.mode_collapse is not None else None},
            keep=self.cfg.keep_checkpoints, keep_every=self.cfg.keep_every,
            ema=self.ema.state_dict() if self.ema is not None else None)
        self._job_checkpoint = self.step
        self._record_resume()  # the first checkpoint trained with a resume's settings: now they are history
        return path

    # -- one step of Algorithm 1 ---------------------------------------------------------------------
    def _finite_update(self, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                       loss: torch.Tensor) -> bool:
        """Backward, average, clip, and step -- unless the loss or a gradient is not finite."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p for p in params if p.grad is not None]
        if grads:  # A loss that is not finite can have a finite gradient (a sum or a constant term overflowed):
            # 0 added to one gradient, NaN for such a loss, averaged with the gradients, so every process skips alike
            grads[0].grad.add_(loss.detach().float() * 0)  # type: ignore[union-attr]
        average_gradients(params, self.dist)
        if self.cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(grads, self.cfg.grad_clip)
        else:  # the norm alone: clipping at infinity would still rescale every gradient by 1
            norm = total_norm([p.grad for p in grads])  # type: ignore[misc]
        self.grad_norm = norm  # (logged: grad_norm, d_grad_norm; before clipping)
        # The norm of the averaged gradients: one host sync, and every rank takes the same decision.
        # A non-finite loss made a gradient NaN above, so it is caught here too.
        if not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            return False
        opt.step()
        return True

    def set_learning_rates(self) -> None:
        """Set every optimizer's lr for this step from the recipe's (``train.lr_schedule``)."""
        factor = lr_factor(self.cfg, self.step)
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lrs[name], strict=True):
                group["lr"] = base * factor

    def kl_weight(self) -> float:
        """The KL term's weight in the objective at this step: ``(step + 1) / train.kl_warmup_steps`` up to 1
        (1 without warm-up). A function of the step alone, so a resumed run continues the same schedule."""
        return linear_warmup(self.step, self.cfg.kl_warmup_steps)

    def train_step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One step of Algorithm 1 on a batch of uint8 images; returns the logged scalars.

        One set of samples serves both updates, as in Algorithm 1: the discriminator sees them
        detached, then (the generator being unchanged by the D update) the generator's L_Q
        backpropagates through the same samples. Extra D steps (``d_steps > 1``) draw fresh samples
        (against the same real batch).

        It reads ``self.step`` (learning-rate schedule, warm-ups, KL weight) but does not advance it, nor
        update the weight average (``train.ema_decay``): :meth:`step_once` does both, as :meth:`fit` takes each
        step; a loop of your own calls that (else every step trains as step 0 and :meth:`save` writes step 0).
        """
        model, cfg = self.model, self.cfg
        model.train()
        n = x.shape[0]
        labels_in = labels if model.num_classes else None
        scalars: dict[str, torch.Tensor] = {}
        skipped: list[str] = []  # the updates skipped for a non-finite loss or gradient
        self.set_learning_rates()
        adversarial_now = self.adversarial and (self.step >= cfg.warmup_steps or not self.likelihood)
        # (the critic's warm-up: it trains in the warm-up's last steps while the generator still gets L_C only)
        critic_now = adversarial_now or (self.adversarial and self.step >= cfg.warmup_steps - cfg.critic_warmup_steps)
        fake = None
        watched: tuple[torch.Tensor, torch.Tensor] | None = None  # (real, generated) for the mode-collapse watch
        # put back if an update is skipped (batch-norm running statistics); the last step's copies are reused
        statistics = self._statistics = buffer_snapshot(model, self._statistics)
        if critic_now:
            disc = model.discriminator
            assert disc is not None
            d_params = self.opt_d.param_groups[0]["params"]
            real = to_unit(model.preprocess.dequantize(x, self.noise))
            with self.autocast, torch.set_grad_enabled(adversarial_now):
                # Untempered prior (Algorithm 1); model.temperature is for sampling only.
                fake = to_unit(self.generate(n, labels_in, self.noise, flow_grad=cfg.flow_adv_grad,
                                             temperature=1.0)).float()
            for i in range(cfg.d_steps):
                if i == 0:
                    fake_d = fake.detach()
                else:
                    with torch.no_grad(), self.autocast:
                        fake_d = to_unit(self.generate(n, labels_in, self.noise, flow_grad=False,
                                                       temperature=1.0)).float()
                with self.autocast:
                    d_real, d_fake = disc(real, labels_in), disc(fake_d, labels_in)
                    d_loss = discriminator_loss(cfg.adv_loss, d_real, d_fake)
                gp = gradient_penalty(disc, real, fake_d, labels_in, cfg.gp_weight, self.noise) \
                    if cfg.gp_weight > 0 else d_loss.new_zeros(())
                finite = self._finite_update(self.opt_d, d_params, d_loss + gp)
                if not finite and not skipped:
                    skipped.append("critic")
                if not finite or "critic" not in skipped:  # (the last update's, or a skipped one's)
                    d_grad_norm = self.grad_norm
            scalars.update(d_loss=d_loss, gp=gp, d_real=d_real.mean(), d_fake=d_fake.mean(), d_grad_norm=d_grad_norm)
            watched = (real, fake.detach())  # for the mode-collapse watch: the same labels made both
            if not adversarial_now:
                fake = None  # the critic's warm-up: no L_Q yet
        loss = x.new_zeros((), dtype=torch.float32)
        with self.autocast:
            if self.likelihood:
                with replica_statistics(self.dist.enabled):  # e.g. free bits decide on the job's batch
                    out = self.log_likelihood(x, labels_in, self.noise)
                l_c = -out["log_px"].mean()
                kl = out["kl"].mean()
                kl_weight = self.kl_weight()
                # KL warm-up: the objective weighs the KL by kl_weight; l_c and bpd are logged as the true bound.
                loss = loss + (l_c if kl_weight == 1.0 else l_c - (1.0 - kl_weight) * kl)
                scalars.update(l_c=l_c, bpd=out["bpd"].mean())
                if not model.flow_only:  # (the flow alone has no latent: its KL would log a constant 0)
                    scalars["kl"] = kl
                if kl_weight < 1.0:
                    scalars["kl_weight"] = kl.new_tensor(kl_weight)
            if fake is not None:
                disc = model.discriminator
                assert disc is not None
                with frozen(disc):
                    l_q = generator_loss(cfg.adv_loss, disc(fake, labels_in))
                weight = 1.0 if not self.likelihood else cfg.adv_weight
                loss = loss + weight * l_q
                scalars["l_q"] = l_q
        if not self._finite_update(self.opt_g, self.g_params, loss):
            skipped.append("generator")
        scalars["grad_norm"] = self.grad_norm
        if skipped:  # a skipped update leaves its part as it was: its forward passes' NaN or infinite
            # activations must not stay in running statistics (eval mode, f^-1) and in every later checkpoint.
            # The critic's alone skipped, the generator took a finite step: its statistics go with its weights.
            restore_buffers(model, statistics if "generator" in skipped
                            else buffers_of(model, model.discriminator, statistics))
        self._sync_flow_statistics()
        scalars["loss"] = loss
        # One device-to-host transfer for all logged values (each .item() would be a sync on GPU), and the
        # mode-collapse watch's statistics with them.
        watch = watched is not None and adversarial_now and self.mode_collapse is not None
        with torch.no_grad():  # (no detach per value; float32 -> float64 is exact, so one conversion after the stack)
            values = torch.stack([t if t.dim() == 0 else t.reshape(()) for t in
                                  (v.float() for v in scalars.values())]).double()
        if watch:
            assert watched is not None
            values = torch.cat([values, mode_statistics(*watched, labels_in).flatten()])
        values_list = values.tolist()
        logs = dict(zip(scalars, values_list[:len(scalars)], strict=True))
        rows = [values_list[i:i + 4] for i in range(len(scalars), len(values_list), 4)]
        logs["finite"] = float(not skipped)
        if skipped:
            self.last_skip = skip_description(logs, skipped)
        if scheduled(cfg):
            logs["lr"] = self.opt_g.param_groups[0]["lr"]
            if self.adversarial:
                logs["d_lr"] = self.opt_d.param_groups[0]["lr"]
        if adversarial_now and self.collapse is not None:
            warning = self.collapse.update(logs["d_real"], logs["d_fake"], logs["d_loss"],
                                           step=self.step + 1)  # (the step this is; self.step counts those done)
            if warning and self.dist.is_main:
                self.console.print(f"[yellow]warning:[/] {warning}")
        if watch:
            assert self.mode_collapse is not None
            warning = self.mode_collapse.record(rows, step=self.step + 1)  # (as the trainer counts)
            if warning and self.dist.is_main:
                self.console.print(f"[yellow]warning:[/] {warning}")
        return logs

    # -- stepping by hand ----------------------------------------------------------------------------
    def step_once(self, x: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One training step as :meth:`fit` takes it: :meth:`train_step` on a batch, then the step count and the
        weight average advanced, and ``bad_steps`` counted; returns the logged scalars (``finite`` False: the step was
        skipped, and ``bad_steps`` the skipped steps in a row, which :meth:`save` records). Without a
        batch it takes the run's next one (``self.stream``, from the step it is at), so a loop of
        ``step_once()`` calls trains as :meth:`fit` does, checkpoints by :meth:`save` included. ``labels``: a
        class-conditional model's (an unconditional one takes none)."""
        if x is None:
            if labels is not None:
                raise DataError("step_once: labels came without images; give both, or neither (the run's next batch)")
            x, labels = self._next_batch()
        else:
            self.model._checked("step_once", x, labels)  # (uint8 of the model's shape; a conditional model's labels)
            x = x.to(self.device)
            labels = torch.zeros(x.shape[0], dtype=torch.int64) if labels is None else labels
            labels = labels.to(self.device, torch.int64)
        if self.step >= self.cfg.steps and not self._warned_past_end:
            self._warned_past_end = True  # (once: a loop of its own may mean to go on)
            warnings.warn(f"step_once at step {self.step}, past train.steps = {self.cfg.steps}: the schedules stay at "
                          "their end, and `--resume` refuses a run beyond train.steps; raise train.steps in the recipe "
                          "to train longer", UserWarning, stacklevel=2)
        return self._take_step(x, labels)

    def _take_step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """:meth:`step_once` on a batch as the run's stream gives it (checked, on the device): :meth:`fit`'s loop."""
        logs = self.train_step(x, labels)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.step)
        # consecutive skipped steps, which save() records and fit stops at (train.max_bad_steps)
        self.bad_steps = 0 if logs["finite"] else self.bad_steps + 1
        return logs

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of step ``self.step`` for :meth:`step_once`: one stream (and its loader's workers) serves
        consecutive steps; a step set by hand (``trainer.step = s``) starts a new one there."""
        if self._batches is None or self._batches_step != self.step:
            self.close()
            self._batches = self.stream.batches(self.step)
            # A script's loop of step_once calls leaves its loader's workers running when it ends; they ignore
            # SIGTERM (preemption.ignore_stop_signals), so multiprocessing's exit, which terminates and then joins
            # them, would wait for ever. Closed before it (atexit runs the latest first), held weakly.
            self._batches_at_exit = functools.partial(_close_weakly, weakref.ref(self._batches))
            atexit.register(self._batches_at_exit)
        try:
            batch = next(self._batches)
        except BaseException:  # (a generator that raised is done: the next call starts a new one)
            self.close()
            raise
        self._batches_step = self.step + 1
        return batch

    def close(self) -> None:
        """End the batches :meth:`step_once` reads (and their loader's workers, ``data.num_workers``); a later
        :meth:`step_once` starts them again where the run is. :meth:`fit` calls it, as does the end of the
        process."""
        if self._batches_at_exit is not None:
            atexit.unregister(self._batches_at_exit)
            self._batches_at_exit = None
        if self._batches is not None:
            self._batches.close()
            self._batches = None

    # -- evaluation ----------------------------------------------------------------------------------
    def test_bpd(self, importance_samples: int = 1, limit: int | None = None, split: str = "test") -> float:
        """Mean bits/dim on the test split, or ``split`` (``train.eval_batches`` batches; 0 = all). Under data
        parallelism each process evaluates every world-th batch with rank 0's buffers (batch-norm
        statistics) and the sums are reduced: the value one process computes from the checkpoint, in
        1/world of the time."""
        broadcast_buffers(self.model, self.dist)
        lim = self.cfg.eval_batches if limit is None else limit
        data = self.test_set if split == "test" else self.train_set
        options = self.recipe.data.options
        batches = indexed_batches(data, options.eval_batch_size, lim, options.num_workers,
                                  shard=(self.dist.rank, self.dist.world), device=self.device)
        total, count = all_sum(list(self.model.bpd_sum(batches, importance_samples)), self.dist, self.device)
        return total / max(count, 1)

    @torch.no_grad()
    def write_grids(self, tag: str) -> None:
        """Sample and reconstruction grids as PNG under samples/ (with the averaged weights, if any)."""
        if not self.dist.is_main:
            return
        with self.averaged():
            self._write_grids(tag)

    def _write_grids(self, tag: str) -> None:
        from avade.evaluate.sampling import save_grid

        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(777)
        n = 64
        labels = (torch.arange(n, device=self.device) % self.model.num_classes) if self.model.num_classes else None
        samples = self.model.sample(n, labels, generator=gen)
        if self.model.num_classes:  # one class per column
            from avade.evaluate import class_columns

            nrow = class_columns(self.model.num_classes, n)
        else:
            nrow = 8
        save_grid(samples, self.run.samples / f"samples_{tag}.png", nrow)
        if self.likelihood:
            x, y = next(eval_batches(self.test_set, 32))
            x = x.to(self.device)
            recon = self.model.reconstruct(x, y.to(self.device) if self.model.num_classes else None, gen)
            pairs = torch.stack([x, recon], 1).flatten(0, 1)
            save_grid(pairs, self.run.samples / f"reconstructions_{tag}.png", 8)
        self.model.train()

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``train.steps``, checkpointing, logging and sampling; returns the summary."""
        if self.finished is not None:
            if self.dist.is_main:
                self.console.print(f"{escape(str(self.run.root))} already finished at step {self.step} "
                                   "(summary.json); nothing to do: raise train.steps to train on, or `avade eval` it")
            return self.finished
        # closed however fit ends: a run that fails (an unreadable image, a metric's error) must not leave its
        # TensorBoard writer's thread and event file behind in a process that goes on (a sweep's next variant)
        # (importing TensorBoard takes seconds: a stop signal meanwhile stops at once, as while loading or
        # evaluating the untrained model, not by the signal's default action, which would leave a half-made run)
        with stop_on_signals(announce=False, immediate=UNSTARTED_STOP if self.step == 0 else UNRESUMED_STOP):
            logger = MetricsLogger(self.run, enabled=self.dist.is_main, start_step=self.step)
        self._summary_at_start = self._read_summary()  # (every process is past rank 0's set-up: see _record_failure)
        try:
            summary = self._fit(logger)
        except OutOfMemory as exc:  # recorded as a divergence is: `avade runs` shows the run failed
            with contextlib.suppress(Exception):
                logger.close()
            error = exc.with_fix(self._resume_point())
            with contextlib.suppress(OSError):  # (a failing disk: the error raised stays this one)
                self._record_failure(str(error))
            try:
                raise error from exc.__cause__
            finally:  # (a cycle error -> traceback -> this frame -> error would keep the trainer and its model)
                del error
        except BaseException as exc:
            # the error that stopped training (a checkpoint on a full disk, which says what --resume goes on
            # from) stays the one raised: not replaced by TensorBoard's, closed on the same full disk
            with contextlib.suppress(Exception):
                logger.close()
            own = isinstance(exc, TrainingError | ConfigError | DataError) and not getattr(exc, "every_process", False)
            if own and isinstance(exc, DataError):
                # an image that cannot be read mid-run (a file damaged on disk): fixing it and --resume is the way
                # on, as after memory run out; recorded as a failure in one process too (`avade runs` shows it)
                error = DataError(f"{exc}; {self._resume_point()}")
                with contextlib.suppress(OSError):  # (the error raised stays this one)
                    self._record_failure(str(error))
                try:  # (its traceback: where the image failed, for a Python caller)
                    raise error.with_traceback(exc.__traceback__) from exc.__cause__
                finally:  # (as above: no cycle keeping the trainer alive)
                    del error
            if own and self.dist.enabled:
                # under torchrun one process's own failure: the others only lose their partner, so summary.json
                # says why (`avade runs`, a sweep's row)
                with contextlib.suppress(OSError):  # (the error raised stays this one)
                    self._record_failure(str(exc))
            raise
        logger.close()
        return summary

    def _fit(self, logger: MetricsLogger) -> dict[str, Any]:
        """:meth:`fit`'s loop and final evaluation, logging to ``logger`` (closed by the caller)."""
        cfg = self.cfg
        start_step = self.step
        self.close()  # step_once's batches, if any: fit reads its own
        if self.step == 0 and self.dist.is_main and (odd := whole_run_warm_up(self.recipe)):
            self.console.print(f"[yellow]warning:[/] {escape(odd)}")
        # The untrained model's test BPD, so a summary shows what training bought.
        if self.likelihood and self.step == 0:
            with stop_on_signals(announce=False, immediate=UNSTARTED_STOP), \
                    naming_memory("while evaluating the untrained model's test bpd", self._eval_batch_fix):
                self.bpd_untrained = self.test_bpd()  # (nothing to save yet)
        # this process's first step (torch.compile, cuDNN autotuning, CUDA's start, the loader's workers: seconds to
        # minutes, again after a resume) is timed apart: no measure of the training speed
        first_step_s: float | None = None
        steady_images, steady_s = 0, 0.0  # the steps after it, for the summary's train_images_per_s
        from avade.train.progress import TrainProgress

        # closing: the loader's workers (which ignore stop signals) end with the loop, however it ends
        with TrainProgress(self.console, total=cfg.steps, start=self.step,
                           enabled=self.progress and self.dist.is_main, label=self.recipe.name) as bar, \
                stop_on_signals(announce=self.dist.is_main) as stop, \
                contextlib.closing(self.stream.batches(self.step)) as batches:
            window_images, window_s = 0, 0.0  # the steps since the last logged line, for images_per_s
            while self.step < cfg.steps:
                started = time.perf_counter()
                x, y = next(batches)
                with naming_memory(f"at training step {self.step + 1}", self._batch_fix):
                    logs = self._take_step(x, y)  # (step_once without its checks: the stream checked the batch)
                took, batch_images = time.perf_counter() - started, x.shape[0] * self.dist.world
                window_s += took
                window_images += batch_images
                first = self.step == start_step + 1
                if first:
                    first_step_s = took
                else:
                    steady_images, steady_s = steady_images + batch_images, steady_s + took
                if not logs["finite"]:  # (_take_step counted it)
                    if self.dist.is_main:
                        self.console.print(f"[yellow]warning:[/] step {self.step}: {self.last_skip} "
                                           f"({self.bad_steps} in a row)")
                    if self.bad_steps >= cfg.max_bad_steps:
                        what = ("a non-finite step (" if self.bad_steps == 1
                                else f"{self.bad_steps} consecutive non-finite steps (the last: ")
                        # every process counts the same steps (from the all-reduced gradient norm)
                        stopped = (f"training stopped at step {self.step}: {what}{self.last_skip}); "
                                   f"{self._divergence_fix()}; {self._last_good_checkpoint()}")
                        self._record_failure(stopped, every_process=True)
                        raise TrainingError(stopped, every_process=True)
                # the training speed now: its steps (batch and update) alone, not evaluations, grids or saves between
                logs["images_per_s"] = window_images / max(window_s, 1e-9)
                bar.update(self.step, logs)
                log_now = self.step % cfg.log_every == 0 or self.step == cfg.steps
                stopping = self._stop_requested(stop)
                save_now = self.bad_steps == 0 and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
                                                    or stopping)
                # One all-reduce per step that needs the job's values; every process gets here together.
                job_logs = self._global_logs(logs) if log_now or save_now else logs
                if log_now:
                    logger.log(self.step, job_logs)
                if log_now or first:  # the process's first step is a window of its own: in no line with others
                    window_images, window_s = 0, 0.0
                if self.step % cfg.sample_every == 0:
                    with naming_memory(f"while sampling the grid of step {self.step}", self._model_fix):
                        self.write_grids(f"{self.step:08d}")
                if self.recipe.eval.every and self.step % self.recipe.eval.every == 0 and self.step < cfg.steps:
                    with naming_memory(f"while evaluating at step {self.step}", self._eval_batch_fix):
                        results = self.evaluate()
                    odd = [k for k, v in results.items() if _not_finite(v)]
                    if odd and self.dist.is_main:  # (a null in metrics.jsonl says nothing while training goes on)
                        self.console.print(f"[yellow]warning:[/] step {self.step}: eval {', '.join(odd)} not finite "
                                           "(recorded as null)")
                    if results:  # (a GAN whose metrics are bpd alone has none: no empty record)
                        logger.log(self.step, {f"eval/{k}": v for k, v in results.items()})
                if save_now:
                    self.save(job_logs.get("bpd"))
                if stopping:  # at the last step too: the final evaluation (FID: minutes) is left to --resume,
                    # and a sweep must not go on to its next variant
                    saved = (f"checkpoint {checkpoint_name(self.step)} saved" if save_now
                             else f"no checkpoint: the last step was not finite; {self._last_good_checkpoint()}")
                    then = "" if self.step < cfg.steps else " (training is done: it evaluates the trained model)"
                    raise StoppedError(f"stopped by {stop.signal or 'a signal to another process'} at step "
                                       f"{self.step} of {cfg.steps}: {saved}; continue with --resume{then}",
                                       signal_name=stop.signal or "SIGTERM")
        # the final grid and evaluation (FID: minutes) save nothing: a stop signal stops them at once, said (the
        # signal's default action would kill the process without a word), and --resume evaluates again
        final_stop = (f"stopped by {{signal}} in the final evaluation of step {self.step} (training is done"
                      f"{': its checkpoint is saved' if self.bad_steps == 0 else ''}); continue with --resume, which "
                      "evaluates the trained model")
        with stop_on_signals(announce=False, immediate=final_stop), \
                naming_memory("while sampling the final grid", self._model_fix):
            self.write_grids("final")
        summary: dict[str, Any] = {"recipe": self.recipe.name, "variant": self.recipe.variant, "steps": self.step,
                                   "train_images_per_s": steady_images / max(steady_s, 1e-9)
                                   if self.step > start_step + 1 else None, "first_step_s": first_step_s,
                                   "device": str(self.device)}
        with stop_on_signals(announce=False, immediate=final_stop), \
                naming_memory(f"while evaluating the trained model (step {self.step})", self._eval_batch_fix):
            results = self.evaluate()
        if self.ema is not None:  # the results are the averaged weights'
            summary["weights"] = "ema"
        summary.update(results)
        initial = self.bpd_untrained
        if initial is None and self.run.summary.is_file():  # a checkpoint from before bpd_untrained was kept
            initial = self._read_summary().get("bpd_untrained")
        if initial is not None:
            summary["bpd_untrained"] = initial
        # what the values are of, as eval.json says it of avade eval's: the checkpoint (none when the last steps
        # were not finite: those weights were not saved) and each metric's settings, e.g. FID's sample count,
        # sample_seed and feature_extractor (chosen outside the recipe). Last, after the values: a sweep's
        # columns keep their places, and a table (settings) is left out of its CSV
        saved = self.run.checkpoints / checkpoint_name(self.step)
        summary["checkpoint"] = saved.name if self.bad_steps == 0 and saved.is_dir() else None
        summary["settings"] = self.eval_settings
        # the model's own bound diverging is a failed run; a sample metric's NaN is only that metric's value
        from avade.evaluate import owns

        broken = sorted(k for k, v in results.items() if _not_finite(v) and owns("bpd", k))
        odd = sorted(k for k, v in results.items() if _not_finite(v) and not owns("bpd", k))
        if odd and self.dist.is_main:
            self.console.print(f"[yellow]warning:[/] {', '.join(odd)} not finite (recorded as null)")
        bpd = results.get("bpd")
        if (self.dist.is_main and not broken and not self.bad_steps and isinstance(initial, int | float)
                and isinstance(bpd, float) and bpd > initial):  # finite (no error), but worse: it went astray
            self.console.print(f"[yellow]warning:[/] the trained model's test bpd {bpd:.4g} is worse than the "
                               f"untrained model's {initial:.4g}: training went astray; {self._divergence_fix()}")
        error = None
        if self.bad_steps or broken:
            what = (f"the last {self.bad_steps} step(s) were non-finite (the last: {self.last_skip})"
                    if self.bad_steps else f"the trained model's {', '.join(broken)} is not finite")
            error = f"training diverged: {what}; {self._divergence_fix()}; {self._last_good_checkpoint()}"
            summary["error"] = error  # a resume must not take this run for a finished one
        if self.dist.is_main:
            self._record_resume()  # a resume that only evaluated (its run was at train.steps) used them too
            # the final record before summary.json, which marks the run finished: killed between the two, a
            # resume evaluates again (and replaces the record) instead of leaving metrics.jsonl without it
            if results:
                logger.log(self.step, {f"final/{k}": v for k, v in results.items()})
            with self._summary_lock():  # (as _record_failure writes it)
                write_json(self.run.summary, summary)
        if error is not None:  # from the step count and the bpd, which every process shares
            raise TrainingError(error, every_process=True)
        return summary

    def _check_weights_finite(self) -> None:
        """A TrainingError before a checkpoint of non-finite weights is written: a step is checked by its loss and
        gradients, computed before its update, so an update that overflowed (train.lr ~1e37) would be saved as
        sound and its checkpoint refused as corrupt on --resume. One host sync per checkpoint; every process
        holds the same weights, so every one decides alike."""
        params = [p.detach() for p in self.model.parameters() if p.is_floating_point() and p.numel()]
        if not params or bool(torch.isfinite(torch.stack([t.float().abs().amax() for t in params])).all()):
            return
        bad = [name for name, p in self.model.named_parameters()
               if p.is_floating_point() and not bool(torch.isfinite(p).all())]
        stopped = (f"training stopped at step {self.step}: its update left non-finite weights in {len(bad)} "
                   f"tensor(s), e.g. {bad[0]} (not checkpointed); lower train.lr (an Adam/Adamax update is about "
                   f"lr in size whatever the gradient: clipping it would not help); "
                   f"{self._last_good_checkpoint()}")
        self._record_failure(stopped, every_process=True)
        raise TrainingError(stopped, every_process=True)

    def _model_fix(self) -> str:
        """What to lower when the model alone runs out of memory (a grid of samples)."""
        bf16 = 'set train.precision = "bf16", or ' if self.cfg.precision != "bf16" else ""
        return f"{bf16}use a smaller model (model.*)"

    def _batch_fix(self) -> str:
        """What to lower when a training step (or the data-dependent initialisation) runs out of memory."""
        return f"lower data.batch_size (now {self.recipe.data.options.batch_size}), or {self._model_fix()}"

    def _eval_batch_fix(self) -> str:
        """What to lower when evaluating bits/dim runs out of memory (a metric's own error names its settings)."""
        return f"lower data.eval_batch_size (now {self.recipe.data.options.eval_batch_size}), or {self._model_fix()}"

    def _resume_point(self) -> str:
        """Where ``--resume`` goes on from, for the error that stopped training: the job's newest checkpoint (not
        the failed step's state), else the start."""
        try:
            step, pending = self._checkpoint_of_job()
        except OSError as exc:  # (the disk that failed the step, say: the error raised stays the one that stopped it)
            return (f"its checkpoints cannot be listed ({exc.strerror or exc}): --resume goes on from the newest "
                    f"complete one in {self.run.checkpoints}")
        if pending is not None:
            then = f"checkpoint step {step}" if step is not None else "step 0 (no other checkpoint)"
            return (f"rank 0 was still writing checkpoint step {pending} when this process failed: --resume goes on "
                    f"from it if it was completed (see {self.run.checkpoints}), else from {then}")
        if step is None:
            return "no checkpoint was written yet: --resume starts again from step 0"
        return f"checkpoint step {step} is kept: --resume goes on from step {step}"

    def _checkpoint_of_job(self) -> tuple[int | None, int | None]:
        """The step of the run's newest checkpoint (None: none yet), and that of a checkpoint this job saved that
        is not there (None: none missing). Rank 0 writes the checkpoints while the other processes go on to the
        next step: one that fails right after a save lists the run's checkpoints before rank 0 has put the new
        one in place, so it waits for it (at most ``JOB_CHECKPOINT_WAIT_S``; on a node that does not share the
        run directory it never comes)."""
        def newest() -> int | None:
            last = ckpt.list_checkpoints(self.run.checkpoints)
            return ckpt.checkpoint_step(last[-1]) if last else None

        saved, found = self._job_checkpoint, newest()
        deadline = time.monotonic() + JOB_CHECKPOINT_WAIT_S
        while saved is not None and (found is None or found < saved):
            if time.monotonic() >= deadline:
                return found, saved
            time.sleep(0.1)
            found = newest()
        return found, None

    def _record_failure(self, error: str, every_process: bool = False) -> None:
        """summary.json of a run that training stopped (a divergence, memory run out, under torchrun one process's
        unreadable image): its step and ``error``, so that `avade runs` shows it failed, and a --resume (which drops
        it) takes it for unfinished rather than done.

        Under torchrun an error every process meets alike (``every_process``: a divergence) is recorded by rank 0;
        one process's own (out of memory, an unreadable image) by that process, as ``rank N: <error>`` for a rank
        other than 0 (a sweep's row of the variant takes it from there). Each writes under the run's summary lock,
        and the first failure of this training is kept: another process's, failing after it (its partner gone),
        does not replace it. An error summary.json held as training began (an earlier attempt's) is no failure of
        this one."""
        if every_process and not self.dist.is_main:
            return
        if not self.dist.is_main:
            error = f"rank {self.dist.rank}: {error}"
        untrained = {} if self.bpd_untrained is None else {"bpd_untrained": self.bpd_untrained}
        with self._summary_lock():
            held = self._read_summary()
            if "error" in held and held != self._summary_at_start:
                return
            write_json(self.run.summary, {"steps": self.step, **untrained, "error": error})

    def _stop_requested(self, stop: StopRequest) -> bool:
        """Whether to stop after this step (SIGTERM). Under data parallelism every process must decide
        the same at the same step (the checkpoint is a collective): one all-reduce of the flags per step."""
        wanted = stop.signal is not None
        if not self.dist.enabled:
            return wanted
        return all_sum([float(wanted)], self.dist, self.device)[0] > 0

    def _sync_flow_statistics(self) -> None:
        """Data parallel: the running averages of the batch-norm flows, with which f^-1 turns samples into
        images, averaged over the processes after every step. An exponential average is linear, so this
        is the average of the processes' batch statistics; every replica inverts with the same f, and
        the checkpoint (rank 0's) holds what every process had, so a resume continues identically."""
        if not self.dist.enabled:
            return
        layers = [m for m in self.model.modules() if isinstance(m, BatchNormFlow)]
        if not layers:
            return
        mean = average_tensors([t for m in layers for t in (m.running_mean, m.running_var)], self.dist)
        for i, m in enumerate(layers):
            m.running_mean, m.running_var = mean[2 * i], mean[2 * i + 1]

    def _global_logs(self, logs: dict[str, Any]) -> dict[str, Any]:
        """Under data parallelism, the step's values averaged over the processes (each saw part of the
        batch); every process must call it. ``images_per_s`` is already the whole job's."""
        if not self.dist.enabled:
            return logs
        keys = [k for k, v in logs.items() if k != "images_per_s" and isinstance(v, float)]
        sums = all_sum([logs[k] for k in keys], self.dist, self.device)
        return {**logs, **{k: total / self.dist.world for k, total in zip(keys, sums, strict=True)}}

    def _read_summary(self) -> dict[str, Any]:
        return read_json_object(self.run.summary)

    def _summary_lock(self) -> contextlib.AbstractContextManager[Any]:
        """The lock under which summary.json is written: the final summary and a failure's (every process may
        record its own) never interleave."""
        return locked_for(self.run.summary)

    def _finished_summary(self) -> dict[str, Any] | None:
        """summary.json when a resumed run already finished at ``train.steps`` (e.g. the done variants of an
        interrupted sweep): its final evaluation is not run again, nor its outputs rewritten."""
        if self.step < self.cfg.steps or not self.run.summary.is_file():
            return None
        summary = self._read_summary()
        return summary if summary.get("steps") == self.step and "error" not in summary else None

    def _divergence_fix(self) -> str:
        """What to change in the recipe when training diverges (``train.grad_clip``: set it, or lower the one set)."""
        clip = self.cfg.grad_clip
        return ("lower train.lr or set train.grad_clip" if clip is None
                else f"lower train.lr or train.grad_clip (now {clip:g})")

    def _last_good_checkpoint(self) -> str:
        """Where a diverged run can be resumed from, for its error message: the newest checkpoints with
        the training bits/dim of their step. A checkpoint is only written after a finite step, but the
        loss may already have been running away: the figures show which one was still sound."""
        last = ckpt.list_checkpoints(self.run.checkpoints)
        if not last:
            return "no checkpoint was written yet"
        shown = [_with_train_bpd(path) for path in last[-3:]]
        milestones = [_with_train_bpd(p) for p in last[:-3] if ckpt.kept_for_good(p, self.cfg.keep_every)]
        older = f"; older ones kept (train.keep_every): {', '.join(milestones[-3:])}" if milestones else ""
        return (f"newest checkpoints in {self.run.checkpoints}: {', '.join(shown)}{older}; to resume from an "
                "older one, delete those after it, then --resume")

    def evaluate(self) -> dict[str, float]:
        """The recipe's eval metrics (``bpd`` on the test split always), with the averaged weights if the
        run keeps an average (``train.ema_decay``), else the current ones."""
        with self.averaged():
            return self._evaluate()

    def _evaluate(self) -> dict[str, float]:
        results = {}
        if self.likelihood:  # bpd on the test split always; as [eval.bpd] asks (its k, its split), as avade eval
            from avade.evaluate import bpd_config

            bpd = bpd_config(self.recipe)
            for split in dict.fromkeys(("test", bpd.split)):
                suffix = "" if split == "test" else f"_{split}"
                results[f"bpd{suffix}"] = self.test_bpd(split=split)
                if bpd.importance_samples > 1:
                    results[f"bpd_iw{bpd.importance_samples}{suffix}"] = self.test_bpd(bpd.importance_samples,
                                                                                      split=split)
        others = [m for m in self.recipe.eval.metrics if m != "bpd"]
        self.eval_settings = {}
        if (others or results) and self.dist.is_main:
            from avade.evaluate.compute import compute_metrics_with_settings
            from avade.metrics.features import release_gpu_extractors

            try:
                computed, self.eval_settings = compute_metrics_with_settings(self, others, taken=list(results))
                results.update(computed)
            finally:
                if others and self.device.type == "cuda":
                    release_gpu_extractors()
        self.model.train()
        return results


@torch.no_grad()
def buffer_snapshot(model: torch.nn.Module, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Copies of ``model``'s floating-point buffers (batch-norm running statistics and the like), by name.

    ``into``: an earlier snapshot of the same model, overwritten in place (one multi-tensor copy, no allocation:
    the training step takes one every step) when its names, shapes, dtypes and devices still fit; else new copies."""
    buffers = {name: b for name, b in model.named_buffers() if b.is_floating_point()}
    if into is not None and list(into) == list(buffers) and all(  # (in the same order: paired by position)
            s.shape == b.shape and s.dtype == b.dtype and s.device == b.device
            for s, b in zip(into.values(), buffers.values(), strict=True)):
        if into:
            torch._foreach_copy_(list(into.values()), list(buffers.values()))
        return into
    return {name: b.clone() for name, b in buffers.items()}


@torch.no_grad()
def restore_buffers(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Put back the buffers of :func:`buffer_snapshot` (in place, into whichever tensor each name holds now:
    a module may have replaced one since, as the batch-norm flow does)."""
    for name, b in model.named_buffers():
        if name in saved:
            b.copy_(saved[name])


def buffers_of(model: torch.nn.Module, part: ModuleLike | None, saved: dict[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
    """The entries of ``saved`` (a :func:`buffer_snapshot` of ``model``) that are buffers of ``part``, a submodule."""
    mine = {id(b) for b in part.buffers()} if part is not None else set()
    return {name: saved[name] for name, b in model.named_buffers() if id(b) in mine and name in saved}


def skip_description(logs: dict[str, float], skipped: list[str]) -> str:
    """What a non-finite step had and what it skipped: ``non-finite d_fake, l_q, loss: critic and generator
    updates skipped``; with every logged loss finite, the gradient overflowed."""
    bad = [k for k, v in logs.items() if k not in ("finite", "lr", "d_lr", *GRADIENT_NORMS) and not math.isfinite(v)]
    own = {part: [k for k in bad if (k in CRITIC_TERMS) == (part == "critic")] for part in skipped}
    if bad and not all(own.values()):  # an update skipped for its gradient alone, its own losses finite
        return "; ".join(f"non-finite {', '.join(own[part])}: {part} update skipped" if own[part] else
                         f"a non-finite {part} gradient, its losses finite: {part} update skipped" for part in skipped)
    what = f"non-finite {', '.join(bad)}" if bad else "a non-finite gradient, every loss finite"
    updates = " and ".join(skipped)
    return f"{what}: {updates} update{'s' if len(skipped) > 1 else ''} skipped"


GRADIENT_NORMS = ("grad_norm", "d_grad_norm")  # logged with the losses; not finite exactly when a gradient was not
CRITIC_TERMS = frozenset({"d_loss", "gp", "d_real", "d_fake"})  # the critic's logged terms (the rest: the generator's)


#: the settings that say where the data live (the fingerprint leaves them out): a resume that changes them and
#: reads other data says both in one warning (what data_read changed)
_DATA_PLACE = ("data.root", "data.folder")


def _shown(value: Any) -> str:
    """A setting's value as a resume's notes show it."""
    return "(unset)" if value is None else "(a table)" if isinstance(value, dict) else json.dumps(value)


def _finished(summary: dict[str, Any]) -> bool:
    """Whether ``summary`` (a run's summary.json) is that of a run that trained to its end: some steps and no error."""
    return isinstance(summary.get("steps"), int) and summary["steps"] > 0 and "error" not in summary


def _with_train_bpd(path: Path) -> str:
    """A checkpoint's name with the training bits/dim of its step (from its state.json), if recorded."""
    bpd = read_json_object(path / "state.json").get("train_bpd")
    return f"{path.name} (train bpd {bpd:.4g})" if isinstance(bpd, int | float) else path.name


def _close_weakly(ref: weakref.ref[Generator[Any, None, None]]) -> None:
    batches = ref()
    if batches is not None:
        batches.close()


def _not_finite(value: Any) -> bool:
    """Whether a metric value (Python, numpy or 0-d torch number) is NaN or infinite."""
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
