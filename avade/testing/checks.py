"""Per-kind conformance checks (shapes, gradients, invertibility, log-det, safetensors round trip, meta device)."""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import attrs
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from avade.blame import raised_where
from avade.contracts import CodedPosterior, DecoderModule, EncoderModule, FlowModule, PosteriorModule
from avade.errors import AvadeError, ConfigError, DataError
from avade.models.generative import takes_labels
from avade.registry import ComponentInfo, Registry, get_registry, is_valid_name

Shape = tuple[int, int, int]
#: Input shapes tried in order until the component builds (plugins may constrain resolution).
FLOW_SHAPES: Sequence[Shape] = ((3, 4, 4), (3, 8, 8), (2, 8, 8), (3, 16, 16))
IMAGE_SHAPES: Sequence[Shape] = ((3, 16, 16), (3, 32, 32))
#: Class count for the conditional variants (as ``model.conditional = true`` builds them).
NUM_CLASSES = 10
_T = TypeVar("_T")


def _fail(what: str, message: str) -> NoReturn:
    raise AssertionError(f"{what}: {message}")


def _call(what: str, called: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)``, a call into the component: whatever it raises becomes one failed check that
    names the component, what the kit called and where it broke (a raw torch traceback names neither the
    component nor the contract it was held to)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # AssertionError too: a plugin's own assert is no kit verdict
        message = f"{called} raised {raised_where(exc)}"
    _fail(what, message)  # outside the except: no "during handling of..." chain in the report


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _build_first(registry: Registry, kind: str, name: str, shapes: Sequence[Shape], config: dict[str, Any],
                 key: str = "in_shape", **context: Any) -> tuple[nn.Module, Shape]:
    errors = []
    for shape in shapes:
        try:
            return registry.create(kind, name, **{key: shape}, **context, **config), shape
        except AvadeError as exc:  # a documented refusal (e.g. resolution not divisible): try the next shape
            errors.append((shape, str(exc)))
    if len({message for _, message in errors}) == 1:  # not about the shape (e.g. a bad config value)
        if errors[0][1].startswith((f"{kind} '{name}':", f"{kind} '{name}' (from plugin")):  # named already
            raise AssertionError(errors[0][1])
        _fail(f"{kind} '{name}'", f"does not build: {errors[0][1]}")
    _fail(f"{kind} '{name}'", "does not build for any test shape: " + "; ".join(f"{s}: {m}" for s, m in errors))
    raise AssertionError  # unreachable


def _roundtrip(module: nn.Module, rebuild: Callable[[], nn.Module], run: Callable[[nn.Module], torch.Tensor],
               what: str) -> None:
    """In eval mode the outputs are deterministic, and weights saved with safetensors and loaded into a fresh
    instance give the same outputs."""
    module.eval()
    expected = run(module)
    if not torch.allclose(expected, run(module), atol=1e-10, rtol=1e-8):  # (else "state not in state_dict?" misleads)
        _fail(what, "is not deterministic in eval mode: two calls on the same input give different outputs (dropout "
                    "with training=True, or noise drawn whatever self.training?)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        save_model(module, str(path))
        fresh = rebuild()
        missing, unexpected = load_model(fresh, str(path), strict=True)
        if missing or unexpected:
            _fail(what, f"safetensors round trip lost tensors: missing {missing}, unexpected {unexpected}")
    fresh.eval()
    got = run(fresh)
    if not torch.allclose(expected, got, atol=1e-10, rtol=1e-8):
        _fail(what, "outputs differ after a safetensors save/load round trip (state not in state_dict?)")


def _gradients(module: nn.Module, loss: torch.Tensor, what: str) -> None:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not params:
        return
    module.zero_grad(set_to_none=True)
    if not loss.requires_grad:  # everything detached: say so instead of torch's "does not require grad"
        _fail(what, f"no gradient reaches parameters {[n for n, _ in params][:5]} (the outputs are detached "
                    "from them: no_grad, .detach() or .data?)")
    loss.backward()
    missing = [n for n, p in params if p.grad is None]
    if missing:
        _fail(what, f"no gradient reaches parameters {missing[:5]}")
    grads = [(n, p.grad) for n, p in params if p.grad is not None]
    bad = [n for n, g in grads if not torch.isfinite(g).all()]
    if bad:
        _fail(what, f"non-finite gradients in {bad[:5]}")
    if all(float(g.abs().sum()) == 0.0 for _, g in grads):
        _fail(what, "every parameter gradient is zero")


def _perturb(module: nn.Module, seed: int = 0) -> None:
    """Zero-initialised last layers make a fresh flow the identity; perturb so checks see real maps."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # drawn on the CPU: the same perturbation on every device the kit runs on
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype, device="cpu").to(p.device))


def _on_meta(t: torch.Tensor | None) -> torch.Tensor | None:
    """A meta tensor of ``t``'s shape and dtype (the kit's own input, for :func:`_check_meta`)."""
    return None if t is None else t.to("meta")


def _check_meta(what: str, build: Callable[[], nn.Module], run: Callable[[nn.Module], object]) -> None:
    """Built (``build()``) and run (``run(module)``, inputs made with :func:`_on_meta`) on torch's meta device,
    in training mode with gradients on, as ``avade recipe memory`` runs a model to count a training step's
    activations. A component that reads its tensors' values while running (``.item()``, ``bool(tensor)``, a
    shape that depends on the data) cannot run there: not a failed check (a plugin may need the values), a
    warning that the activations of a model using it cannot be estimated. The RNG is left as it was."""
    failure = ""
    with torch.random.fork_rng(devices=[]), torch.device("meta"), torch.enable_grad():
        try:
            module = build()
        except Exception as exc:
            failure = f"building it raised {raised_where(exc)}"
        else:
            module.train()
            try:
                run(module)
            except AssertionError as exc:  # from _call: "<what>: <call> raised ..."
                failure = str(exc).removeprefix(f"{what}: ")
            except Exception as exc:
                failure = f"running it raised {raised_where(exc)}"
    if failure:
        warnings.warn(f"{what}: does not run on the meta device: {failure}; `avade recipe memory` cannot estimate the "
                      "activations of a model using it: read no tensor's values in forward (no .item(), "
                      "bool(tensor), float(tensor) or data-dependent shapes) and skip a data-dependent "
                      "initialisation when x.is_meta (as avade/flows/actnorm.py does)", stacklevel=3)


# -- flows -------------------------------------------------------------------------------------------


def check_flow(name: str, registry: Registry | None = None, **config: Any) -> None:
    """Shapes (``y`` of shape ``[B, *out_shape]``), exact invertibility (float64), log-det vs the brute-force
    Jacobian in eval and in training mode, gradients, round trip; then forward and inverse in float32."""
    registry = registry or get_registry()
    what = f"flow '{name}'"
    torch.manual_seed(0)
    flow, shape = _build_first(registry, "flow", name, FLOW_SHAPES, config)
    flow = flow.double()
    # Registered flows keep x's shape; building blocks (squeeze) advertise what they give as out_shape.
    out_shape = tuple(int(s) for s in getattr(flow, "out_shape", shape))
    if math.prod(out_shape) != math.prod(shape):
        _fail(what, f"out_shape {out_shape} has {math.prod(out_shape)} elements, in_shape {shape} has "
                    f"{math.prod(shape)}; a flow keeps the dimension")
    x = torch.randn(4, *shape, dtype=torch.float64)
    flow.train()
    _forward(flow, x, what)  # data-dependent initialisation happens here
    _perturb(flow)
    flow.eval()
    y, logdet = _forward(flow, x, what)
    if tuple(y.shape) != (x.shape[0], *out_shape):
        _fail(what, f"forward maps {tuple(x.shape)} -> {tuple(y.shape)}; expected [batch, *out_shape] = "
                    f"{(x.shape[0], *out_shape)} (a flow used as model.flow keeps x's shape)")
    if tuple(logdet.shape) != (x.shape[0],):
        _fail(what, f"logdet has shape {tuple(logdet.shape)}, expected [batch] = ({x.shape[0]},)")
    if y.dtype != x.dtype or logdet.dtype != x.dtype:  # else the exactness checks below fail, blaming the inverse
        _fail(what, f"forward(x) on x of {x.dtype} gives y of {y.dtype} and logdet of {logdet.dtype}; both must keep "
                    "x's dtype: no fixed .float() or tensors made without dtype=x.dtype")
    for label, t in (("forward's output", y), ("logdet", logdet)):
        if not torch.isfinite(t).all():
            _fail(what, f"{label} is not finite (NaN or inf) for standard normal inputs")
    y_before = y.detach().clone()
    x_back = _call(what, f"inverse(y) on y of shape {tuple(y.shape)}", cast(FlowModule, flow).inverse, y)
    if not torch.equal(y.detach(), y_before):
        _fail(what, "inverse(y) changed its input y in place (sub_, mul_, y[...] = ...); the caller still uses y: "
                    "compute x in new tensors")
    if not isinstance(x_back, torch.Tensor) or x_back.shape != x.shape or x_back.dtype != x.dtype:
        _fail(what, f"inverse(y) must return x's shape {tuple(x.shape)} and dtype {x.dtype}, got {_shape(x_back)}"
                    + (f" of {x_back.dtype}" if isinstance(x_back, torch.Tensor) else ""))
    err = float((x_back - x).detach().abs().max())
    if not err <= 1e-8:  # NaN fails too
        _fail(what, f"inverse(forward(x)) differs from x by {err:.2e} (float64)")
    _check_wide_inverse(flow, x, what)
    _check_per_sample(flow, x, y, logdet, what)
    x1 = x[:1]

    def f(v: torch.Tensor) -> torch.Tensor:
        return _forward(flow, v.view(1, *shape), what)[0].flatten()

    jac = torch.autograd.functional.jacobian(f, x1.flatten())
    brute = torch.linalg.slogdet(jac)[1].detach()
    logdet = logdet.detach()
    if abs(float(brute - logdet[0])) > 1e-6 * max(1.0, abs(float(brute))):
        _fail(what, f"logdet {float(logdet[0]):.8f} != log|det J| {float(brute):.8f} from autograd")
    _check_logdet_gradient(flow, f, x1, shape, what)
    _check_training_logdet(flow, x, out_shape, what)
    flow.train()
    out, ld = _forward(flow, x, what)
    _gradients(flow, out.pow(2).mean() + ld.mean(), what)

    def rebuild() -> nn.Module:
        return registry.create("flow", name, in_shape=shape, **config).double()

    _roundtrip(flow, rebuild, lambda m: torch.cat([m(x)[0].flatten(), m(x)[1]]), what)
    _check_float32(registry.create("flow", name, in_shape=shape, **config), shape, out_shape, what)

    def run_meta(m: nn.Module) -> None:  # (the likelihood runs forward, sampling the inverse)
        x_meta = cast(torch.Tensor, _on_meta(x.float()))
        y = _call(what, f"forward(x) on x of shape {tuple(x.shape)} in training mode", m, x_meta)[0]
        _call(what, f"inverse(y) on y of shape {tuple(y.shape)} in training mode", cast(FlowModule, m).inverse, y)

    _check_meta(what, lambda: registry.create("flow", name, in_shape=shape, **config), run_meta)


def _check_float32(flow: nn.Module, shape: Shape, out_shape: tuple[int, ...], what: str) -> None:
    """The checks above run in float64 (exactness); the trainer runs flows in float32: built as it builds them,
    forward and inverse work there too, keep the input's dtype, and invert to float32 precision (a constant made
    as float64, e.g. ``torch.from_numpy(np.eye(C))`` kept as a plain attribute, fails only here)."""
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(6)).to(
        next(iter(flow.parameters()), torch.empty(0)).device)
    flow.train()
    _forward(flow, x, f"{what} (float32)")  # data-dependent initialisation
    flow.eval()
    with torch.no_grad():
        y, logdet = _forward(flow, x, f"{what} (float32)")
        if y.dtype != x.dtype or logdet.dtype != x.dtype:
            _fail(what, f"in float32 (as the trainer runs flows) forward(x) gives y of {y.dtype} and logdet of "
                        f"{logdet.dtype}; both must keep x's dtype {x.dtype}")
        if tuple(y.shape) != (x.shape[0], *out_shape) or not (torch.isfinite(y).all() and torch.isfinite(logdet).all()):
            _fail(what, f"in float32 forward(x) gives y {_shape(y)}, logdet {_shape(logdet)}; expected finite "
                        f"{(x.shape[0], *out_shape)} and ({x.shape[0]},)")
        x_back = _call(f"{what} (float32)", f"inverse(y) on y of shape {tuple(y.shape)}",
                       cast(FlowModule, flow).inverse, y)
        if not isinstance(x_back, torch.Tensor) or x_back.shape != x.shape or x_back.dtype != x.dtype:
            _fail(what, f"in float32 inverse(y) must return x's shape {tuple(x.shape)} and dtype {x.dtype}, got "
                        f"{_shape(x_back)}" + (f" of {x_back.dtype}" if isinstance(x_back, torch.Tensor) else ""))
        err = float((x_back - x).abs().max())
        if not err <= 1e-3:  # NaN fails too
            _fail(what, f"in float32 inverse(forward(x)) differs from x by {err:.2e}")


def _check_wide_inverse(flow: nn.Module, x: torch.Tensor, what: str) -> None:
    """Invertible beyond the bulk of a standard normal too: features after a logit preprocessing, or a trained
    flow's, reach several units, where a clamp or a branch taken only for large inputs breaks the inverse."""
    wide = 4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype).to(x.device)
    with torch.no_grad():
        y, logdet = _forward(flow, wide, what)
        if not (torch.isfinite(y).all() and torch.isfinite(logdet).all()):
            _fail(what, "forward's output or logdet is not finite for inputs of scale 4 (x = 4 * standard normal)")
        back = _call(what, f"inverse(y) on y of shape {tuple(y.shape)}", cast(FlowModule, flow).inverse, y)
    err = float((back - wide).abs().max()) if isinstance(back, torch.Tensor) and back.shape == wide.shape else math.nan
    if not err <= 1e-8 * max(1.0, float(wide.abs().max())):  # NaN fails too
        _fail(what, f"inverse(forward(x)) differs from x by {err:.2e} (float64) for inputs of scale 4 (x = 4 * "
                    f"standard normal, |x| up to {float(wide.abs().max()):.1f}): is it invertible only near 0?")


def _forward(flow: nn.Module, x: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    mode = "training" if flow.training else "eval"
    before = x.detach().clone()
    out = _call(what, f"forward(x) on x of shape {tuple(x.shape)} in {mode} mode", flow, x)
    if not torch.equal(x.detach(), before):
        _fail(what, f"forward(x) in {mode} mode changed its input x in place (mul_, add_, x[...] = ...); the caller "
                    "still uses x: compute y in new tensors")
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        _fail(what, f"forward(x) must return a tuple (y, logdet), got {type(out).__name__}")
    return out


def _check_training_logdet(flow: nn.Module, x: torch.Tensor, out_shape: tuple[int, ...], what: str) -> None:
    """The trainer runs flows in training mode: there too the log-det of sample 0 is log|det| of the
    Jacobian of its output with respect to its input.

    A flow with batch statistics (batch norm) maps each sample with the batch's mean and variance held
    fixed, and its log-det is that map's; the Jacobian of the whole batch map also holds how sample 0
    moves the statistics. So sample 0 appears twice in the batch and is moved as ``x0 + v`` and ``x0 - v``:
    any statistic symmetric in the samples (a mean, a variance, of the input or of any layer inside) then
    does not change to first order, and the Jacobian in ``v`` at 0 is the one with the statistics fixed.
    For a flow that maps each sample on its own it is simply the sample's Jacobian. Output and log-det
    come from the same forward pass (a random training-mode map, e.g. dropout, stays consistent)."""
    flow.train()
    x0 = x[:1]
    batch = torch.cat([x0, x0, x[1:3]])
    seen: dict[str, torch.Tensor] = {}

    def g(v: torch.Tensor) -> torch.Tensor:
        v = v.view_as(x0)
        y, logdet = _forward(flow, torch.cat([x0 + v, x0 - v, batch[2:]]), what)
        if tuple(y.shape) != (batch.shape[0], *out_shape) or tuple(logdet.shape) != (batch.shape[0],):
            _fail(what, f"in training mode forward maps {tuple(batch.shape)} -> ({_shape(y)}, {_shape(logdet)}); "
                        f"expected ({(batch.shape[0], *out_shape)}, ({batch.shape[0]},))")
        seen["logdet"] = logdet[0].detach()
        return y[0].flatten()

    jac = torch.autograd.functional.jacobian(g, torch.zeros(x0.numel(), dtype=x.dtype))
    brute = float(torch.linalg.slogdet(jac)[1])
    got = float(seen["logdet"])
    if not abs(brute - got) <= 1e-6 * max(1.0, abs(brute)):  # NaN fails too
        _fail(what, f"in training mode (as the trainer runs it) logdet {got:.8f} != log|det J| {brute:.8f} from "
                    "autograd (sample 0's Jacobian, batch statistics held fixed); is the log-det different "
                    "while self.training?")


def _check_per_sample(flow: nn.Module, x: torch.Tensor, y: torch.Tensor, logdet: torch.Tensor,
                      what: str) -> None:
    """In eval mode each sample's output and log-det are its own: the batch gives what one sample at a
    time gives (the brute-force Jacobian below checks sample 0; this carries it to every sample)."""
    y, logdet = y.detach(), logdet.detach()
    for i in range(x.shape[0]):
        with torch.no_grad():
            yi, ldi = _forward(flow, x[i:i + 1], what)
        y_err = float((yi[0] - y[i]).abs().max())
        ld_err = abs(float(ldi[0] - logdet[i]))
        if not (y_err <= 1e-8 and ld_err <= 1e-8 * max(1.0, abs(float(logdet[i])))):
            _fail(what, f"sample {i} of a batch gets {'a log-det' if y_err <= 1e-8 else 'an output'} other than "
                        f"when alone (differs by {max(y_err, ld_err):.2e}); in eval mode every sample must be "
                        "mapped on its own (is the log-det taken from another sample, or summed over the batch?)")


def _check_logdet_gradient(flow: nn.Module, f: Callable[[torch.Tensor], torch.Tensor], x1: torch.Tensor,
                           shape: Shape, what: str) -> None:
    """The log-det trains the flow's parameters as log|det J| would: a right value computed under
    ``no_grad`` or ``.detach()`` passes the value check but silently drops the likelihood's Jacobian term."""
    named = [(n, p) for n, p in flow.named_parameters() if p.requires_grad]
    if not named:
        return
    params = [p for _, p in named]
    jac = torch.autograd.functional.jacobian(f, x1.flatten(), create_graph=True)
    brute = torch.linalg.slogdet(jac)[1]
    if not brute.requires_grad:
        return  # log|det J| does not depend on any parameter (e.g. additive couplings)
    expected = torch.autograd.grad(brute, params, allow_unused=True)
    logdet = _forward(flow, x1.view(1, *shape), what)[1][0]
    got = (torch.autograd.grad(logdet, params, allow_unused=True) if logdet.requires_grad
           else [None] * len(params))
    for (n, _), e, g in zip(named, expected, got, strict=True):
        e = torch.zeros(()) if e is None else e.detach()
        g = torch.zeros(()) if g is None else g.detach()
        err = float((e - g).abs().max())
        if err > 1e-6 * max(1.0, float(e.abs().max())):
            _fail(what, f"the gradient of logdet w.r.t. parameter '{n}' differs from that of log|det J| by "
                        f"{err:.2e} (is the log-det computed under no_grad or detached?)")


# -- VAE parts ---------------------------------------------------------------------------------------


def _reference_encoder(registry: Registry, name: str, shape: Shape) -> EncoderModule:
    """The same-named encoder (small config) gives a decoder/posterior a realistic stage layout."""
    enc = name if ("encoder", name) in registry else "conv"
    return registry.create("encoder", enc, in_shape=shape, **SMALL_CONFIGS.get(("encoder", enc), {}))


def _conditional(registry: Registry, kind: str, name: str, build: Callable[[], nn.Module]) -> nn.Module | None:
    """The component built class-conditional, as ``model.conditional = true`` builds it (the model builder
    passes ``num_classes``), or None where it has no such form: its factory takes no ``num_classes``, or
    refuses a class count with a ConfigError (documented refusal: usable with unconditional models only)."""
    if "num_classes" not in registry.get(kind, name).context_params():
        return None
    try:
        return build()
    except ConfigError:
        return None


def _labels(batch: int) -> torch.Tensor:
    return torch.arange(batch) % NUM_CLASSES


def check_encoder(name: str, registry: Registry | None = None, **config: Any) -> None:
    """One feature map per stage with the advertised ``stage_shapes``; gradients; round trip; the same
    built class-conditional (``num_classes``) and run with labels, where the encoder has that form."""
    registry = registry or get_registry()
    what = f"encoder '{name}'"
    torch.manual_seed(0)
    enc, shape = _build_first(registry, "encoder", name, IMAGE_SHAPES, config)
    x = torch.randn(3, *shape)
    _check_encoder_module(enc, x, None, lambda: registry.create("encoder", name, in_shape=shape, **config), what)

    def build_conditional() -> nn.Module:
        return registry.create("encoder", name, in_shape=shape, num_classes=NUM_CLASSES, **config)

    cond = _conditional(registry, "encoder", name, build_conditional)
    if cond is not None:
        _check_encoder_module(cond, x, _labels(x.shape[0]), build_conditional, f"{what} (conditional)")


def _check_encoder_module(enc: nn.Module, x: torch.Tensor, labels: torch.Tensor | None,
                          rebuild: Callable[[], nn.Module], what: str) -> None:
    def run(m: nn.Module, x: torch.Tensor = x, labels: torch.Tensor | None = labels) -> list[torch.Tensor]:
        called = f"forward(x, {'y' if labels is not None else 'None'}) on x of shape {tuple(x.shape)}"
        return _call(what, called, m, x, labels)  # as the model calls it: labels or None

    enc.train()
    hs = run(enc)
    stages = [tuple(s) for s in cast(EncoderModule, enc).stage_shapes]
    if not stages:  # (the decoder starts from the top stage: there must be one)
        _fail(what, "stage_shapes is empty; an encoder gives at least one feature map (stage 0)")
    if not isinstance(hs, list | tuple) or not all(isinstance(h, torch.Tensor) for h in hs):
        _fail(what, f"forward must return a list of feature maps, one per stage, got {type(hs).__name__}")
    if len(hs) != len(stages):
        _fail(what, f"returned {len(hs)} feature maps for {len(stages)} stages")
    for i, (h, s) in enumerate(zip(hs, stages, strict=True)):
        if tuple(h.shape) != (x.shape[0], *s):
            _fail(what, f"stage {i} feature has shape {tuple(h.shape[1:])}, stage_shapes says {s}"
                  + (f" (batch {h.shape[0]} != {x.shape[0]})" if h.shape[0] != x.shape[0] else ""))
    _gradients(enc, torch.stack([h.pow(2).mean() for h in hs]).sum(), what)
    _roundtrip(enc, rebuild, lambda m: torch.cat([h.flatten() for h in run(m)]), what)
    _check_meta(what, rebuild, lambda m: run(m, cast(torch.Tensor, _on_meta(x)), _on_meta(labels)))


def check_decoder(name: str, registry: Registry | None = None, **config: Any) -> None:
    """Top-down stages map stage i to stage i-1 (stage 0 keeps its shape) and the head gives ``out_shape``;
    gradients; round trip; the same built class-conditional and run with labels, where it has that form."""
    registry = registry or get_registry()
    what = f"decoder '{name}'"
    torch.manual_seed(0)
    shape = IMAGE_SHAPES[0]
    stages = [cast(Shape, tuple(s)) for s in _reference_encoder(registry, name, shape).stage_shapes]

    def build(**context: Any) -> nn.Module:
        return registry.create("decoder", name, stage_shapes=stages, out_shape=shape, **context, **config)

    _check_decoder_module(build(), stages, shape, None, build, what)

    def build_conditional() -> nn.Module:
        return build(num_classes=NUM_CLASSES)

    cond = _conditional(registry, "decoder", name, build_conditional)
    if cond is not None:
        _check_decoder_module(cond, stages, shape, _labels(2), build_conditional, f"{what} (conditional)")


def _check_decoder_module(dec: nn.Module, stages: list[Shape], shape: Shape, labels: torch.Tensor | None,
                          rebuild: Callable[[], nn.Module], what: str) -> None:
    batch = 2
    y = "y" if labels is not None else "None"

    def run(m: nn.Module, labels: torch.Tensor | None = labels) -> torch.Tensor:
        # The model's top-down pass (avade.models.generative): every stage, 0 included, then the head.
        dm = cast(DecoderModule, m)
        d = _call(what, f"initial_state({batch})", dm.initial_state, batch)
        for i in reversed(range(len(stages))):
            if not isinstance(d, torch.Tensor) or tuple(d.shape) != (batch, *stages[i]):
                _fail(what, f"state entering stage {i} has shape {_shape(d)}, expected {(batch, *stages[i])}")
            d = _call(what, f"forward_stage({i}, d, {y}) on a state of shape {tuple(d.shape)}", dm.forward_stage,
                      i, d, labels)
        if not isinstance(d, torch.Tensor) or tuple(d.shape) != (batch, *stages[0]):
            _fail(what, f"forward_stage(0, d, {y}) returned {_shape(d)}; stage 0 keeps its shape "
                        f"{(batch, *stages[0])} (the head reads it)")
        return _call(what, f"head(d, {y}) on a state of shape {tuple(d.shape)}", dm.head, d, labels)

    dec.train()
    mean = run(dec)
    if not isinstance(mean, torch.Tensor) or tuple(mean.shape) != (batch, *shape):
        _fail(what, f"head output {_shape(mean)} != [batch, *out_shape] = {(batch, *shape)}")
    _gradients(dec, mean.pow(2).mean(), what)
    _roundtrip(dec, rebuild, lambda m: run(m).flatten(), what)
    _check_meta(what, rebuild, lambda m: run(m, _on_meta(labels)))


def check_posterior(name: str, registry: Registry | None = None, **config: Any) -> None:
    """Each latent stage returns (d_new, log_q, log_p) with d's shape, finite [B] densities, d_new differentiable
    in h (z drawn from q by reparameterisation); prior mode
    (``h = None``) the same shapes, log_q = 0, deterministic at temperature 0 and using the temperature;
    gradients; round trip; log_q and log_p the log densities of z under q and p, up to a constant common to
    both (:func:`_check_densities`: E_q[p/q] = 1); the same built class-conditional and run with labels (as
    the model runs it: ``forward_stage(i, d, h, T, y=y)``; a posterior whose ``forward_stage`` has no ``y``
    gets none), where it has that form."""
    registry = registry or get_registry()
    what = f"posterior '{name}'"
    torch.manual_seed(0)
    stages = [cast(Shape, tuple(s)) for s in _reference_encoder(registry, "conv", IMAGE_SHAPES[0]).stage_shapes]

    def build(**context: Any) -> nn.Module:
        return registry.create("posterior", name, stage_shapes=stages, **context, **config)

    _check_posterior_module(build(), stages, build, what)
    tiny = [cast(Shape, tuple(s)) for s in _reference_encoder(registry, "conv", DENSITY_IMAGE_SHAPE).stage_shapes]

    def build_at(layout: list[Shape], **context: Any) -> nn.Module:
        return registry.create("posterior", name, stage_shapes=layout, **context, **config)

    _check_densities(build_at, [tiny, stages], what)

    def build_conditional() -> nn.Module:
        return build(num_classes=NUM_CLASSES)

    cond = _conditional(registry, "posterior", name, build_conditional)
    if cond is not None:
        labels = _labels(3) if takes_labels(cast(PosteriorModule, cond).forward_stage) else None
        _check_posterior_module(cond, stages, build_conditional, f"{what} (conditional)", labels)
        _check_densities(lambda layout: build_at(layout, num_classes=NUM_CLASSES), [tiny, stages],
                         f"{what} (conditional)", labelled=labels is not None)


def _stage_outputs(what: str, called: str, out: Any, d: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``forward_stage``'s ``(d_new, log_q, log_p)``: d's shape, finite ``[B]`` densities."""
    if not (isinstance(out, tuple) and len(out) == 3 and all(isinstance(t, torch.Tensor) for t in out)):
        _fail(what, f"{called} must return a tuple (d_new, log_q, log_p), got {type(out).__name__}")
    d_new, log_q, log_p = out
    if tuple(d_new.shape) != tuple(d.shape):
        _fail(what, f"{called}: d_new has shape {tuple(d_new.shape)}, expected d's {tuple(d.shape)}")
    for label, t in (("log_q", log_q), ("log_p", log_p)):
        if tuple(t.shape) != (d.shape[0],) or not torch.isfinite(t).all():
            _fail(what, f"{called}: {label} must be finite with shape [batch] = ({d.shape[0]},), got "
                        f"{tuple(t.shape)}")
    if not torch.isfinite(d_new).all():
        _fail(what, f"{called}: d_new is not finite")
    return out


def _check_posterior_module(post: nn.Module, stages: list[Shape], rebuild: Callable[[], nn.Module],
                            what: str, labels: torch.Tensor | None = None) -> None:
    ids = list(cast(PosteriorModule, post).stage_ids)  # (the registry refused a posterior without them)
    if not ids or any(not 0 <= i < len(stages) for i in ids):
        _fail(what, f"stage_ids {ids} must be a non-empty subset of 0..{len(stages) - 1}")
    batch = 3
    ds = {i: torch.randn(batch, *stages[i]) for i in ids}
    hs = {i: torch.randn(batch, *stages[i]) for i in ids}

    def stage(m: nn.Module, i: int, h: torch.Tensor | None, t: float) -> tuple[torch.Tensor, ...]:
        called = f"forward_stage({i}, d, {'h' if h is not None else 'None'}, {t}{'' if labels is None else ', y=y'})"
        kwargs = {} if labels is None else {"y": labels}
        forward_stage = cast(PosteriorModule, m).forward_stage
        return _stage_outputs(what, called, _call(what, called, forward_stage, i, ds[i], h, t, **kwargs), ds[i])

    post.train()
    total = torch.zeros(())
    for i in ids:
        h = hs[i].clone().requires_grad_(True)
        d_new, log_q, log_p = stage(post, i, h, 1.0)
        _check_reparameterised(d_new, h, i, what)
        total = total + d_new.pow(2).mean() + (log_q - log_p).mean()
        _, prior_q, _ = stage(post, i, None, 1.0)
        if float(prior_q.abs().max()) != 0.0:
            _fail(what, f"stage {i}: sampling from the prior must return log_q = 0")
    _gradients(post, total, what)
    _check_prior_temperature(post, ids, stage, what)
    if isinstance(post, CodedPosterior):
        _check_codes(post, ids, ds, hs, stage, what, labels)

    def run(m: nn.Module) -> torch.Tensor:
        torch.manual_seed(1)
        return torch.cat([torch.cat([t.flatten() for t in stage(m, i, hs[i], 1.0)]) for i in ids])

    _roundtrip(post, rebuild, run, what)

    def run_meta(m: nn.Module) -> None:  # (not stage(): its finiteness checks read values)
        kwargs = {} if labels is None else {"y": _on_meta(labels)}
        for i in ids:
            for h in (_on_meta(hs[i]), None):  # the likelihood's pass, then sampling's
                called = f"forward_stage({i}, d, {'h' if h is not None else 'None'}, 1.0)"
                _call(what, called, cast(PosteriorModule, m).forward_stage, i, _on_meta(ds[i]), h, 1.0, **kwargs)

    _check_meta(what, rebuild, run_meta)


#: The density check (:func:`_check_densities`): draws of z ~ q per stage; the (d, h) scales tried in turn
#: until q is near enough to p to judge (the smallest first: a fresh q is nearest its prior there); the
#: effective sample size that judges; the tolerance (nats) on
#: log E_q[p/q]; the image shape whose reference-encoder stages (2x2 and 1x1) keep the latents few.
DENSITY_SAMPLES = 4096
DENSITY_INPUT_SCALES = (0.01, 0.1, 1.0)
DENSITY_MIN_ESS = 1024
DENSITY_TOLERANCE = 0.25
DENSITY_IMAGE_SHAPE: Shape = (3, 2, 2)
#: log E_q[p/q] above this fails whatever the effective sample size: for right densities the estimate
#: exceeds it with probability below e^-9 (Markov's inequality, as E_q[p/q] = 1)
DENSITY_MAX_LOG = 9.0


def _check_densities(build: Callable[[list[Shape]], nn.Module], layouts: Sequence[list[Shape]], what: str,
                     labelled: bool = False) -> None:
    """``log_q`` and ``log_p`` are the log densities of the sample z under q(z|h, d) and p(z|d), up to one
    constant common to both (it cancels in ``log_p - log_q``, all the model uses): for normalised densities
    ``E_{z~q}[p(z) / q(z)] = 1``. Estimated per latent stage as ``log mean exp(log_p - log_q)`` over
    :data:`DENSITY_SAMPLES` draws for one (d, h) repeated, in eval mode without gradients (the densities the
    importance-weighted bound uses), in float64 where the module runs in it, on a fresh build (where prior
    and posterior start near each other) with the fewest latents: the stages of the reference encoder on a
    2x2 image, or the kit's usual ones where the posterior does not run on those. Catches a constant off in
    one of the two (a forgotten ``-0.5 log(2 pi)`` per dimension, a stray ``+ 1``) and a mean over the latent
    dimensions instead of a sum. The estimate is judged (within :data:`DENSITY_TOLERANCE` nats) only when the
    effective sample size ``(sum w)^2 / sum w^2`` is at least :data:`DENSITY_MIN_ESS` (a quarter of the
    draws: the estimate's standard error is then about 0.03 nats), trying (d, h) of scales 0.01, 0.1, 1 in
    turn until it is; an estimate above :data:`DENSITY_MAX_LOG` fails
    whatever that size. A stage no scale lets judge passes with a warning. The global RNG is left as it
    was."""
    failure = ""
    for layout in layouts:  # the fewest latents first; float64, else float32
        for dtype in (torch.float64, torch.float32):
            try:  # a first call of 2 draws at every stage: a failure here may be the layout's or the dtype's
                module = build(layout).to(dtype).eval()
                _estimate_densities(module, layout, dtype, what, labelled, samples=2)
            except Exception as exc:  # (the last try's failure is reported)
                failure = str(exc) if isinstance(exc, AssertionError) else \
                    f"{what}: does not build: {raised_where(exc)}"
                continue
            _estimate_densities(module, layout, dtype, what, labelled)
            return
    raise AssertionError(failure)


def _estimate_densities(module: nn.Module, layout: list[Shape], dtype: torch.dtype, what: str, labelled: bool,
                        samples: int = DENSITY_SAMPLES) -> None:
    """Judge E_q[p/q] at each stage of ``module`` (see :func:`_check_densities`); fewer ``samples``: only call
    every stage once (AssertionError if a call fails)."""
    device = next(iter([*module.parameters(), *module.buffers()]), torch.zeros(())).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        for i in cast(PosteriorModule, module).stage_ids:
            if samples < DENSITY_SAMPLES:
                _density_draws(module, i, layout[i], 1.0, dtype, device, labelled, samples, what)
                continue
            for scale in DENSITY_INPUT_SCALES:
                log_w = _density_draws(module, i, layout[i], scale, dtype, device, labelled, samples, what)
                total = torch.logsumexp(log_w, 0)
                estimate = float(total) - math.log(len(log_w))
                ess = math.exp(float(2 * total - torch.logsumexp(2 * log_w, 0)))
                if estimate > DENSITY_MAX_LOG or (ess >= DENSITY_MIN_ESS and abs(estimate) > DENSITY_TOLERANCE):
                    ratio = f"{math.exp(estimate):.3g}" if abs(estimate) < 50 else f"e^{estimate:.0f}"
                    raise AssertionError(
                        f"{what}: stage {i}: E_q[p/q] = {ratio} (should be 1; exp(log_p - log_q) averaged over "
                        f"{len(log_w)} draws of z ~ q for one (d, h) of scale {scale}, effective sample size "
                        f"{ess:.0f}): log_q or log_p is off by a constant or not a sum over the latent dimensions")
                if ess >= DENSITY_MIN_ESS:
                    break
            else:
                warnings.warn(f"{what}: stage {i}: the check E_q[p/q] = 1 of log_q and log_p was inconclusive (q is "
                              f"far from p: effective sample size {ess:.0f} of {len(log_w)} at every (d, h) scale "
                              f"in {DENSITY_INPUT_SCALES})", stacklevel=2)


def _density_draws(module: nn.Module, i: int, shape: Shape, scale: float, dtype: torch.dtype, device: torch.device,
                   labelled: bool, n: int, what: str) -> torch.Tensor:
    """``log_p - log_q`` (float64) of ``n`` draws from q for one (d, h) of standard normal entries times
    ``scale`` (class 1 where ``labelled``), seeded, the inputs drawn on the CPU (alike on every device)."""
    g = torch.Generator().manual_seed(7 + i)
    d, h = (scale * torch.randn((2, 1, *shape), generator=g, dtype=dtype, device="cpu")).to(device)
    d, h = d.repeat(n, 1, 1, 1), h.repeat(n, 1, 1, 1)  # (copies: a posterior may write into d)
    kwargs = {"y": torch.ones(n, dtype=torch.long, device=device)} if labelled else {}
    called = f"forward_stage({i}, d, h, 1.0{', y=y' if labelled else ''}) in eval mode ({dtype})"
    torch.manual_seed(11 + i)
    out = _call(what, called, cast(PosteriorModule, module).forward_stage, i, d, h, 1.0, **kwargs)
    _, log_q, log_p = _stage_outputs(what, called, out, d)
    return (log_p - log_q).double()


def _check_reparameterised(d_new: torch.Tensor, h: torch.Tensor, i: int, what: str) -> None:
    """``d_new`` depends on the encoder's features ``h`` through z ~ q(z|h, ...), drawn by reparameterisation
    (``mu_q + sigma_q * eps``): a z drawn under ``no_grad``, ``.detach()``-ed or sampled by a non-differentiable
    draw (``torch.normal(mu, sigma)``) trains neither q's mean nor the encoder from the reconstruction term."""
    weights = torch.randn(d_new.shape, generator=torch.Generator().manual_seed(5), dtype=d_new.dtype,
                          device="cpu").to(d_new.device)  # (a plain sum could cancel by symmetry)
    (grad,) = (torch.autograd.grad((d_new * weights).sum(), h, retain_graph=True, allow_unused=True)
               if d_new.requires_grad else (None,))
    if grad is None or not torch.isfinite(grad).all() or float(grad.abs().sum()) == 0.0:
        _fail(what, f"stage {i}: d_new {'has no' if grad is None or torch.isfinite(grad).all() else 'a non-finite'} "
                    "gradient with respect to the encoder's features h; z ~ q(z|h) must be drawn by "
                    "reparameterisation, z = mu_q + sigma_q * eps (not detached, under no_grad or by torch.normal)")


def _check_codes(post: CodedPosterior, ids: list[int], ds: dict[int, torch.Tensor], hs: dict[int, torch.Tensor],
                 stage: Callable[[nn.Module, int, torch.Tensor | None, float], tuple[torch.Tensor, ...]], what: str,
                 labels: torch.Tensor | None) -> None:
    """A posterior with latent codes (``encode_stage``/``decode_stage``, what ``model.encode``/``decode`` call):
    ``encode_stage`` updates d as ``forward_stage`` does (d's shape, finite), deterministically unless
    ``sample``; ``decode_stage`` of its code gives that d back; code 0 is the prior's mode (``forward_stage``
    at temperature 0); a standard normal code decodes as the prior samples (:func:`_check_code_scale`). In eval
    mode, with the weights perturbed (by :func:`_check_prior_temperature`)."""
    module = cast(nn.Module, post)
    module.eval()
    with torch.no_grad():
        for i in ids:
            d, h = ds[i], hs[i]
            called = f"encode_stage({i}, d, h, y=y)"
            out = _call(what, called, post.encode_stage, i, d, h, y=labels)
            if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
                _fail(what, f"{called} must return a tuple (d_new, code), got {type(out).__name__}")
            d_new, code = out
            if tuple(d_new.shape) != tuple(d.shape) or not torch.isfinite(d_new).all():
                _fail(what, f"{called}: d_new must be finite with d's shape {tuple(d.shape)}, got {_shape(d_new)}")
            if code.dim() < 1 or code.shape[0] != d.shape[0] or not torch.isfinite(code).all():
                _fail(what, f"{called}: the code must be finite with one entry per image, got {_shape(code)}")
            again = _call(what, called, post.encode_stage, i, d, h, y=labels)[1]
            if not torch.equal(again, code):
                _fail(what, f"{called}: two encodings differ; without sample=True a code is deterministic")
            sampled = [_call(what, f"encode_stage({i}, d, h, y=y, sample=True)", post.encode_stage, i, d, h,
                             y=labels, sample=True)[1] for _ in range(2)]
            if torch.equal(*sampled):
                _fail(what, f"encode_stage({i}, d, h, sample=True): two draws are alike: does it sample z?")
            back = _call(what, f"decode_stage({i}, d, code, y=y)", post.decode_stage, i, d, code, y=labels)
            if not isinstance(back, torch.Tensor) or back.shape != d_new.shape \
                    or not torch.allclose(back, d_new, rtol=1e-4, atol=1e-4 * float(d_new.abs().max()) + 1e-5):
                _fail(what, f"decode_stage({i}, d, code) must give back encode_stage's d_new for its code "
                            f"(max difference {_difference(back, d_new)})")
            mode = _call(what, f"decode_stage({i}, d, 0, y=y)", post.decode_stage, i, d, torch.zeros_like(code),
                         y=labels)
            expected = stage(module, i, None, 0.0)[0]
            if not torch.allclose(mode, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()) + 1e-5):
                _fail(what, f"decode_stage({i}, d, zeros) must be the prior's mode, forward_stage({i}, d, None, 0) "
                            f"(max difference {_difference(mode, expected)}): a code is z in the prior's standard "
                            "coordinates")
            _check_code_scale(post, i, d, code, stage, what, labels)


def _check_code_scale(post: CodedPosterior, i: int, d: torch.Tensor, code: torch.Tensor,
                      stage: Callable[[nn.Module, int, torch.Tensor | None, float], tuple[torch.Tensor, ...]],
                      what: str, labels: torch.Tensor | None) -> None:
    """Codes are standard normal under the prior: the scale, not only the offset (code 0 = the mode).

    Exactly where the posterior draws its prior noise as avade's do (one standard normal of the code's shape
    from the global RNG, ``z = mu_p + T sigma_p eps``): the code ``eps`` decodes to the prior sample of that
    noise, ``forward_stage(i, d, None, 1)`` after the same seed. A decoding near that sample but not on it
    (within half its spread around the mode) is the same noise at another scale: a code that leaves out
    ``sigma_p``. Any other decoding means the posterior draws its noise otherwise; then the spread of many
    decodings of standard normal codes must match that of as many prior samples."""
    module = cast(nn.Module, post)
    called = f"decode_stage({i}, d, eps, y=y)"
    torch.manual_seed(3)
    sample = stage(module, i, None, 1.0)[0]
    torch.manual_seed(3)
    eps = torch.randn(code.shape, dtype=code.dtype, device=code.device)
    decoded = _call(what, called, post.decode_stage, i, d, eps, y=labels)
    if not isinstance(decoded, torch.Tensor) or decoded.shape != sample.shape:
        _fail(what, f"{called} must return d's shape {tuple(d.shape)}, got {_shape(decoded)}")
    if torch.allclose(decoded, sample, rtol=1e-4, atol=1e-4 * float(sample.abs().max()) + 1e-5):
        return
    mode = stage(module, i, None, 0.0)[0]
    spread = float((sample - mode).norm())
    off = float((decoded - sample).norm()) / max(spread, 1e-30)
    if off < 0.5:
        _fail(what, f"{called}, eps the standard normal noise of the prior sample forward_stage({i}, d, None, 1), "
                    f"must be that sample, but differs by {off:.3g} of its spread around the mode: a code is scaled "
                    "by the prior's std, code = (z - mu_p) / sigma_p, standard normal under the prior")
    # Another way of drawing the noise: compare the spread of many draws around the mode instead.
    reps = 256
    torch.manual_seed(4)
    d_rep = d.repeat(reps, *([1] * (d.dim() - 1)))
    y_rep = None if labels is None else labels.repeat(reps)
    eps_rep = torch.randn((reps * code.shape[0], *code.shape[1:]), dtype=code.dtype, device=code.device)
    decoded_var = (_call(what, called, post.decode_stage, i, d_rep, eps_rep, y=y_rep)
                   - d_rep).view(reps, *d.shape).var(0).sum()
    forward_stage = cast(PosteriorModule, post).forward_stage
    out = _call(what, f"forward_stage({i}, d, None, 1.0)", forward_stage, i, d_rep, None, 1.0,
                **({} if labels is None else {"y": y_rep}))
    sample_var = (out[0] - d_rep).view(reps, *d.shape).var(0).sum()
    ratio = math.sqrt(float(decoded_var) / max(float(sample_var), 1e-30))
    if not 0.8 <= ratio <= 1.25:  # NaN fails too
        _fail(what, f"decodings of standard normal codes spread {ratio:.3g} times as far as prior samples "
                    f"({called} vs forward_stage({i}, d, None, 1), {reps} draws each): a code is "
                    "scaled by the prior's std, code = (z - mu_p) / sigma_p, standard normal under the prior")


def _difference(a: Any, b: torch.Tensor) -> str:
    return f"{float((a - b).abs().max()):.3g}" if isinstance(a, torch.Tensor) and a.shape == b.shape else _shape(a)


def _check_prior_temperature(post: nn.Module, ids: list[int],
                             stage: Callable[[nn.Module, int, torch.Tensor | None, float], tuple[torch.Tensor, ...]],
                             what: str) -> None:
    """Sampling (``h = None``, as ``generate`` runs it) draws from the prior at temperature ``T``: at 0 the
    draw is deterministic, at 1 random, and ``T`` changes it. Zero-initialised layers (a prior that starts
    at N(0, I), a zero merge) could hide a sample from ``d_new``: the weights are perturbed first. In eval
    mode, as samples are drawn for evaluation (dropout would make even the mode random in training)."""
    _perturb(post, seed=2)
    post.eval()
    with torch.no_grad():
        for i in ids:
            draws = {}
            for t, seed in ((0.0, 1), (0.0, 2), (1.0, 1), (1.0, 2), (0.5, 1)):
                torch.manual_seed(seed)
                draws[t, seed] = stage(post, i, None, t)[0]
            if not torch.equal(draws[0.0, 1], draws[0.0, 2]):
                _fail(what, f"stage {i}: a prior sample at temperature 0 must be deterministic (the prior's mode), "
                            "but two draws differ")
            if torch.equal(draws[1.0, 1], draws[1.0, 2]):
                _fail(what, f"stage {i}: prior samples at temperature 1 are all alike: does it sample z?")
            if torch.equal(draws[1.0, 1], draws[0.5, 1]):
                _fail(what, f"stage {i}: prior samples ignore the temperature T (the same noise gives the same d "
                            "at T = 1 and T = 0.5)")


# -- discriminators and norms ------------------------------------------------------------------------


def check_discriminator(name: str, registry: Registry | None = None, **config: Any) -> None:
    """Scores of shape [B] at 32 and 64, finite input gradients, a conditional variant, round trip."""
    registry = registry or get_registry()
    what = f"discriminator '{name}'"
    for res in (32, 64):
        torch.manual_seed(0)
        shape = (3, res, res)
        disc = registry.create("discriminator", name, in_shape=shape, **config)
        x = torch.rand(4, *shape).mul(2).sub(1).requires_grad_(True)
        out = _call(what, f"forward(x) on x of shape {tuple(x.shape)}", disc, x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (4,):
            _fail(what, f"at {res}x{res} output has shape {_shape(out)}, expected [batch] = (4,)")
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        if not torch.isfinite(grad).all() or float(grad.detach().abs().sum()) == 0.0:
            _fail(what, f"at {res}x{res} the gradient w.r.t. the input is zero or not finite")
        _gradients(disc, disc(x.detach()).mean() + grad.pow(2).mean(), what)
        _check_per_sample_scores(disc, x.detach(), what)
    _check_meta(what, lambda: registry.create("discriminator", name, in_shape=shape, **config),
                lambda m: _call(what, f"forward(x) on x of shape {tuple(x.shape)}", m, _on_meta(x.detach())))

    def build_conditional() -> nn.Module:
        return registry.create("discriminator", name, in_shape=(3, 32, 32), num_classes=10, **config)

    # no class-conditional form: a factory without num_classes, or one refusing a class count (ConfigError)
    cond = _conditional(registry, "discriminator", name, build_conditional)
    if cond is None:
        return
    x = torch.rand(4, 3, 32, 32)
    out = _call(what, f"forward(x, y) of the class-conditional variant on x of shape {tuple(x.shape)}", cond, x,
                torch.tensor([0, 1, 2, 3]))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (4,):
        _fail(what, "the class-conditional variant must return [batch] scores for (x, y)")
    _perturb(cond, seed=1)  # zero-initialised class embeddings would make every label score alike
    with torch.no_grad():
        if torch.allclose(cond(x, torch.tensor([0, 1, 2, 3])), cond(x, torch.tensor([4, 5, 6, 7]))):
            _fail(what, "the class-conditional variant gives the same scores whatever the labels y: it ignores them")
    _roundtrip(cond, build_conditional, lambda m: m(x, torch.tensor([0, 1, 2, 3])), what)
    _check_meta(f"{what} (conditional)", build_conditional,
                lambda m: _call(f"{what} (conditional)", f"forward(x, y) on x of shape {tuple(x.shape)}", m,
                                _on_meta(x), _on_meta(torch.tensor([0, 1, 2, 3]))))


def _check_per_sample_scores(disc: nn.Module, x: torch.Tensor, what: str) -> None:
    """In training mode too, each sample's score is its own: the gradient penalty differentiates each score
    with respect to its own input only (a batch-norm critic, say, mixes the batch). Checked within one
    forward pass, by the gradient of each score with respect to the other samples (dropout's masks or
    spectral norm's power iteration do not disturb it). A critic that means to look at the batch
    (minibatch statistics) declares ``batch_dependent = True``."""
    if getattr(disc, "batch_dependent", False):
        return
    disc.train()
    x = x.detach().clone().requires_grad_(True)
    scores = disc(x)
    for i in range(x.shape[0]):
        (grad,) = torch.autograd.grad(scores[i], x, retain_graph=True)
        others = torch.cat([grad[:i], grad[i + 1:]]).abs().max()
        if float(others) > 1e-6 * max(1.0, float(grad[i].abs().max())):
            _fail(what, f"in training mode the score of sample {i} depends on the other samples of the batch (its "
                        f"gradient reaches them: {float(others):.2e}; batch norm?); the gradient penalty needs "
                        "per-sample scores (set `batch_dependent = True` on the module if that is intended)")


def check_norm(name: str, registry: Registry | None = None, **config: Any) -> None:
    """Wrapped conv keeps its output shape with and without labels; gradients reach the layer; round trip."""
    registry = registry or get_registry()
    what = f"norm '{name}'"
    torch.manual_seed(0)

    def build() -> nn.Module:
        return registry.create("norm", name, layer=nn.Conv2d(3, 5, 3, padding=1), num_classes=4, **config)

    layer = build()
    x = torch.randn(6, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])

    def run(m: nn.Module, y: torch.Tensor | None, x: torch.Tensor = x) -> torch.Tensor:
        try:
            out = m(x, y)
        except TypeError as exc:  # e.g. forward(self, x) without the labels argument
            message = (f"forward(x, y) failed ({exc}); a norm's forward takes (x, y=None), y the class labels "
                       "(ignore them if the norm is not conditional)")
        except Exception as exc:
            message = (f"forward(x, {'y' if y is not None else 'None'}) on x of shape {tuple(x.shape)} raised "
                       f"{raised_where(exc)}")
        else:
            message = ""
        if message:
            _fail(what, message)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (6, 5, 8, 8):
            _fail(what, f"output shape {_shape(out)} != (6, 5, 8, 8)")
        return out

    layer.train()
    for y in (None, labels):
        run(layer, y)
    _gradients(layer, run(layer, None).pow(2).mean() + run(layer, labels).pow(2).mean(), what)
    # Every module is saved with safetensors (checkpoints): a norm's state (gains, class embeddings, running
    # statistics, its data-init flag) must live in the state dict.
    _roundtrip(layer, build, lambda m: torch.cat([run(m, None).flatten(), run(m, labels).flatten()]), what)
    x_meta = cast(torch.Tensor, _on_meta(x))
    _check_meta(what, build, lambda m: [run(m, y, x_meta) for y in (None, _on_meta(labels))])


# -- data and metrics --------------------------------------------------------------------------------


def check_dataset(name: str, registry: Registry | None = None, **config: Any) -> None:
    """Builds from defaults (or refuses with a one-line DataError when its files are absent); both splits
    serve uint8 (C, H, W) images of the advertised ``shape`` and labels in range (first, middle and last
    item; all of ``as_tensors()`` when offered): :func:`avade.data.validate.dataset_problem`, which every
    run applies too."""
    from avade.data.validate import dataset_problem

    registry = registry or get_registry()
    what = f"dataset '{name}'"
    for split in ("test", "train"):
        try:
            ds = registry.create("dataset", name, split=split, **config)
        except DataError as exc:
            if "\n" in str(exc) or not str(exc):
                _fail(what, "a missing dataset must be reported in one non-empty line")
            # (a pass that checked nothing it serves must not look like one that did)
            given = f" with {config}" if config else ""
            # (the test split served and checked, the train split's files absent: not "only its refusal")
            checked, files = (("only its refusal was checked", "its files") if split == "test" else
                              ("only its test split was checked", f"its {split} split's files"))
            warnings.warn(f"{what}: {checked}{given}: {files} are absent ({exc}); give it a tiny "
                          f"copy to check what it serves: check_component('dataset', {name!r}, root=...) or "
                          f"check_distribution(dist, configs={{('dataset', {name!r}): {{'root': ...}}}})", stacklevel=2)
            return
        except OSError as exc:
            _fail(what, f"raises {type(exc).__name__}: {exc}; report missing or unreadable files as "
                        "avade.errors.DataError, in one line that says how to get them")
        problem = dataset_problem(ds, split)
        if problem:
            _fail(what, f"{split} split: {problem}")


def check_metric(name: str, registry: Registry | None = None, **config: Any) -> None:
    """Builds from its config, exposes ``name`` and ``compute(ctx)``, and computes on a small offline
    context (:class:`avade.testing.context.SyntheticEvalContext`, conditional when the metric
    ``needs_conditional``; random features stand in for Inception): a dict of result names to finite
    numbers, none of them a key of the run's own record (as every run requires)."""
    from avade.evaluate import metric_values
    from avade.testing.context import SyntheticEvalContext

    registry = registry or get_registry()
    what = f"metric '{name}'"
    metric = registry.create("metric", name, **config)
    if not callable(getattr(metric, "compute", None)) or not isinstance(getattr(metric, "name", None), str):
        _fail(what, "needs a `name` string and a `compute(ctx)` method")
    ctx = SyntheticEvalContext(num_classes=10 if getattr(metric, "needs_conditional", False) else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "computed with the test-only feature extractor"
        try:
            result = metric.compute(ctx)
        except Exception as exc:
            failure = (f"compute(ctx) raised {type(exc).__name__}: {exc} on the kit's synthetic context "
                       "(avade.testing.context.SyntheticEvalContext)")
        else:
            failure = ""
    if failure:  # failed outside the except, as _call does: no "during handling of..." chain in the report
        _fail(what, failure)
    try:  # the rule every run applies: named numbers, named after the metric
        values = metric_values(name, result, what)
    except AvadeError as exc:
        failure = str(exc).removeprefix(f"{what} ")
    if failure:
        _fail(what, failure)
    for key, value in values.items():
        if not math.isfinite(value):
            _fail(what, f"result {key!r} is {value} on the kit's synthetic context")


CHECKS: dict[str, Callable[..., None]] = {
    "flow": check_flow,
    "encoder": check_encoder,
    "decoder": check_decoder,
    "posterior": check_posterior,
    "discriminator": check_discriminator,
    "norm": check_norm,
    "dataset": check_dataset,
    "metric": check_metric,
}

#: Components whose default config is too large for a quick check; conformance uses these instead.
SMALL_CONFIGS: dict[tuple[str, str], dict[str, Any]] = {
    ("flow", "realnvp"): {"hidden": 8, "blocks": 1},
    ("flow", "glow"): {"hidden": 8, "steps": 2, "scales": 2},
    ("flow", "affine-coupling"): {"hidden": 8, "blocks": 1},
    ("flow", "nice"): {"hidden": 8},
    ("encoder", "resnet"): {"channels": [8, 16], "stem": 4},
    ("encoder", "conv"): {"channels": [8, 16]},
    ("posterior", "iaf"): {"latent_channels": 4, "iaf_hidden": 8},
    ("posterior", "topdown"): {"latent_channels": 4, "iaf_hidden": 8, "iaf_steps": 1},
    ("posterior", "diagonal"): {"latent_channels": 4},
    ("discriminator", "dcgan"): {"channels": [8, 16, 32]},
    ("discriminator", "resnet"): {"stem": 4, "channels": [8, 16, 16, 16]},
    ("discriminator", "sngan"): {"channels": [8, 8, 8, 8]},
    ("metric", "fid"): {"samples": 64},
    ("metric", "kid"): {"samples": 64, "subsets": 4, "subset_size": 32},
    ("metric", "is"): {"samples": 64, "splits": 2},
    ("metric", "prd"): {"samples": 64, "num_clusters": 5, "num_runs": 2, "num_angles": 101, "plot": False},
    ("metric", "gan-test"): {"epochs": 1, "width": 8},
    ("metric", "gan-train"): {"epochs": 1, "width": 8},
}


def check_component(kind: str, name: str, registry: Registry | None = None, **config: Any) -> None:
    """Run the checks for ``kind`` on (kind, name); with no config, a small known config or the defaults."""
    if kind not in CHECKS:
        raise AssertionError(f"no conformance checks for kind '{kind}'; kinds: {', '.join(CHECKS)}")
    registry = registry or get_registry()
    try:
        registry.get(kind, name)
    except AvadeError as exc:  # a test's typo, or a plugin that did not load: a failed check, said as such
        raise AssertionError(str(exc)) from None
    if not config:
        config = SMALL_CONFIGS.get((kind, name), {})
    _run_checks(kind, name, registry, config)


def _run_checks(kind: str, name: str, registry: Registry, config: dict[str, Any]) -> None:
    """``CHECKS[kind]``; a component that does not build (an AvadeError from the registry: a bad config value,
    a factory that raised) is a failed check too, an AssertionError as every other verdict."""
    try:
        CHECKS[kind](name, registry=registry, **config)
    except AvadeError as exc:
        message = str(exc)
    else:
        return
    what = f"{kind} '{name}'"
    if message.startswith(what):  # the registry named it already ("... failed to build: ValueError: ...")
        raise AssertionError(message)
    _fail(what, f"does not build: {message}")


def check_module(kind: str, factory: Callable[..., Any], config: Any = None, name: str | None = None) -> None:
    """Check an unregistered factory (e.g. while developing) by registering it in a scratch registry, as
    ``name`` (default: a metric class's own ``name``, else ``"candidate"``); ``config`` is an instance of its
    attrs config class."""
    if kind not in CHECKS:
        raise AssertionError(f"no conformance checks for kind '{kind}'; kinds: {', '.join(CHECKS)}")
    if config is not None and not attrs.has(type(config)):
        raise AssertionError(f"{kind} config must be an instance of an attrs class (@attrs.define), got "
                             f"{type(config).__name__}")
    if name is None:  # a metric's results are named after it: checked as another name, a right one fails
        own = getattr(factory, "name", None) if kind == "metric" else None
        name = own if isinstance(own, str) and is_valid_name(own) else "candidate"
    registry = Registry()
    registry.register(kind, name, factory=factory, config=type(config) if config is not None else None)
    # Re-use the norms etc. of the real registry for anything the candidate builds internally.
    for info in get_registry().list():
        if (info.kind, info.name) != (kind, name):
            registry._items[(info.kind, info.name)] = info
    from avade.schema import unstructure

    # None values kept: an Optional field set to None is checked as None, not as its default
    _run_checks(kind, name, registry, unstructure(config, drop_none=False) if config is not None else {})


def check_distribution(dist: str, registry: Registry | None = None,
                       configs: dict[tuple[str, str], dict[str, Any]] | None = None) -> list[str]:
    """Run :func:`check_component` on every component the distribution ``dist`` registers; ``configs``
    maps ``(kind, name)`` to a small config for components whose defaults are too large for a quick check."""
    from avade.registry import normalized_name  # distribution names compare as PEP 503 says: Avade_X = avade-x

    registry = registry or get_registry()

    def ours(info: ComponentInfo) -> bool:
        return normalized_name(info.dist) == normalized_name(dist) and info.kind in CHECKS

    shadowed = [i for i in registry.skipped if ours(i)]
    if shadowed:  # never checked nor usable: passing would hide it
        raise AssertionError("; ".join(f"{i.qualname} is not registered: the name belongs to avade's built-in "
                                       f"{i.kind}" for i in shadowed) + "; register it under another name")
    items = [i for i in registry.list() if ours(i)]
    # a name another plugin registers too: check_component says it cannot be used (its first provider is listed)
    items += [i for infos in registry.conflicts.values() for i in infos[1:]
              if ours(i) and all((j.kind, j.name) != (i.kind, i.name) for j in items)]
    items.sort(key=lambda i: (i.kind, i.name))
    if not items:
        failures = [f.reason for f in registry.failures if normalized_name(f.dist) == normalized_name(dist)]
        loaded = sorted({p.dist for p in registry.plugins})
        if not failures and normalized_name(dist) not in {normalized_name(d) for d in loaded}:
            # not installed (or no `avade` entry point): saying it "registers nothing" sent authors to their hook
            raise AssertionError(f"no installed distribution '{dist}' has an `avade` entry point (plugins loaded: "
                                 f"{', '.join(loaded) or 'none'}); install it (`pip install -e .` in its folder) "
                                 "or, before installing, check a component with check_module(kind, Factory, "
                                 "Config())")
        raise AssertionError(f"distribution '{dist}' registers no checkable component"
                             + (f" (it failed to load: {failures[0]})" if failures else ""))
    unknown = sorted(set(configs or {}) - {(i.kind, i.name) for i in items})
    if unknown:  # a typo would silently check the defaults instead
        raise AssertionError(f"configs names {', '.join(f'{k}/{n}' for k, n in unknown)}, which '{dist}' does not "
                             f"register; it registers {', '.join(f'{i.kind}/{i.name}' for i in items)}")
    for info in items:
        check_component(info.kind, info.name, registry, **(configs or {}).get((info.kind, info.name), {}))
    return [f"{i.kind}/{i.name}" for i in items]


def component_ids(kind: str | None = None) -> list[tuple[str, str]]:
    """(kind, name) of every registered checkable component, for ``pytest.mark.parametrize``."""
    return [(i.kind, i.name) for i in get_registry().list(kind=kind) if i.kind in CHECKS]
