"""Benchmark 1: avade's Glow and Real-NVP against PyPI ``normflows`` at equal configuration.

Both sides get the same input (dequantized, logit-preprocessed synthetic images), the same batch and
the same work per iteration: zero the gradients, ``loss = -mean log p(x)`` under a standard normal
(avade) or the model's own base distributions (normflows), ``loss.backward()``. No optimizer step.

Each side is timed in fresh processes of its own with fixed glibc malloc settings
(:func:`isolated_timings`; why: benchmarks/README.md, Methods). Before timing, the two are checked
to be the same function class: trainable parameter counts within
``PARAM_TOLERANCE`` and initial log-likelihoods (after ActNorm's data-dependent init on the same
batch) within a factor ``LL_FACTOR``.

Equivalences:

- **Glow**: normflows' ``MultiscaleFlow`` of ``GlowBlock``s built as in its Glow example (levels,
  steps per level, hidden width, LU 1x1 convs, channel split, sigmoid scale). avade factors out
  through a learned conditional prior (a zero-init conv); normflows through per-level diagonal
  Gaussians -- a few thousand parameters either way.
- **Real-NVP**: ``layers`` checkerboard ``AffineCouplingBlock``s (alternating parity, ``exp`` scale)
  whose s/t network is a ``ConvResidualNet`` with ``blocks`` residual blocks of ``hidden`` channels and
  batch norm, like avade's ResNet s/t network. Note: normflows' checkerboard split *packs* the
  conditioning pixels into a ``[B, C, H, W/2]`` tensor, so its s/t networks run on half the pixels;
  avade's runs on the masked full-resolution input (about twice the conv FLOPs). The table therefore
  also reports FLOPs per image and achieved FLOP/s for both sides.

A case with ``compile`` set (``glow compiled``) times avade's flow compiled in place with
``nn.Module.compile(backend=...)`` after one eager step (the data-dependent init) -- as
``train.compile = true`` compiles the flow after the trainer's eager initialisation pass. Its baseline
is normflows at its fastest: normflows is timed both eager and compiled the same way, and the faster
of the two is the denominator (both are in the JSON; if normflows cannot be compiled, eager it is and
the error is recorded). ``--quick`` traces compiled cases with ``aot_eager`` (no C++ compilation).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from rich.markup import escape
from torch import nn

from benchmarks.common import (
    ROOT,
    TUNED_MALLOC_ENV,
    WARM_CALLS,
    Settings,
    Timing,
    best_speedup,
    characterize,
    make_settings,
    measure,
    ops_table,
    paired_speedup,
    peak_memory,
    table,
    top_ops,
)

PARAM_TOLERANCE = 0.05  # relative difference of trainable parameter counts
LL_FACTOR = 3.0  # "same order": initial bits/dim within this factor
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class FlowCase:
    """One flow configuration, built identically (as far as the libraries allow) on both sides.

    ``levels``: Glow levels / Real-NVP scales; ``steps``: Glow steps per level / Real-NVP checkerboard
    couplings; ``blocks``: residual blocks of Real-NVP's s/t network; ``norm``: avade's normalization
    of the s/t convolutions (normflows has none).
    """

    name: str
    kind: str  # "glow" | "realnvp"
    levels: int
    steps: int
    hidden: int
    blocks: int = 2
    norm: str = "none"
    checkerboard: str = "masked"  # avade's Real-NVP: "masked" (reference) or "packed" (normflows-like work)
    channels: int = 3
    size: int = 32
    batch: int = 64
    compile: str = ""  # torch.compile backend for avade's flow ("" = eager); see the module docstring
    # avade's coupling networks: "fp32", or "bf16" as `train.bf16_coupling_nets` trains them (the rest of the
    # flow fp32: exact log-determinants); normflows stays fp32, so that case is not the target's equal configuration
    nets: str = "fp32"


def default_cases(quick: bool) -> list[FlowCase]:
    """Glow as normflows builds it, and Real-NVP shaped as av_ade_wg_rd's f (with avade's ``resnet`` s/t
    network, normflows' ``ConvResidualNet`` counterpart), with and without weight norm."""
    cases = [
        FlowCase("glow", "glow", levels=3, steps=8, hidden=128),
        # As trained with `train.compile = true`, against normflows' faster mode (eager or compiled).
        FlowCase("glow compiled", "glow", levels=3, steps=8, hidden=128, compile="inductor"),
        # Informational: how fast avade trains this Glow with train.bf16_coupling_nets (not judged by the target).
        FlowCase("glow bf16 nets", "glow", levels=3, steps=8, hidden=128, nets="bf16"),
        FlowCase("realnvp", "realnvp", levels=1, steps=3, hidden=64, blocks=2, norm="weight-norm"),
        FlowCase("realnvp norm=none", "realnvp", levels=1, steps=3, hidden=64, blocks=2, norm="none"),
        # The same split with each checkerboard half packed to H x W/2: the work normflows does.
        FlowCase("realnvp packed", "realnvp", levels=1, steps=3, hidden=64, blocks=2, norm="weight-norm",
                 checkerboard="packed"),
    ]
    if quick:  # a smoke test of every code path: compiled cases trace (aot_eager) but generate no C++
        cases = [replace(c, size=16, batch=8, hidden=min(c.hidden, 32), steps=min(c.steps, 4),
                         levels=min(c.levels, 2), compile=c.compile and "aot_eager") for c in cases]
    return cases


CASE_NAMES = tuple(c.name for c in default_cases(quick=False))  # what `--cases` accepts


# -- builders -------------------------------------------------------------------------------------


def build_avade(case: FlowCase) -> nn.Module:
    """The avade flow of ``case`` through the public registry."""
    import avade

    shape = (case.channels, case.size, case.size)
    if case.kind == "glow":
        # normflows' GlowBlock has neither actnorm in its networks nor Glow's logscale factor or edge
        # channel (avade's defaults, as openai/glow): all off here, for equal configuration.
        return avade.create("flow", "glow", in_shape=shape, scales=case.levels, steps=case.steps,
                            hidden=case.hidden, lu=True, norm=case.norm, logscale_factor=0.0, edge_bias=False)
    return avade.create("flow", "realnvp", in_shape=shape, scales=case.levels, layers=case.steps,
                        blocks=case.blocks, hidden=case.hidden, norm=case.norm, batch_norm=True,
                        checkerboard=case.checkerboard)


def build_normflows(case: FlowCase) -> nn.Module:
    """normflows' equivalent of ``case`` (a ``MultiscaleFlow``; see the module docstring)."""
    import normflows as nf

    c, s = case.channels, case.size
    if case.kind == "glow":
        levels = case.levels
        q0, merges, flows = [], [], []
        for i in range(levels):  # level 0 is the coarsest, as in normflows' Glow example
            level = [nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), case.hidden, split_mode="channel", scale=True)
                     for _ in range(case.steps)]
            flows.append([*level, nf.flows.Squeeze()])
            if i > 0:
                merges.append(nf.flows.Merge())
                shape = (c * 2 ** (levels - i), s // 2 ** (levels - i), s // 2 ** (levels - i))
            else:
                shape = (c * 2 ** (levels + 1), s // 2**levels, s // 2**levels)
            q0.append(nf.distributions.DiagGaussian(shape))
        return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    if case.levels != 1:
        raise ValueError("the normflows Real-NVP baseline is single-scale (levels=1), like av_ade_wg_rd's f")
    couplings = []
    for i in range(case.steps):
        net = nf.nets.ConvResidualNet(c, 2 * c, case.hidden, num_blocks=case.blocks, use_batch_norm=True)
        mode = "checkerboard_inv" if i % 2 else "checkerboard"
        couplings.append(nf.flows.AffineCouplingBlock(net, scale=True, scale_map="exp", split_mode=mode))
    return nf.MultiscaleFlow([nf.distributions.DiagGaussian((c, s, s))], [couplings], [], class_cond=False)


def avade_log_prob(flow: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log p(x) per sample (nats) of an avade flow under a standard normal on its output."""
    y, logdet = flow(x)
    return -0.5 * (y.float().pow(2) + LOG_2PI).flatten(1).sum(1) + logdet.float()


def normflows_log_prob(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.log_prob(x, None)


def flow_input(case: FlowCase, device: torch.device) -> torch.Tensor:
    """Synthetic 8-bit images, dequantized and logit-preprocessed as AV-ADE feeds its flow."""
    from avade.data.synthetic import SyntheticConfig, generate
    from avade.models.preprocess import Preprocess

    cfg = SyntheticConfig(size=case.batch, resolution=case.size, channels=case.channels)  # type: ignore[arg-type]
    images, _ = generate(cfg, "train")
    gen = torch.Generator().manual_seed(0)
    pre = Preprocess(0.05)
    y, _ = pre(pre.dequantize(images, gen))
    return y.to(device)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# -- one case -------------------------------------------------------------------------------------


def _step(model: nn.Module, log_prob: Callable[[nn.Module, torch.Tensor], torch.Tensor], x: torch.Tensor,
          settings: Settings, bf16_nets: bool = False) -> Callable[[], None]:
    """One timed call: zero the gradients, ``-mean log p(x)``, backward; ``bf16_nets``: the flow as the trainer
    runs it with ``train.bf16_coupling_nets`` (bf16 autocast, off around the flow but for its coupling networks)."""
    from avade.nn.precision import Contexts, CouplingNetsInBF16

    def mixed() -> contextlib.AbstractContextManager[Any]:
        device = x.device.type
        return Contexts(torch.autocast(device, dtype=torch.bfloat16), CouplingNetsInBF16(),
                        torch.autocast(device, enabled=False))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with settings.autocast(), mixed() if bf16_nets else contextlib.nullcontext():
            loss = -log_prob(model, x).mean()
        loss.backward()

    return step


def _bf16_nets(side: str, case: FlowCase) -> bool:
    return case.nets == "bf16" and side.removesuffix(COMPILED) == "avade"


def _bpd(model: nn.Module, log_prob: Callable[[nn.Module, torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(-log_prob(model, x).double().mean() / (x[0].numel() * math.log(2.0)))


SIDES = {"avade": (build_avade, avade_log_prob), "normflows": (build_normflows, normflows_log_prob)}
COMPILED = " compiled"  # suffix of a timed side whose model is compiled, e.g. "avade compiled"
# Sides whose failure does not fail the case: compiling normflows is only tried to find its fastest mode.
OPTIONAL_SIDES = frozenset({"normflows" + COMPILED})
ROUNDS = 3  # fresh processes per side (1 with --quick)


def timed_sides(case: FlowCase, baseline: bool) -> list[str]:
    """The sides timed for ``case``: the two libraries eager, or (``case.compile``) avade compiled
    against normflows both eager and compiled."""
    if not case.compile:
        return ["avade", "normflows"] if baseline else ["avade"]
    return ["avade" + COMPILED, "normflows", "normflows" + COMPILED] if baseline else ["avade" + COMPILED]


def prepare_side(side: str, case: FlowCase, settings: Settings) -> Callable[[], None]:
    """The timed step of ``side`` ("avade", "normflows compiled", ...): a freshly built model on the
    benchmark input, after one eager step (ActNorm's data-dependent init, as :func:`run_case` does
    before its own timings: never part of a timed call, whatever --warmup says). A compiled side then
    compiles in place with ``case.compile`` as the backend."""
    compiled = side.endswith(COMPILED)
    build, log_prob = SIDES[side.removesuffix(COMPILED)]
    model = build(case).to(settings.device).train()
    step = _step(model, log_prob, flow_input(case, settings.device), settings, _bf16_nets(side, case))
    step()
    if compiled:
        model.compile(backend=case.compile)
        step()  # compiles forward and backward: never part of a timed call, whatever --warmup says
    return step


def _worker(spec: dict[str, Any]) -> None:
    """One side of one case in this (fresh) process: warm up, time, print the times (and, for a
    compiled side, its peak memory) as JSON."""
    settings = make_settings(spec["device"], precision=spec["precision"], warmup=spec["warmup"],
                             repeats=spec["repeats"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    case = FlowCase(**spec["case"])
    report: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.lu is deprecated")
        step = prepare_side(spec["side"], case, settings)
        report["times_s"] = measure({"side": step}, settings)["side"].times
        if spec["side"].endswith(COMPILED):
            report["memory"] = {**peak_memory(step, settings.device), "measured_in": "timing worker"}
    print(json.dumps(report))


def worker_env(malloc: str) -> dict[str, str]:
    """The environment of a timing worker: this one with the tuned glibc malloc settings (``tuned``), or
    without any of them (``system``: glibc's adaptive defaults, even when the caller exported them, as
    benchmarks/README.md suggests for flow-heavy work)."""
    env = {k: v for k, v in os.environ.items() if k not in TUNED_MALLOC_ENV}
    return {**env, **TUNED_MALLOC_ENV} if malloc == "tuned" else env


def isolated_timings(case: FlowCase, sides: Sequence[str], settings: Settings
                     ) -> tuple[dict[str, Timing], dict[str, dict[str, Any]]]:
    """Each side timed in ``ROUNDS`` fresh processes of its own, alternating (A B, B A, A B), all times
    pooled. A process only ever sees one library's allocations, so neither side's page faults depend on
    what the other allocated (see benchmarks/README.md, Methods). Also returns the peak memory the
    last process of each compiled side measured, or ``{"error": ...}`` for an optional side
    (:data:`OPTIONAL_SIDES`) that failed; any other failure raises."""
    env = worker_env(settings.malloc)
    times: dict[str, list[float]] = {side: [] for side in sides}
    memory: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}  # optional sides that could not run: their error's last line
    for r in range(1 if settings.quick else ROUNDS):
        for side in (sides if r % 2 == 0 else list(reversed(sides))):
            spec = {"case": asdict(case), "side": side, "device": str(settings.device),
                    "precision": settings.precision, "warmup": settings.warmup, "repeats": settings.repeats,
                    "threads": torch.get_num_threads()}
            if side in failed:
                continue
            done = subprocess.run([sys.executable, "-m", "benchmarks.flows", "--worker", json.dumps(spec)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
                if side not in OPTIONAL_SIDES:
                    raise RuntimeError(f"flow benchmark worker ({case.name}, {side}) failed: {why}")
                failed[side] = why
                continue
            report = json.loads(done.stdout.strip().splitlines()[-1])
            times[side] += report["times_s"]
            if "memory" in report:
                memory[side] = report["memory"]
    timings = {side: Timing(t) for side, t in times.items() if side not in failed}
    return timings, {**memory, **{side: {"error": why} for side, why in failed.items()}}


def run_case(case: FlowCase, settings: Settings, baseline: bool = True) -> dict[str, Any]:
    """Verify and time one case; ``baseline=False`` times avade alone (normflows not installed).

    The equivalence check, FLOPs (compiling does not change them) and, for eager cases, peak memory
    and the same-process timings come from eager models built here; the timings from
    :func:`isolated_timings` (always, for a compiled case: compiling in this process would leave the
    compiler's state behind for the cases after it).
    """
    torch.manual_seed(0)
    x = flow_input(case, settings.device)
    names = ["avade", "normflows"] if baseline else ["avade"]
    sides = {name: (SIDES[name][0](case).to(settings.device).train(), SIDES[name][1]) for name in names}
    isolate = settings.isolate or bool(case.compile)
    out: dict[str, Any] = {"case": asdict(case), "sides": {},
                           "timing": "isolated processes" if isolate else "one process, interleaved"}
    steps = {name: _step(m, lp, x, settings, _bf16_nets(name, case)) for name, (m, lp) in sides.items()}
    for step in steps.values():
        step()  # data-dependent ActNorm init on this batch before the likelihood check
    for name, (model, log_prob) in sides.items():
        out["sides"][name] = {"params": count_params(model), "bpd_init": _bpd(model, log_prob, x)}
    measured = {name: characterize(step, settings.device) for name, step in steps.items()}
    together: dict[str, Timing] = {}
    if not case.compile:
        # Also timed here, interleaved in this one process (JSON only: see "Allocator" in the README).
        together = measure(steps, settings, warmup=max(settings.warmup - WARM_CALLS, 0))
    timed = timed_sides(case, baseline)
    if isolate:
        timings, compiled_memory = isolated_timings(case, timed, settings)
    else:
        timings, compiled_memory = together, {}
    # Which timed side each library's reported figures come from.
    reported = {name: name + COMPILED if case.compile and name == "avade" else name for name in names}
    modes: dict[str, Timing] = {}
    if case.compile and baseline:
        # normflows at its fastest: every mode stays in the JSON, the faster one is the baseline.
        modes = {side: timings[side] for side in timed if side.startswith("normflows") and side in timings}
        out["normflows_modes"] = {side: {"images_per_s": case.batch / t.median, "timing": t.to_dict()}
                                  for side, t in modes.items()}
        out["normflows_modes"].update({side: m for side, m in compiled_memory.items() if "error" in m})
        fastest = min(modes, key=lambda side: modes[side].median)
        out["baseline_mode"] = "compiled" if fastest.endswith(COMPILED) else "eager"
        reported["normflows"] = fastest
    for name, step in steps.items():
        side = out["sides"][name]
        timed_name = reported[name]
        flops, memory = measured[name]
        t = timings[timed_name]
        side.update(timing=t.to_dict(), images_per_s=case.batch / t.median, flops_per_image=flops / case.batch,
                    flop_s=flops / t.median, memory=compiled_memory.get(timed_name, memory),
                    mode="compiled" if timed_name.endswith(COMPILED) else "eager")
        if name in together:
            side["images_per_s_same_process"] = case.batch / together[name].median
        if settings.profile and not case.compile:
            side["top_ops"] = top_ops(step, settings.device)
    if baseline:
        a, b = out["sides"]["avade"], out["sides"]["normflows"]
        param_diff = abs(a["params"] - b["params"]) / b["params"]
        ll_ratio = a["bpd_init"] / b["bpd_init"] if b["bpd_init"] else math.inf
        out["check"] = {
            "param_rel_diff": param_diff,
            "params_match": param_diff <= PARAM_TOLERANCE,
            "bpd_ratio": ll_ratio,
            "ll_same_order": bool(math.isfinite(ll_ratio) and 1 / LL_FACTOR <= ll_ratio <= LL_FACTOR),
        }
        ta, tb = Timing(a["timing"]["times_s"]), Timing(b["timing"]["times_s"])
        # avade / normflows images/s: ratio of the pooled medians (isolated processes cannot be paired
        # call by call), or the median of per-round ratios when both run in this process.
        out["speedup"] = tb.median / ta.median if isolate else paired_speedup(ta, tb)
        # Best against best: normflows' fastest call in whichever mode it came.
        out["speedup_best"] = best_speedup(ta, Timing([t for m in modes.values() for t in m.times]) if modes else tb)
        if together:
            out["speedup_same_process"] = paired_speedup(together["avade"], together["normflows"])
        out["memory_ratio"] = (a["memory"]["peak_mb"] / b["memory"]["peak_mb"]) if b["memory"]["peak_mb"] else None
        out["flops_ratio"] = a["flops_per_image"] / b["flops_per_image"] if b["flops_per_image"] else None
    return out


def normflows_available() -> bool:
    try:
        import normflows  # noqa: F401
    except ImportError:
        return False
    return True


def run(settings: Settings, cases: Sequence[FlowCase] | None = None, baseline: bool | None = None,
        names: Sequence[str] | None = None) -> dict[str, Any]:
    """All cases (or those of ``names``); the normflows side is skipped (and said so) when normflows is
    not installed."""
    have = normflows_available()
    baseline = have if baseline is None else (baseline and have)
    cases = list(cases) if cases is not None else default_cases(settings.quick)
    if names is not None:
        cases = [c for c in cases if c.name in names]
    result: dict[str, Any] = {"baseline": "normflows" if baseline else None, "cases": {},
                              "isolate": settings.isolate, "malloc": settings.malloc, "quick": settings.quick,
                              "precision": settings.precision}
    if not baseline:
        result["note"] = ("normflows is not installed (pip install -e '.[bench]'): avade timed alone"
                          if not have else "baseline disabled")
    with warnings.catch_warnings():
        # normflows' LU 1x1 conv calls torch.lu, deprecated in torch: not ours to fix, not worth a screenful.
        warnings.filterwarnings("ignore", message=r"torch\.lu is deprecated")
        for case in cases:
            try:
                result["cases"][case.name] = run_case(case, settings, baseline=baseline)
            except Exception as exc:  # one failing case (e.g. no C++ compiler for inductor) keeps the others
                result.setdefault("errors", {})[case.name] = f"{type(exc).__name__}: {exc}"
    return result


def render(result: dict[str, Any]) -> list[Any]:
    """Tables: throughput/memory ratio per case, the equivalence check, and profiles if any."""
    rows, checks, tables, notes = [], [], [], []
    for name, r in result["cases"].items():
        a, b = r["sides"]["avade"], r["sides"].get("normflows")
        c = r["case"]
        shape = f"{c['batch']}x{c['channels']}x{c['size']}x{c['size']}"
        rows.append([name, shape, a["images_per_s"], b["images_per_s"] if b else None, r.get("speedup"),
                     r.get("speedup_best"),
                     a["memory"]["peak_mb"], b["memory"]["peak_mb"] if b else None, r.get("memory_ratio"),
                     a["flops_per_image"] / 1e9, b["flops_per_image"] / 1e9 if b else None,
                     a["flop_s"] / 1e9, b["flop_s"] / 1e9 if b else None])
        if "check" in r:
            k = r["check"]
            checks.append([name, a["params"], b["params"], k["param_rel_diff"], k["params_match"], a["bpd_init"],
                           b["bpd_init"], k["ll_same_order"]])
        if r["case"].get("nets", "fp32") != "fp32":
            precision = result.get("precision", "fp32")  # (--precision bf16: both sides under bf16 autocast)
            notes.append(f"{name}: avade's coupling networks in {r['case']['nets']} (train.bf16_coupling_nets), its "
                         f"flow otherwise fp32 (exact log-determinants); normflows {precision}"
                         f"{' autocast' if precision != 'fp32' else ''}: not the target's equal configuration, not "
                         "judged")
        if "normflows_modes" in r:
            seen = ", ".join(f"{side.removeprefix('normflows').strip() or 'eager'} "
                             + (f"{m['images_per_s']:.0f} img/s" if "error" not in m else f"failed ({m['error']})")
                             for side, m in r["normflows_modes"].items())
            notes.append(f"{name}: avade compiled ({r['case']['compile']}) vs normflows {seen}; the faster "
                         f"({r['baseline_mode']}) is the baseline")
        for side, data in r["sides"].items():
            if "top_ops" in data:
                tables.append(ops_table(f"top ops, {name} fwd+bwd, {side}", data["top_ops"]))
    how = (f"each side timed in {1 if result.get('quick') else ROUNDS} fresh process(es) of its own, "
           f"malloc {result.get('malloc', 'tuned')}" if result.get("isolate", True)
           else "both timed interleaved in this process; compiled cases in fresh processes")
    main = table(f"flows: forward+backward, avade vs normflows (ratio = avade/normflows images/s; {how})",
                 ["case", "batch shape", "avade img/s", "nf img/s", "ratio", "ratio best", "avade MiB", "nf MiB",
                  "mem ratio", "avade GFLOP/img", "nf GFLOP/img", "avade GFLOP/s", "nf GFLOP/s"], rows,
                 caption=escape("; ".join([*([result["note"]] if result.get("note") else []), *notes])) or None)
    out = [main]
    for name, error in result.get("errors", {}).items():
        out.append(f"[red]flows {escape(name)} failed:[/] {escape(error)}")
    if checks:
        out.append(table("flows: same function class? (trainable params; bits/dim at init, same batch)",
                         ["case", "avade params", "normflows params", "rel diff", "match", "avade bpd", "nf bpd",
                          "same order"], checks))
    return out + tables


if __name__ == "__main__":  # a timing worker: python -m benchmarks.flows --worker '<json spec>'
    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m benchmarks.flows --worker '<json spec>' (started by the flows benchmark)")
    _worker(json.loads(sys.argv[2]))
