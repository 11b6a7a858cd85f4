"""The one recipe schema. Component tables are validated by the schema their component registers."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from avade.errors import ConfigError
from avade.schema import FLOAT32_MAX, between, ge, gt

Variant = Literal["av-ade", "v-ade", "av-gde", "vae", "gan", "flow"]
#: Variants with an invertible flow f (``flow``: f alone, a standard normal on f(x), as Real-NVP and Glow).
FLOW_VARIANTS = ("av-ade", "v-ade", "flow")
#: Variants trained with the quality-driven (adversarial) loss L_Q.
ADVERSARIAL_VARIANTS = ("av-ade", "av-gde", "gan")
#: Variants trained with the coverage-driven (likelihood) loss L_C.
LIKELIHOOD_VARIANTS = ("av-ade", "v-ade", "av-gde", "vae", "flow")
#: Variants with the VAE's parts (encoder, posterior, decoder); ``flow`` has none: its latent is f(x) itself.
LATENT_VARIANTS = ("av-ade", "v-ade", "av-gde", "vae", "gan")

#: Component tables of [model] and their registry kind.
MODEL_COMPONENTS = {
    "flow": "flow",
    "encoder": "encoder",
    "posterior": "posterior",
    "decoder": "decoder",
    "discriminator": "discriminator",
}
#: Component chosen when a recipe leaves a table out (None = absent unless the variant needs it).
DEFAULT_COMPONENTS: dict[str, str] = {
    "flow": "realnvp",
    "encoder": "resnet",
    "posterior": "topdown",
    "decoder": "resnet",
    "discriminator": "resnet",
}


class AbsentConfig(dict):
    """The config table of a component this avade does not have (its plugin uninstalled or disabled), kept
    as the run's recipe wrote it. Only a trained run's critic is read this way (evaluating or sampling a run
    does not need it): :func:`avade.recipe.load.without_absent_critic`."""


@attrs.define(eq=True)
class ComponentRef:
    """A component chosen by ``name`` plus its validated config (an attrs instance, or None)."""

    name: str
    config: Any = None


@attrs.define
class ModelOptions:
    """Model-level settings of ``[model]`` besides the component tables."""

    variant: Variant = attrs.field(default="av-ade", metadata={"help": "which objective and parts (see README)"})
    likelihood: Literal["gaussian", "discretized-logistic"] = attrs.field(
        default="gaussian", metadata={"help": "decoder density; discretized-logistic only without a flow"})
    sigma: Literal["scalar", "channel"] = attrs.field(
        default="channel", metadata={"help": "learned decoder scale: one scalar or one per channel"})
    sigma_init: float = attrs.field(default=1.0, validator=gt(0.0), metadata={"help": "initial decoder scale"})
    logit_alpha: float = attrs.field(
        default=0.05, validator=between(0.0, 0.49),
        metadata={"help": "x -> logit(alpha + (1-2 alpha) x) before f (Real-NVP); 0 = no logit: 2x - 1, Glow's "
                          "x - 1/2 up to the factor 2 that its first actnorm's init absorbs"})
    conditional: bool = attrs.field(
        default=False,
        metadata={"help": "class-conditional generator and discriminator (needs labels; the generator takes them "
                          "through a conditional norm: norm = \"cwn\" in [model.decoder], [model.posterior])"})
    temperature: float = attrs.field(default=1.0, validator=ge(0.0), metadata={
        "help": "the prior's temperature when sampling: 1 = the prior itself, 0 = its mode (the decoder's "
                "Gaussian noise in feature space is added either way; as the Python API)"})
    norm_options: dict[str, dict[str, Any]] = attrs.field(
        factory=dict, metadata={"help": "options of a registered norm wherever a component's `norm` "
                                        "names it, e.g. {\"weight-norm\" = {init_scale = 0.1}}: "
                                        "data-dependent init"})


@attrs.define
class ModelSection:
    """``[model]``: the variant, its options and its components."""

    options: ModelOptions = attrs.Factory(ModelOptions)
    flow: ComponentRef | None = None
    encoder: ComponentRef | None = None
    posterior: ComponentRef | None = None
    decoder: ComponentRef | None = None
    discriminator: ComponentRef | None = None

    @property
    def variant(self) -> str:
        """``options.variant``: which model (``av-ade``, ``v-ade``, ``av-gde``, ``vae``, ``gan`` or ``flow``)."""
        return self.options.variant


def _workers(_inst: object, attr: attrs.Attribute, value: int | str) -> None:
    """``data.num_workers``: an int >= 0, or ``"auto"``."""
    if value != "auto" and not (type(value) is int and value >= 0):
        raise ConfigError(f"expected int >= 0 or 'auto', got {value!r}", path=attr.name)


@attrs.define
class DataOptions:
    """Loader settings of ``[data]``; every other key there is the dataset's own config."""

    name: str = attrs.field(default="natural-patches", metadata={"help": "registered dataset"})
    batch_size: int = attrs.field(default=64, validator=ge(1),
                                  metadata={"help": "training batch (of the whole job under torchrun)"})
    eval_batch_size: int = attrs.field(default=256, validator=ge(1), metadata={
        "help": "evaluation batch (bpd draws its noise per batch: another size, another draw of it)"})
    num_workers: int | Literal["auto"] = attrs.field(
        default="auto", validator=_workers,
        metadata={"help": "DataLoader worker processes decoding file-backed data (0 = in the training process); "
                          "auto = 0 for data held in memory or a device other than CUDA, else one per CPU of this "
                          "process less one, at most 8 (avade.train.data.resolve_num_workers)"})
    n_bits: int = attrs.field(
        default=8, validator=between(1, 8),
        metadata={"help": "bits per colour value the model sees (Glow's n_bits_x): below 8 every image is "
                          "posterized to 2^n_bits levels and bits/dim counts those levels (5 = Glow's "
                          "CelebA-HQ); 8 = the images as they are (the paper)"})


@attrs.define
class DataSection:
    """``[data]``: which dataset, its config, and how it is batched."""

    options: DataOptions = attrs.Factory(DataOptions)
    dataset: ComponentRef | None = None


def _betas(_inst: object, attr: attrs.Attribute, value: tuple[float, float]) -> None:
    """Adam's betas: two numbers in [0, 1)."""
    for i, beta in enumerate(value):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"expected a number in [0, 1), got {beta}", path=f"{attr.name}[{i}]")


def _unit_interval(_inst: object, attr: attrs.Attribute, value: float) -> None:
    """A decay: a number in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"expected a number in [0, 1), got {value}", path=attr.name)


@attrs.define
class TrainSection:
    """``[train]``: Algorithm 1's loop settings (paper defaults)."""

    steps: int = attrs.field(default=100_000, validator=ge(1), metadata={"help": "generator updates to train"})
    optimizer: Literal["adamax", "adam"] = attrs.field(
        default="adamax", metadata={"help": "for the generator and the critic (paper: adamax)"})
    lr: float = attrs.field(default=0.002, validator=gt(0.0), metadata={"help": "learning rate (paper: 0.002)"})
    d_lr: float | None = attrs.field(default=None, validator=gt(0.0),
                                     metadata={"help": "the critic's (discriminator's) lr; defaults to lr"})
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.999), validator=_betas,
                                             metadata={"help": "the optimizer's (beta1, beta2)"})
    # (the trainer derives generator seeds from it, e.g. seed * 100_003 + epoch, which torch takes up to 64 bits)
    seed: int = attrs.field(default=0, validator=between(-(2**32 - 1), 2**32 - 1),
                            metadata={"help": "seeds initialisation, data order and noise (|seed| < 2**32)"})
    checkpoint_every: int = attrs.field(default=1000, validator=ge(1),
                                        metadata={"help": "steps between checkpoints (and the last step)"})
    keep_checkpoints: int = attrs.field(default=3, validator=ge(1),
                                        metadata={"help": "how many of the newest checkpoints to keep"})
    keep_every: int = attrs.field(
        default=0, validator=ge(0),
        metadata={"help": "also keep, for good, every checkpoint whose step is a multiple of this (a multiple "
                          "of checkpoint_every); 0 = only the newest keep_checkpoints"})
    log_every: int = attrs.field(default=50, validator=ge(1), metadata={"help": "steps between metrics.jsonl lines"})
    sample_every: int = attrs.field(default=1000, validator=ge(1),
                                    metadata={"help": "steps between sample and reconstruction grids"})
    adv_weight: float = attrs.field(default=100.0, validator=ge(0.0),
                                    metadata={"help": "weight of L_Q against L_C in the generator's loss"})
    gp_weight: float = attrs.field(default=100.0, validator=ge(0.0),
                                   metadata={"help": "the critic's gradient-penalty coefficient (paper: 100); 0 = off"})
    adv_loss: Literal["paper", "wgan", "nonsaturating", "hinge"] = attrs.field(
        default="paper", metadata={"help": "adversarial loss: paper = logistic critic, generator -E[s(fake)]"})
    d_steps: int = attrs.field(default=1, validator=ge(1), metadata={"help": "critic updates per generator update"})
    flow_adv_grad: bool = attrs.field(
        default=False, metadata={"help": "let L_Q train the flow f too (paper: f gets L_C only)"})
    warmup_steps: int = attrs.field(default=0, validator=ge(0),
                                    metadata={"help": "MLE-only steps before joint training (app. F)"})
    critic_warmup_steps: int = attrs.field(
        default=0, validator=ge(0),
        metadata={"help": "the last this-many warmup_steps also train the critic (the generator still gets L_C "
                          "only), so joint training starts against a trained critic rather than a random one "
                          "at the full adv_weight; 0 = off (the paper does not say); like warmup_steps and adv_weight, "
                          "ignored by variants without both a likelihood and a critic"})
    kl_warmup_steps: int = attrs.field(
        default=0, validator=ge(0),
        metadata={"help": "KL warm-up (annealing): the KL term of L_C is weighted (step + 1) / this, up to 1, in "
                          "the training objective (the logged bound stays the true one); 0 = off (the paper)"})
    lr_schedule: Literal["constant", "cosine", "linear"] = attrs.field(
        default="constant",
        metadata={"help": "learning-rate decay after lr_warmup_steps, over the rest of train.steps, from lr (and "
                          "d_lr) down to lr_final_ratio of it; constant = the paper"})
    lr_warmup_steps: int = attrs.field(
        default=0, validator=ge(0),
        metadata={"help": "linear learning-rate warm-up: the n-th step trains with n / this of the lr; 0 = off"})
    lr_final_ratio: float = attrs.field(
        default=0.0, validator=between(0.0, 1.0),
        metadata={"help": "where the decay ends at train.steps, as a fraction of lr (cosine and linear schedules; "
                          "the last step trains just above it)"})
    grad_clip: float | None = attrs.field(default=None, validator=gt(0.0),
                                          metadata={"help": "clip each update's gradient norm to this; unset = off"})
    max_bad_steps: int = attrs.field(default=20, validator=ge(1),
                                     metadata={"help": "stop after this many consecutive non-finite steps"})
    device: Literal["auto", "cpu", "cuda"] = attrs.field(
        default="auto", metadata={"help": "auto = cuda when available (--device overrides it)"})
    precision: Literal["fp32", "bf16"] = attrs.field(
        default="fp32", metadata={"help": "bf16 autocast on CUDA and on CPU (a CPU without AVX512-BF16 or AMX "
                                          "emulates it, slower than fp32); flows stay fp32"})
    bf16_coupling_nets: bool = attrs.field(
        default=False, metadata={"help": "with precision = \"bf16\": the flows' coupling networks (s and t; Glow's "
                                         "split priors) run in bf16 too (av_ade_wg_rd steps on an AMX CPU: 1.29x "
                                         "faster than bf16 alone, 1.65x fp32); affine maps, log-determinants, "
                                         "actnorm, 1x1 convolutions and batch-norm flows stay fp32, so bits/dim stay "
                                         "exact; a deep flow's inverse (sampling) is then exact to ~1e-3, not 1e-6"})
    tf32: bool = attrs.field(
        default=False, metadata={"help": "CUDA: fp32 convolutions and matmuls on TF32 tensor cores (faster on "
                                         "Ampere and later, ~1e-3 relative error: the flows' 1x1 convolutions no "
                                         "longer invert exactly); false = IEEE fp32"})
    cudnn_benchmark: bool = attrs.field(
        default=False, metadata={"help": "CUDA: cuDNN times its convolution algorithms for each new shape and keeps "
                                         "the fastest (faster steps once warm; runs may then differ in the last "
                                         "bits); false = its heuristic choice, the same in every run"})
    compile: bool = attrs.field(
        default=False, metadata={"help": "torch.compile the networks in place (~1 min to start on CPU; pays "
                                         "for flows, not for a whole AV-ADE step: benchmarks/README.md)"})
    compile_backend: str = attrs.field(
        default="inductor", metadata={"help": "torch.compile backend for train.compile (aot_eager: trace only)"})
    eval_batches: int = attrs.field(default=0, validator=ge(0),
                                    metadata={"help": "test batches for the final BPD; 0 = whole test split"})
    ema_decay: float = attrs.field(
        default=0.0, validator=_unit_interval,
        metadata={"help": "keep an exponential moving average of the generator's weights with this decay "
                          "(e.g. 0.999) and evaluate and sample with it; 0 = off"})
    ema_start: int = attrs.field(
        default=0, validator=ge(0),
        metadata={"help": "steps before the average starts (it copies the weights until then)"})

    def __attrs_post_init__(self) -> None:
        # Adam and Adamax step by lr / (1 - beta1^t), up to lr / (1 - beta1) at the first step: past float32's range
        # the optimizer fails with an internal RuntimeError ("cannot be converted to type float without overflow")
        limit = FLOAT32_MAX * (1.0 - self.betas[0])
        for key, lr in (("lr", self.lr), ("d_lr", self.d_lr)):
            if lr is not None and lr > limit:
                raise ConfigError(f"{lr:g} is too large: the optimizer's first step, lr / (1 - betas[0]), would "
                                  f"overflow float32; use at most {limit:.4g} (a usual lr is ~1e-3)", path=key)
        if self.critic_warmup_steps > self.warmup_steps:
            raise ConfigError(f"critic_warmup_steps = {self.critic_warmup_steps} exceeds warmup_steps = "
                              f"{self.warmup_steps}: the critic warms up within the MLE warm-up; use at most "
                              f"{self.warmup_steps}", path="critic_warmup_steps")
        if self.bf16_coupling_nets and self.precision != "bf16":
            raise ConfigError(f"bf16_coupling_nets = true runs the coupling networks under bf16 autocast, which "
                              f"precision = \"{self.precision}\" leaves off; set train.precision = \"bf16\" too, or "
                              "drop bf16_coupling_nets", path="bf16_coupling_nets")
        if self.keep_every % self.checkpoint_every:
            raise ConfigError(f"{self.keep_every} is not a multiple of train.checkpoint_every "
                              f"({self.checkpoint_every}), so no checkpoint would land on it; use a multiple "
                              "of it, or 0", path="keep_every")


@attrs.define
class EvalSection:
    """``[eval]``: metrics computed during training (``every``) and at the end; per-metric tables."""

    metrics: list[str] = attrs.field(factory=lambda: ["bpd"], metadata={"help": "registered metrics to compute"})
    every: int = attrs.field(default=0, validator=ge(0), metadata={"help": "steps between evaluations of eval.metrics "
                                                                             "during training; 0 = only at the end"})
    importance_samples: int = attrs.field(default=1, validator=ge(1),
                                          metadata={"help": "importance samples of the final test bits/dim"})
    inception_weights: str | None = attrs.field(
        default=None, metadata={"help": "Inception weights (a FID-Inception state dict or a TorchScript file) for "
                                        "fid/kid/is/prd/prdc (or AVADE_INCEPTION_WEIGHTS)"})
    settings: dict[str, ComponentRef] = attrs.Factory(dict)


@attrs.define
class SweepSection:
    """``[sweep]``: ``grid`` (cartesian product) and/or ``combos`` (explicit list of overrides)."""

    grid: dict[str, list[Any]] = attrs.Factory(dict)
    combos: list[dict[str, Any]] = attrs.Factory(list)


@attrs.define
class Recipe:
    """A fully resolved recipe (after ``extends`` and overrides)."""

    name: str
    description: str = ""
    model: ModelSection = attrs.Factory(ModelSection)
    data: DataSection = attrs.Factory(DataSection)
    train: TrainSection = attrs.Factory(TrainSection)
    eval: EvalSection = attrs.Factory(EvalSection)
    sweep: SweepSection | None = None
    source: str | None = attrs.field(default=None, eq=False)
    #: The merged mapping (after ``extends`` and ``--set``) it was validated from: a sweep's variants are
    #: its overrides applied to it, as ``--set`` applies to a file, so that a component the base only got
    #: by default (the default flow of an av-ade base) is not carried into a variant that has none (vae).
    raw: dict[str, Any] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def variant(self) -> str:
        """``model.options.variant``: which model this recipe trains."""
        return self.model.options.variant


def refuse_a_non_recipe(recipe: object, what: str) -> None:
    """A TypeError naming ``what`` unless ``recipe`` is a :class:`Recipe` (a notebook may pass a path or a dict)."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"{what}: expected a Recipe, got {type(recipe).__name__}; make one with "
                        "avade.recipe.load_recipe(path, overrides) or avade.recipe.recipe_from_dict(d) (or train a "
                        "recipe file with avade.train.run.run_recipe_file(path, overrides, out_dir=...))")


def refuse_a_sweep(recipe: Recipe, what: str) -> None:
    """A ConfigError naming ``what`` when ``recipe`` has a ``[sweep]``: ``what`` trains one recipe, and would train
    the sweep's base alone, none of its variants, without a word."""
    if recipe.sweep is not None:
        raise ConfigError(f"{what} trains one recipe, but this one has a [sweep], which it would leave out (training "
                          "the base alone); train the sweep with avade.train.run.run_recipe_file(path, out_dir=...), "
                          "or each variant of avade.recipe.expand_sweep(recipe) (variant.recipe, into a directory "
                          "of its own)", path="sweep", source=recipe.source)
