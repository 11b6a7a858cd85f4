"""Recipe -> :class:`GenerativeModel`, every component built through the registry."""

from __future__ import annotations

import json
import operator
import warnings
from typing import Any, NoReturn

import torch
from torch.overrides import TorchFunctionMode

from avade.errors import AvadeError, ConfigError, RegistryError
from avade.models.generative import GenerativeModel
from avade.models.preprocess import Preprocess, to_unit
from avade.nets.shapes import Shape, as_shape
from avade.nn.layers import norm_options
from avade.norms.cwn import ConditionalWeightNorm
from avade.recipe.schema import AbsentConfig, ComponentRef, Recipe, refuse_a_non_recipe
from avade.recipe.write import recipe_to_dict
from avade.registry import get_registry


def _build(kind: str, ref: ComponentRef | None, path: str, **context: Any) -> Any:
    if ref is None or isinstance(ref.config, AbsentConfig):  # a trained run's critic whose plugin is gone
        return None
    registry = get_registry()
    info = registry.get(kind, ref.name)
    if "num_classes" in context and "num_classes" not in info.context_params():
        # as the conformance kit checks it: a factory without num_classes has no class-conditional form
        if context["num_classes"] is not None:
            raise ConfigError(f"{info.qualname} has no class-conditional form (its factory takes no num_classes); "
                              f"use another {kind} or set model.conditional = false", path=path)
        del context["num_classes"]
    try:
        return registry.build(info, ref.config, **context)
    except ConfigError as exc:
        if exc.path.startswith(path):
            raise
        # a component names its own keys as "<kind>.<name>.<key>" (as avade.create shows them): in a
        # recipe that is "<path>.<key>"
        own = f"{kind}.{ref.name}"
        sub = "" if exc.path == own else exc.path.removeprefix(own + ".")
        located = path + sub if sub.startswith("[") else ".".join(p for p in (path, sub) if p)
        raise ConfigError(exc.detail, path=located, source=exc.source) from None
    except (MemoryError, RuntimeError) as exc:
        if not _too_large(exc):  # (any other failure of avade's own factories is avade's bug: the traceback)
            raise
        # a width such as hidden = 10**9: torch's allocator refuses it, an internal error before
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split("err == 0. ")[-1]
        raise ConfigError(f"{kind} '{ref.name}' is too large to build in memory ({detail}); lower its sizes "
                          "(hidden, channels, ...)", path=path) from None
    except RegistryError as exc:
        if not str(exc).startswith("unknown norm"):
            raise
        # a norm is named by an option of the component: say which component's
        norms = [f"{path}.{k}" for k, v in flat_config(ref.config) if isinstance(v, str) and f"'{v}'" in str(exc)]
        raise ConfigError(str(exc), path=norms[0] if norms else path) from None


def _too_large(exc: BaseException) -> bool:
    """Whether ``exc`` is torch (or Python) refusing to allocate the parameters of a too large component: memory
    running out (:func:`avade.memory.out_of_memory`), or a size beyond what torch can even compute."""
    from avade.memory import out_of_memory

    return out_of_memory(exc) is not None or "storage size calculation overflowed" in str(exc).lower()


def flat_config(cfg: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of an attrs config, nested configs included."""
    import attrs

    if not attrs.has(type(cfg)):
        return []
    out = []
    for f in attrs.fields(type(cfg)):
        value = getattr(cfg, f.name)
        out += flat_config(value, f"{prefix}{f.name}.") if attrs.has(type(value)) else [(f"{prefix}{f.name}", value)]
    return out


def build_model(recipe: Recipe, data_shape: tuple[int, int, int] | None = None,
                num_classes: int | None = None) -> GenerativeModel:
    """Assemble the model a recipe describes for images of ``data_shape`` (C, H, W) and ``num_classes`` classes.

    Either may be left out where the dataset's settings say it without loading the data: the shape from their
    ``resolution`` and ``channels`` (3 when absent), the class count from their ``num_classes`` (0 for a model
    that is not class-conditional). A ConfigError asks for what they do not say."""
    refuse_a_non_recipe(recipe, "build_model")
    model = recipe.model
    opts = model.options
    name = recipe.data.options.name
    declared_shape, declared_classes = declared_data(recipe)
    if data_shape is None:
        if declared_shape is None:
            raise ConfigError(f"dataset '{name}' has no resolution setting to take the image shape from; pass "
                              "data_shape=(C, H, W) (the dataset's `shape`)", path="data", source=recipe.source)
        data_shape = declared_shape
    if num_classes is None:
        if declared_classes is not None:
            num_classes = declared_classes
        elif opts.conditional:
            raise ConfigError(f"dataset '{name}' says its class count only once loaded; pass num_classes= (the "
                              "dataset's `num_classes`)", path="model.conditional", source=recipe.source)
        else:
            num_classes = 0
    if opts.conditional and num_classes <= 0:
        raise ConfigError(f"model.conditional = true needs a labelled dataset; '{name}' "
                          "has no labels", path="model.conditional", source=recipe.source)
    classes = num_classes if opts.conditional else 0
    shape = as_shape(data_shape, "data_shape")
    if shape[0] == shape[1] != shape[2] and shape[2] in (1, 3, 4):  # square images given channels last
        raise ConfigError(f"data_shape {shape} looks like (height, width, channels); give (channels, height, width): "
                          f"{(shape[2], shape[0], shape[1])}")
    with norm_options(opts.norm_options):
        return _assemble(recipe, shape, classes)


def declared_data(recipe: Recipe) -> tuple[Shape | None, int | None]:
    """The image shape and class count the dataset's settings say without loading the data: ``(channels (3 when
    absent), resolution, resolution)`` and ``num_classes``, each None where the settings have no such field."""
    cfg = recipe.data.dataset.config if recipe.data.dataset is not None else None
    resolution, classes = getattr(cfg, "resolution", None), getattr(cfg, "num_classes", None)
    shape = (int(getattr(cfg, "channels", 3)), resolution, resolution) if isinstance(resolution, int) else None
    try:
        return shape, operator.index(classes) if classes is not None else None
    except TypeError:  # (not an integer: no count to go by)
        return shape, None


def _assemble(recipe: Recipe, shape: Shape, classes: int) -> GenerativeModel:
    model = recipe.model
    opts = model.options
    cond = classes or None
    flow = _build("flow", model.flow, "model.flow", in_shape=shape)
    out_shape = tuple(getattr(flow, "out_shape", shape)) if flow is not None else shape
    if out_shape != shape:
        assert model.flow is not None  # (the flow was built from it)
        raise ConfigError(f"flow '{model.flow.name}' maps {shape} to {out_shape}; the feature map f must keep the "
                          "image's shape (use a full flow such as realnvp or glow)", path="model.flow.name",
                          source=recipe.source)
    encoder = posterior = decoder = None
    if model.encoder is not None:  # (variant "flow" has no VAE: its latent is f(x))
        encoder = _build("encoder", model.encoder, "model.encoder", in_shape=shape, num_classes=cond)
        stage_shapes = [tuple(s) for s in encoder.stage_shapes]
        posterior = _build("posterior", model.posterior, "model.posterior", stage_shapes=stage_shapes,
                           num_classes=cond)
        decoder = _build("decoder", model.decoder, "model.decoder", stage_shapes=stage_shapes, out_shape=shape,
                         num_classes=cond)
    discriminator = _build("discriminator", model.discriminator, "model.discriminator", in_shape=shape,
                           num_classes=cond)
    return GenerativeModel(
        variant=opts.variant,
        data_shape=shape,
        preprocess=Preprocess(opts.logit_alpha, logit=flow is not None, bits=recipe.data.options.n_bits),
        flow=flow,
        encoder=encoder,
        posterior=posterior,
        decoder=decoder,
        discriminator=discriminator,
        num_classes=classes,
        likelihood=opts.likelihood,
        sigma=opts.sigma,
        sigma_init=opts.sigma_init,
        temperature=opts.temperature,
    )


def _count(n: float) -> str:
    """A parameter count or byte size, short: 48.6 G, 350 M, 12 k."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f}"


def _widest_option(ref: ComponentRef | None) -> tuple[str, Any] | None:
    """The (key, value) of ``ref``'s option with the largest size (an integer or a list of them, e.g. hidden =
    30000 or channels = [8000, 16000]): what to lower in a component too large; None without one."""
    best: tuple[int, str, Any] | None = None
    for key, value in flat_config(ref.config) if ref is not None else []:
        sizes = value if isinstance(value, list | tuple) else [value]
        ints = [v for v in sizes if isinstance(v, int) and not isinstance(v, bool)]
        if ints and (best is None or max(ints) > best[0]):
            best = (max(ints), key, list(value) if isinstance(value, tuple) else value)
    return (best[1], best[2]) if best is not None else None


class MemoryFitError(ConfigError):
    """A model whose training state cannot fit in the memory free for it (:func:`build_checked`)."""


class _WontFit(BaseException):  # (not an Exception: no component's own handler may swallow it)
    pass


# the factories a component allocates its parameters (and buffers) with
_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.randn, torch.rand, torch.randint, torch.eye}


class _AllocationGuard(TorchFunctionMode):
    """Counts the bytes the factories above are asked for while a model is built, and stops the build (_WontFit)
    before the call that would take the total past ``limit``: nothing beyond it is allocated (with memory
    overcommitted, an allocation too large "succeeds" and the kernel kills the process as its pages are used)."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit, self.total = limit, 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.limit is not None and func in _FACTORIES:
            self.total += self._numel(func, args, kwargs) * (kwargs.get("dtype") or torch.get_default_dtype()).itemsize
            if self.total > self.limit:
                raise _WontFit
        return func(*args, **kwargs)

    @staticmethod
    def _numel(func: Any, args: Any, kwargs: Any) -> int:
        if func is torch.eye:
            return int(args[0]) * int(args[1] if len(args) > 1 and isinstance(args[1], int) else args[0])
        if func is torch.randint:  # randint([low,] high, size)
            args = [a for a in args if not isinstance(a, int)]
        size = kwargs.get("size", args[0] if args else ())
        if func is not torch.full and args and all(isinstance(a, int) for a in args):
            size = args  # torch.zeros(3, 4)
        numel = 1
        for dim in size if isinstance(size, list | tuple) else [size]:
            numel *= int(dim)
        return numel


def _run_device(recipe: Recipe, device: str | None) -> str:
    from avade.train.device import resolve_device

    try:
        return str(resolve_device(device or recipe.train.device))
    except AvadeError:  # (a device this machine lacks: `recipe run` says so; the host is what is known)
        return "cpu"


def _sizes(model: GenerativeModel) -> dict[str, tuple[int, int]]:
    """Each component's (parameters, their bytes)."""
    sizes = {}
    for name, child in model.named_children():
        params = list(child.parameters())
        sizes[name] = (sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params))
    return sizes


def _meta_sizes(recipe: Recipe, data_shape: Any, num_classes: Any) -> dict[str, tuple[int, int]] | None:
    """:func:`_sizes` of the model built on torch's meta device (no memory); None where it cannot be built so (a
    component's data-dependent init); a recipe's error (a ConfigError) as the real build would raise it."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return _sizes(build_model(recipe, data_shape, num_classes))
    except ConfigError:  # (e.g. a size torch cannot even compute: the error the real build says, raised as it is)
        raise
    except Exception:
        return None


def model_key(recipe: Recipe, num_classes: int = 10) -> str | None:
    """What tells ``recipe``'s model apart for :func:`check_model` (its settings, image shape and class count: sweep
    variants that differ only in data.category share one); None where the dataset declares no resolution."""
    shape, declared_classes = declared_data(recipe)
    if shape is None:
        return None
    classes = num_classes if declared_classes is None else declared_classes
    return json.dumps([recipe_to_dict(recipe)["model"], shape, classes], sort_keys=True, default=str)


def model_summary(recipe: Recipe, sizes: dict[str, dict[str, tuple[int, int]]]) -> str | None:
    """What a user sizes a long run by, in one line (``avade recipe check``): the model's parameters by component,
    the memory its training state takes (weights, gradients, the optimizer's two moments, the weight average with
    ``train.ema_decay``; activations, which grow with the batch and the resolution, are left to ``avade recipe
    memory``: their count takes a second), the batch and the steps. ``sizes``: what :func:`check_model` recorded
    (by :func:`model_key`); None for a model it did not build (no declared resolution)."""
    shape, _ = declared_data(recipe)
    key = model_key(recipe)
    if shape is None or key is None or key not in sizes:
        return None
    of = sizes[key]
    state, kept = training_state_bytes(recipe, of)
    parts = ", ".join(f"{name} {_count(n)}" for name, (n, _) in of.items() if n)
    batch, steps = recipe.data.options.batch_size, recipe.train.steps
    return (f"{_count(sum(n for n, _ in of.values()))} parameters ({parts}); training state ~{_count(state)}B "
            f"({kept}; activations: avade recipe memory); batch {batch} of {'x'.join(map(str, shape))}, "
            f"{steps:,} steps")


def distinct_models(recipes: list[Recipe]) -> list[list[Recipe]]:
    """``recipes`` (a sweep's variants) in groups that build the same model and train it alike, at one batch, on one
    device (a sweep over LSUN's categories or seeds: one group): each group's memory need is one."""
    groups: dict[str, list[Recipe]] = {}
    for r in recipes:
        model = model_key(r)
        t = r.train  # (what a step's memory depends on: not the seed, the steps or the learning rate)
        trained = [t.device, t.optimizer, t.precision, t.bf16_coupling_nets, bool(t.ema_decay), t.gp_weight > 0,
                   t.flow_adv_grad]
        key = json.dumps([model, r.data.options.batch_size, trained], default=str) \
            if model is not None else str(id(r))  # (no declared resolution: the model is known only at run)
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def training_state_bytes(recipe: Recipe, sizes: dict[str, tuple[int, int]]) -> tuple[int, str]:
    """The bytes of ``recipe``'s training state for a model of component ``sizes`` (name -> (parameters, bytes)),
    and what it holds in words: weights, their gradients and the optimizer's two moments (Adam, Adamax), and with
    ``train.ema_decay`` the weight average, of the generator alone (the critic is not averaged)."""
    weights = sum(b for _, b in sizes.values())
    if not recipe.train.ema_decay:
        return 4 * weights, "weights, gradients and optimizer state"
    generator = sum(b for name, (_, b) in sizes.items() if name != "discriminator")
    return 4 * weights + generator, "weights, gradients, optimizer state and weight average"


def build_checked(recipe: Recipe, data_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                  device: str | None = None) -> GenerativeModel:
    """:func:`build_model`, refusing (:class:`MemoryFitError`, before allocating it) a model whose training state
    cannot fit in the memory free for it: its weights, their gradients and the optimizer's two moments (Adam,
    Adamax), the weight average too with ``train.ema_decay``, against the free memory of the run's GPU
    (``device``, else ``train.device``), else the host's. A GPU run builds the model on the host first: there its
    weights once. Where free memory cannot be read nothing is checked. Activations are not counted: this only
    catches what cannot fit at any batch size (a typo'd width), never a recipe that fits. The build is the same
    (random numbers included) as :func:`build_model`'s."""
    from avade.memory import memory_free

    where = _run_device(recipe, device)
    # (while building, sizes unknown: the build stops once the weights pass the free memory's share of one copy.
    # On the CPU that share is a quarter whatever train.ema_decay: the state is 4 copies of every weight and, with
    # the average, one more of the generator's alone, so a fifth would stop the build of an av-ade whose state fits,
    # and refuse it saying it needs less than is free; a state past 4 copies is refused once the model is built)
    host_copies = 4 if where == "cpu" else 1
    host_free, _ = memory_free("cpu")
    try:
        with _AllocationGuard(None if host_free is None else host_free // host_copies):
            model = build_model(recipe, data_shape, num_classes)
    except _WontFit:
        assert host_free is not None
        sizes = _meta_sizes(recipe, data_shape, num_classes)
        if sizes is None:
            words = training_state_bytes(recipe, {})[1] if where == "cpu" else "weights"
            _refuse(recipe, None, None, words, "this machine", host_free)
        need, what = training_state_bytes(recipe, sizes) if where == "cpu" else (
            sum(b for _, b in sizes.values()), "weights")
        _refuse(recipe, sizes, need, what, "this machine", host_free)
    sizes = _sizes(model)
    weights = sum(b for _, b in sizes.values())
    state, kept = training_state_bytes(recipe, sizes)
    for need, what, on in [(state, kept, where)] + ([(weights, "weights", "cpu")] if where != "cpu" else []):
        # (the host's free memory as read before the build: read now it would count the built weights twice)
        free, machine = (host_free, "this machine") if on == "cpu" else memory_free(on)
        if free is not None and need > free:
            _refuse(recipe, sizes, need, what, machine, free)
    return model


def _refuse(recipe: Recipe, sizes: dict[str, tuple[int, int]] | None, need: int | None, what: str, machine: str,
            free: int) -> NoReturn:
    if sizes is None or need is None:  # (a component that cannot be built on the meta device: no count)
        raise MemoryFitError(f"the model's {what} need more than the {free / 1e9:.3g} GB {machine} has free (its "
                             "build was stopped there); use smaller sizes in model.* (hidden, channels, ...)",
                             path="model", source=recipe.source)
    largest = max(sizes, key=lambda name: sizes[name][0])
    widest = _widest_option(getattr(recipe.model, largest, None))
    path = f"model.{largest}.{widest[0]}" if widest else f"model.{largest}"
    lower = f"lower {path} ({widest[1]})" if widest else f"use a smaller {path}"
    raise MemoryFitError(f"{_count(sum(n for n, _ in sizes.values()))} parameters need ~{need / 1e9:.3g} GB for "
                         f"{what}; {machine} has {free / 1e9:.3g} GB free; {lower}: model.{largest} is the largest "
                         f"component ({_count(sizes[largest][0])} parameters)", path=path, source=recipe.source)


def check_model(recipe: Recipe, num_classes: int = 10, seen: set[str] | None = None,
                device: str | None = None, sizes: dict[str, dict[str, tuple[int, int]]] | None = None) -> bool:
    """Build ``recipe``'s model for its dataset's image shape and run it once, without gradients, on two
    random images: likelihood, sampling and the critic. Shape mismatches between components (e.g. a
    resolution the encoder cannot halve) surface as a :class:`ConfigError` here instead of at ``run``.

    Nothing is read or written. The shape comes from the dataset config's ``resolution`` and
    ``channels`` (3 when absent); a dataset config without ``resolution`` is not checked. The class
    count is the config's ``num_classes`` if it has one, else ``num_classes`` as a stand-in (the real
    count is only known once the dataset is loaded). ``seen`` (shared across a sweep's variants) skips a
    model and shape already checked, e.g. variants that differ only in the dataset's category. Returns
    whether the model was run (False: no ``resolution`` to run it at). A model whose training state cannot fit in
    the free memory of ``device`` (else ``train.device``) is refused first (:func:`build_checked`). ``sizes``, where
    given, gets each model's parameters and their bytes by component, under its :func:`model_key`
    (:func:`model_summary` says them).
    """
    shape, declared_classes = declared_data(recipe)
    if shape is None:
        return False
    classes = num_classes if declared_classes is None else declared_classes
    key = model_key(recipe, num_classes)
    if seen is not None:
        assert key is not None
        if key in seen:
            return True
        seen.add(key)
    model = build_checked(recipe, shape, classes, device)  # (a training state that cannot fit: refused)
    if sizes is not None and key is not None:  # (counted on the model built anyway: no second build)
        sizes[key] = _sizes(model)
    labels = torch.arange(2) % max(model.num_classes, 1) if model.num_classes else None
    x = torch.randint(0, 256, (2, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    step = "likelihood"
    try:
        with torch.no_grad():
            if model.variant != "gan":
                model.log_likelihood(x, labels)
            step = "sampling"
            samples = to_unit(model.generate(2, labels, temperature=1.0))
            if model.discriminator is not None:
                step = "critic"
                model.discriminator(samples, labels)
    except AvadeError:
        raise
    except Exception as exc:  # torch reports shape mismatches as RuntimeError/ValueError; plugins, anything
        from avade.blame import plugin_at_fault

        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        detail = detail if isinstance(exc, RuntimeError | ValueError) else f"{type(exc).__name__}: {detail}"
        culprit = plugin_at_fault(exc)
        if culprit:
            raise ConfigError(f"{culprit} failed when the model ran once on {shape[0]}x{shape[1]}x{shape[2]} images "
                              f"({step}): {detail}; fix or disable that plugin", path="model",
                              source=recipe.source) from None
        raise ConfigError(f"the model does not run on {shape[0]}x{shape[1]}x{shape[2]} images ({step} failed: "
                          f"{detail}); check the components' channels and stages against data.resolution",
                          path="model", source=recipe.source) from None
    if model.num_classes and _ignores_labels(model):
        warnings.warn(f"{recipe.source or 'recipe'}: model.conditional = true, but the generator ignores the labels "
                      f"(model.decoder.norm = {_norm_of(recipe.model.decoder)}, model.posterior.norm = "
                      f"{_norm_of(recipe.model.posterior)}): only the critic is class-conditional, every class "
                      "gets the same samples and GAN-test/GAN-train score chance; set norm = \"cwn\" in "
                      "[model.decoder] and [model.posterior]", UserWarning, stacklevel=2)
    if not model.num_classes and any(isinstance(m, ConditionalWeightNorm) for m in model.modules()):
        # (valid, e.g. the conditional recipe's ablation with model.conditional = false, but not what it reads as)
        warnings.warn(f"{recipe.source or 'recipe'}: norm = \"cwn\" in a model that is not class-conditional "
                      "(model.conditional = false) is plain weight normalization: its per-class gains and biases "
                      "need labels; say norm = \"weight-norm\", or set model.conditional = true with a labelled "
                      "dataset", UserWarning, stacklevel=2)
    return True


def _norm_of(ref: ComponentRef | None) -> str:
    norm = getattr(ref.config, "norm", None) if ref is not None else None
    return repr(norm) if isinstance(norm, str) else "(none)"


def _ignores_labels(model: GenerativeModel) -> bool:
    """Whether a class-conditional model's generator gives the same prior samples for every class: a copy
    with its generator's weights perturbed (class-conditional gains start equal for every class, so the
    untrained model itself cannot tell) decodes the same noise for two classes. False when it cannot be run."""
    import copy

    try:
        probe = copy.deepcopy(model).eval()
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in [*probe.decoder.parameters(), *probe.posterior.parameters()]:
                if p.dtype.is_floating_point:
                    p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            means = []
            for label in (0, 1):
                with torch.random.fork_rng(devices=[]):  # (the CPU generator alone: CUDA's are left alone)
                    torch.default_generator.manual_seed(0)
                    means.append(probe.decode_prior(2, torch.full((2,), label), temperature=1.0))
        return bool(torch.equal(means[0], means[1]))
    except Exception:  # (a plugin that fails here failed the run-once above already, or samples no other way)
        return False
