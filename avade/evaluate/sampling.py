"""``avade sample``: a PNG grid of samples or reconstructions, or all samples as an ``.npz`` for external
FID tools."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from avade import memory
from avade.atomic_files import replaced_atomically
from avade.errors import ConfigError, argument, int_argument, real_argument
from avade.evaluate.context import draw_class_labels
from avade.evaluate.loading import load_trained
from avade.memory import naming_memory
from avade.models.generative import GenerativeModel
from avade.train.data import subset_batches

SAMPLE_BATCH = 100  # images per model call when sampling
INTERPOLATION_STEPS = 8  # frames between the two images of an interpolation row


def sample_run(run_dir: str | Path, n: int = 64, output: str | Path = Path("samples.png"),
               temperature: float | None = None, reconstructions: bool = False, seed: int = 0, device: str = "auto",
               checkpoint: str | int | None = None, batch_size: int = SAMPLE_BATCH, ema: bool = True,
               overrides: Sequence[str] = (), label: int | None = None, interpolations: bool = False,
               steps: int = INTERPOLATION_STEPS) -> Path:
    """``avade sample``: a PNG grid of samples (or test images next to their reconstructions), or with an
    ``.npz`` output all ``n`` samples as a uint8 ``[n, H, W, C]`` array ``arr_0`` (the layout external FID
    tools read; for a class-conditional model ``labels`` beside it, drawn with the training split's class
    balance as evaluation draws them), written atomically. ``overrides``: ``--set`` keys that leave the trained
    model as it is (e.g. ``data.root`` for reconstructions, ``model.temperature``). A class-conditional model's
    grid shows one class per column; ``label``: samples of that class alone.

    ``interpolations``: ``n`` rows, each a pair of test images with ``steps`` decodings along the path between
    their latent codes in between (:meth:`~avade.models.generative.GenerativeModel.interpolate`); a
    class-conditional model's pairs share a class (``label``'s alone when given)."""
    # (errors name the arguments as the caller gave them: Python's, or the CLI's flags; avade.errors.argument)
    if int_argument(n) < 1:
        raise ConfigError(f"{argument('n')} must be an int >= 1, got {n!r}")
    if int_argument(batch_size) < 1:
        raise ConfigError(f"{argument('batch_size')} must be at least 1, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64 - 1:
        # what torch's generators take (the labels are drawn with seed + 1)
        raise ConfigError(f"{argument('seed')} must be an integer in [-2**63, 2**64 - 2], got {seed!r}")
    if interpolations and reconstructions:
        raise ConfigError(f"{argument('interpolations')} and {argument('reconstructions')} each make their own grid; "
                          "leave out one of them")
    from_data = reconstructions or interpolations  # (grids of test images, through q(z|x))
    flag = argument("reconstructions" if reconstructions else "interpolations")
    if temperature is not None and not 0 <= real_argument(temperature) < math.inf:  # (NaN fails too)
        raise ConfigError(f"{argument('temperature', temperature)}: expected a finite number >= 0 (1 = the prior "
                          "itself, 0 = its mode)")
    if temperature is not None and from_data:  # (the CLI says so first; Python too)
        raise ConfigError(f"{argument('temperature')} sets the prior's temperature, and {flag} draws from the "
                          "posterior q(z|x): leave one of them out")
    if int_argument(steps) < 2:
        raise ConfigError(f"{argument('steps')} must be at least 2 (both ends of a path included), got {steps!r}")
    if label is not None and int_argument(label) != label:  # (an int class id; a float or a string is refused)
        raise ConfigError(f"{argument('label', label)}: expected an int class id, got {type(label).__name__}")
    output = Path(output)
    as_array = output.suffix.lower() == ".npz"
    if as_array and from_data:
        raise ConfigError(f"{flag} writes an image grid; give {argument('output')} a .png (or another image) file")
    if not as_array:  # before the model is loaded and sampled, not after: a format Pillow cannot write fails now
        check_image_format(output)
    # Samples need only the model (a run copied without its data can be sampled); the others need test images.
    loaded = load_trained(run_dir, device, checkpoint, datasets=from_data, ema=ema, overrides=overrides)
    model, sets = loaded.model, loaded.datasets
    if from_data and model.variant == "gan":  # its encoder is never trained: no reconstructions to show
        raise ConfigError(f"a GAN trains no encoder, so its test images have no latents to show; leave out {flag}")
    if label is not None:
        if not model.num_classes:
            raise ConfigError(f"{argument('label', label)}: this run's model is not class-conditional; leave out "
                              f"{argument('label')}")
        if reconstructions:
            raise ConfigError(f"{argument('label')} picks the class of samples; reconstructions are of the test "
                              "images' own classes: leave out one of them")
        if not 0 <= label < model.num_classes:
            raise ConfigError(f"{argument('label', label)}: the model has classes 0..{model.num_classes - 1}")
    tiles = n  # the grid's images (a test split of fewer images than asked for shows all it has)
    if interpolations:
        tiles = min(n, len(sets[1]) // 2) * (steps + 2)  # type: ignore[index, arg-type]
    elif reconstructions:
        tiles = 2 * min(n, len(sets[1]))  # type: ignore[index, arg-type]
    asked = argument("n", n) + (f" {argument('steps', steps)}" if interpolations else "")
    _check_size(asked, n, tiles, model.data_shape, as_array)
    if interpolations:
        phase, fix = (f"while decoding interpolations, {batch_size} images a model call",
                      f"lower {argument('batch_size')} (now {batch_size}), {argument('n')} or {argument('steps')}")
    elif reconstructions:  # (the test images go through q(z|x) and back in one call)
        shown = min(n, len(sets[1]))  # type: ignore[index, arg-type]
        phase, fix = f"while reconstructing {shown} test images in one model call", f"lower {argument('n')}"
    else:
        phase, fix = (f"while sampling {min(batch_size, n)} images a model call",
                      f"lower {argument('batch_size')} (now {batch_size}), or {argument('n')}")
    with naming_memory(phase, fix):  # (loading the model, above, gets the CLI's general line)
        dev = next(model.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(seed)
        if interpolations:
            assert sets is not None
            images = _interpolation_rows(model, sets[1], n, steps, label, gen, batch_size)
            _write(output, images, steps + 2, None)
            return output
        nrow = square_columns(n)
        labels = None
        if label is not None:
            labels = torch.full((n,), label, dtype=torch.int64, device=dev)
        elif model.num_classes and as_array:
            # The training split's class balance, drawn as evaluation draws them (seeded one above the noise):
            # `--seed <train.seed + 1>` gives the samples `avade eval` scores.
            labels = draw_class_labels(loaded.class_counts, model.num_classes, n, seed + 1).to(dev)
        elif model.num_classes:  # a grid shows the classes in turn: one per column
            labels = torch.arange(n, device=dev) % model.num_classes
            nrow = class_columns(model.num_classes, n)
        if reconstructions:
            assert sets is not None
            if n > len(sets[1]):  # say so rather than hand back a smaller grid unannounced
                warnings.warn(f"{argument('n', n)}: the test split holds {len(sets[1])} images; the grid shows all "
                              "of them",
                              UserWarning, stacklevel=2)
            x, y = next(subset_batches(sets[1], n, batch_size=n))
            x = x.to(dev)
            recon = model.reconstruct(x, y.to(dev) if model.num_classes else None, gen)
            images = torch.stack([x, recon], 1).flatten(0, 1)
            nrow = 2 * square_columns((n + 1) // 2)  # image/reconstruction pairs side by side
        else:
            with torch.inference_mode():
                batches = (model.sample(min(batch_size, n - start), labels[start:start + batch_size]
                                        if labels is not None else None, temperature=temperature, generator=gen).cpu()
                           for start in range(0, n, batch_size))
                if as_array:  # each batch straight into the one uint8 NHWC array np.savez writes: held once, not thrice
                    output.parent.mkdir(parents=True, exist_ok=True)
                    _save_npz(output, _nhwc(batches, n, model.data_shape), labels)
                    return output
                images = torch.cat(list(batches))
        _write(output, images, nrow, labels)
        return output


def _write(output: Path, images: torch.Tensor, nrow: int, labels: torch.Tensor | None) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".npz":
        _save_npz(output, images, labels)
    else:
        save_grid(images, output, nrow)


def check_image_format(path: Path) -> None:
    """A ConfigError, in one line, unless Pillow writes an RGB image (what a grid is, grayscale data's too) in the
    format ``path``'s suffix names: some formats it registers take other modes alone (XBM, MSP) or have no writer
    installed (HDF5, GRIB), which it says only once every sample was drawn."""
    import io

    from PIL import Image

    suffix = path.suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ConfigError(f"{argument('output')}: {path} has no image suffix Pillow can write; end it in .png (or "
                          ".jpg, .webp, ...), or in .npz for an array of samples")
    try:
        Image.new("RGB", (8, 8)).save(io.BytesIO(), format=fmt)
    except Exception as exc:  # (OSError, ValueError, KeyError, ...: whatever the format's writer raises)
        raise ConfigError(f"{argument('output')}: Pillow cannot write a grid of samples (an RGB image) as {fmt} "
                          f"({exc}); end {path.name} in .png (or .jpg, .webp, ...), or in .npz for an array of "
                          "samples") from None


def _check_size(asked: str, n: int, tiles: int, shape: Sequence[int], as_array: bool) -> None:
    """Before any sample is drawn: an .npz of more images than the memory free here holds (it is filled in memory,
    then written), or a grid larger than Pillow opens (its decompression-bomb limit), is refused in one line;
    they failed after minutes (a MemoryError, an "internal error") or ran on for hours."""
    c, h, w = shape
    if as_array:
        need, free = n * c * h * w, memory.host_memory_free()
        if free is not None and need > free:
            raise ConfigError(f"{asked}: an .npz of {n} images of {c}x{h}x{w} holds {need / 2**30:.1f} GiB, more than "
                              f"the {free / 2**30:.1f} GiB of memory free here; sample fewer (several files with "
                              f"different {argument('seed')} make one set)")
        return
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    pixels = tiles * (h + 2) * (w + 2)  # (2 px padding around each image)
    if limit is not None and pixels > 2 * limit:
        raise ConfigError(f"{asked}: a grid of {tiles} images of {h}x{w} has about {pixels / 1e6:.0f} million pixels, "
                          f"more than Pillow opens ({2 * limit / 1e6:.0f} million); ask for fewer, or write all "
                          f"samples to an .npz ({argument('output', 'samples.npz')})")


def _interpolation_rows(model: GenerativeModel, test_set: Dataset, n: int, steps: int, label: int | None,
                        gen: torch.Generator, batch_size: int) -> torch.Tensor:
    """The grid of ``avade sample --interpolations``: per row a test image, ``steps`` frames of the path to a
    second one, and that second image. Pairs are consecutive test images of a random subset fixed by the seed 0
    (as reconstructions pick theirs); a class-conditional model's pairs share a class: the first two images of
    each class in the split's order, then the next two, and so on."""
    dev = gen.device
    a, b, labels = _pairs(test_set, n, model.num_classes, label, batch_size)
    rows = []
    for start in range(0, a.shape[0], batch_size):
        part = slice(start, start + batch_size)
        xa, xb = a[part].to(dev), b[part].to(dev)
        frames = model.interpolate(xa, xb, steps, labels[part].to(dev) if labels is not None else None,
                                   generator=gen)
        rows.append(torch.cat([xa[:, None], frames, xb[:, None]], 1).cpu())
    return torch.cat(rows).flatten(0, 1)


def _pairs(test_set: Dataset, n: int, num_classes: int, label: int | None, batch_size: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Up to ``n`` pairs of test images (a warning when the split holds fewer), with their class for a
    class-conditional model (both of a pair in one class, ``label``'s when given)."""
    total = len(test_set)  # type: ignore[arg-type]
    if not num_classes:
        x, _ = next(subset_batches(test_set, 2 * n, batch_size=2 * n))
        if x.shape[0] < 2:
            raise ConfigError(f"{argument('interpolations')} needs two test images a row; the test split holds "
                              f"{x.shape[0]}")
        found = x.shape[0] // 2
        a, b, labels = x[0:2 * found:2], x[1:2 * found:2], None
    else:
        waiting: dict[int, torch.Tensor] = {}
        pairs: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        for x, y in subset_batches(test_set, None, batch_size):
            for image, c in zip(x, y.tolist(), strict=True):
                if label is not None and c != label:
                    continue
                if c in waiting:
                    pairs.append((waiting.pop(c), image, c))
                else:
                    waiting[c] = image
            if len(pairs) >= n:
                break
        pairs = pairs[:n]
        if not pairs:  # (the whole split was read: at most one image of each class waits)
            if label is not None:
                raise ConfigError(f"{argument('interpolations')} needs two test images of class {label} a row; the "
                                  f"test split has {len(waiting)} of that class: pick another {argument('label')}")
            raise ConfigError(f"{argument('interpolations')} needs two test images of one class a row; the test "
                              f"split has {len(waiting)} images, each of another class")
        found = len(pairs)
        a = torch.stack([p[0] for p in pairs])
        b = torch.stack([p[1] for p in pairs])
        labels = torch.tensor([p[2] for p in pairs], dtype=torch.int64)
    if found < n:  # say so rather than hand back a smaller grid unannounced
        pairs_found = f"{found} pair" + "s" * (found != 1) + (f" of class {label}" if label is not None else "")
        warnings.warn(f"{argument('n', n)}: the test split ({total} images) gives {pairs_found}; the grid shows all "
                      "of them",
                      UserWarning, stacklevel=3)
    return a, b, labels


def square_columns(n: int) -> int:
    """Columns of a grid of ``n`` images that is as square as it can be, never taller than wide (ceil sqrt n)."""
    return math.isqrt(n - 1) + 1 if n > 1 else 1


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """``images`` (uint8 NCHW) as an image grid of ``nrow`` images a row in ``path`` (the format its suffix
    names), replaced atomically: a write that fails (a full disk) leaves an earlier file of that name whole."""
    from PIL import Image
    from torchvision.utils import save_image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:  # no format Pillow knows: its own error names the suffix
        save_image(images.float() / 255.0, path, nrow=nrow)
        return
    with replaced_atomically(path) as tmp, tmp.open("wb") as fh:
        save_image(images.float() / 255.0, fh, format=fmt, nrow=nrow)


def class_columns(num_classes: int, n: int) -> int:
    """Images per row of a grid of ``n`` samples labelled ``arange(n) % num_classes``: one class per column
    (a square grid when there are too many classes, or too few images, for that)."""
    return num_classes if num_classes <= min(n, 32) else max(1, int(n**0.5))


def _nhwc(batches: Iterable[torch.Tensor], n: int, shape: Sequence[int]) -> np.ndarray:
    """The uint8 NCHW ``batches`` (``n`` images of ``shape`` (C, H, W) in all) as one uint8 ``[n, H, W, C]``
    array, filled batch by batch."""
    c, h, w = shape
    try:
        out = np.empty((n, h, w, c), dtype=np.uint8)
    except MemoryError:  # (where the free memory is not known beforehand)
        raise ConfigError(f"{argument('n', n)}: an .npz of {n} images of {c}x{h}x{w} does not fit in memory here; "
                          f"sample fewer (several files with different {argument('seed')} make one set)") from None
    start = 0
    for batch in batches:
        out[start:start + len(batch)] = batch.permute(0, 2, 3, 1).numpy()
        start += len(batch)
    assert start == n, (start, n)
    return out


def _save_npz(path: Path, images: torch.Tensor | np.ndarray, labels: torch.Tensor | None) -> None:
    """``images`` (uint8 NCHW tensor, or an NHWC array already) as ``arr_0`` (NHWC) [and ``labels``] in
    ``path``, replaced atomically."""
    arrays = {"arr_0": images if isinstance(images, np.ndarray) else images.permute(0, 2, 3, 1).contiguous().numpy()}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    with replaced_atomically(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)  # a file object: savez would append .npz to a name
