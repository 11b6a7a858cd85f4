"""The dataset interface every ``dataset`` component serves, and the helpers the built-in ones share.

A dataset factory is ``Class(cfg, *, split)`` with ``split`` in ``{"train", "test"}``; the result is an
:class:`ImageDataset`: items are ``(uint8 tensor [C, H, W] in 0..255, int label)`` (label ``-1`` when the
data is unlabeled). Images stay 8-bit on purpose: dequantization and scaling belong to the model, whose
log-determinant must account for them (BPD is a bound on the 8-bit data).

All transforms here are deterministic (no random augmentation): the same config gives the same tensors.
Resizing is bilinear with antialiasing (PIL's ``BILINEAR`` filter, to within one intensity level).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import itertools
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import torch
from PIL import Image, ImageOps, TiffImagePlugin
from torch.utils.data import Dataset

from avade.errors import ConfigError, DataError

SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
# Fallback suggestion in "not found" messages: a dataset that always works offline (one with labels for a
# class-conditional model, which natural-patches cannot train).
OFFLINE_FALLBACK = "natural-patches"
LABELLED_FALLBACK = "digits"
# None while a trained run's data are read (eval, sample, resume): another dataset is no fix there.
_SUGGEST_FALLBACK: contextvars.ContextVar[str | None] = contextvars.ContextVar("suggest_fallback",
                                                                               default=OFFLINE_FALLBACK)


@contextlib.contextmanager
def data_of_trained_model() -> Iterator[None]:
    """Within it, "not found" errors do not suggest the offline dataset: the model was trained on this one."""
    token = _SUGGEST_FALLBACK.set(None)
    try:
        yield
    finally:
        _SUGGEST_FALLBACK.reset(token)


@contextlib.contextmanager
def data_of_model(conditional: bool) -> Iterator[None]:
    """Within it, "not found" errors suggest an offline dataset such a model can train on: for a
    class-conditional one, a labelled dataset (digits), not natural-patches (no labels)."""
    if not conditional or _SUGGEST_FALLBACK.get() is None:
        yield
        return
    token = _SUGGEST_FALLBACK.set(LABELLED_FALLBACK)
    try:
        yield
    finally:
        _SUGGEST_FALLBACK.reset(token)


def content_fingerprint(dataset: Any) -> str:
    """What changes when ``dataset``'s images do (cached reference statistics are keyed on it): its own
    ``content_fingerprint()`` when it has one (a plugin's dataset may not), else its image count."""
    own = getattr(dataset, "content_fingerprint", None)
    return own() if callable(own) else f"n{len(dataset)}"


def data_source(dataset: Any, name: str, config: Any = None) -> dict[str, Any]:
    """What a split of dataset ``name`` read, as recorded once per run (``state.json``'s ``data_read``):
    ``{"dataset": name, "images": len(dataset), "paths": [...]}`` and the dataset's own facts, from its optional
    ``data_source`` (a dict, or a method returning one: its layout, version, how it was split; small, no file
    lists). A dataset that says nothing gets its config's ``root``, expanded, as ``paths`` (none without one).
    Given paths, ``resolved`` maps each that leads elsewhere (a symlink) to where it really leads ({} when none
    does): a symlinked folder re-pointed since reads other files under the same path. Nothing is read from
    disk here: the facts are what locating the data found."""
    own = getattr(dataset, "data_source", None)
    facts = own() if callable(own) else own
    if facts is None:
        facts = {}
    if not isinstance(facts, dict):
        raise DataError(f"dataset '{name}': its data_source is a {type(facts).__name__}, not a dict; make it a dict "
                        "of facts about the data read (layout, version, paths)")
    root = getattr(config, "root", None)
    record: dict[str, Any] = {"dataset": name, "images": len(dataset),
                              "paths": [expand_root(root)] if isinstance(root, str) else []}
    record.update(facts)
    record.update(dataset=name, images=len(dataset))  # (the dataset's own facts do not rename or recount it)
    out = {str(k): _jsonable(v) for k, v in record.items()}
    paths = out.get("paths")
    if isinstance(paths, list) and paths:
        out["resolved"] = _resolved([p for p in paths if isinstance(p, str)])
    return out


def _resolved(paths: list[str]) -> dict[str, str]:
    """``{path: where it really leads}`` for each of ``paths`` that leads elsewhere (through a symlink); one
    that cannot be resolved is left out, and so is a relative one (paths are recorded absolute: a plugin's
    "s3://bucket/x" or hub name names no local folder, and resolved against the working directory it would)."""
    out = {}
    for path in paths:
        if not os.path.isabs(path):
            continue
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError):  # (a symlink loop under strict resolution, a NUL in a plugin's path)
            continue
        if real != path:
            out[path] = real
    return out


def package_versions(*dists: str) -> dict[str, str]:
    """``{"scikit-learn": "1.5.2", ...}``: the installed versions of the distributions ``dists`` (one not installed
    is left out), for the ``data_source`` of a dataset whose images ship inside them: another version may ship
    other files, or split them otherwise."""
    from avade.registry import dist_version

    return {dist: version for dist in dists if (version := dist_version(dist)) is not None}


def _jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: paths absolute strings, tuples lists, anything else unknown its ``str``."""
    if isinstance(value, Path):
        return str(value.absolute())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class ImageDataset(Dataset):
    """A dataset of 8-bit images: ``shape`` is (C, H, W); ``num_classes`` is 0 when unlabeled."""

    shape: tuple[int, int, int]
    num_classes: int = 0
    #: what locating the data found, recorded in the run directory (:func:`data_source`): layout, version, folders
    data_source: dict[str, Any] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """``(uint8 [C, H, W] in 0..255, label)``; label is ``-1`` for unlabeled data."""
        raise NotImplementedError

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All data at once as ``(uint8 [N, C, H, W], int64 [N])`` when held in memory, else None.

        Trainers index batches straight from these tensors (no DataLoader) when they are available.
        """
        return None

    def content_fingerprint(self) -> str:
        """What changes when the images do (cached reference statistics are keyed on it): here their count;
        datasets that know more (the files, the data) say more."""
        return f"n{len(self)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, shape={self.shape}, num_classes={self.num_classes})"


class TensorImageDataset(ImageDataset):
    """An in-memory dataset over ``images`` (uint8 [N, C, H, W]) and ``labels`` (int64 [N], or None)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, num_classes: int = 0) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels is None:
            labels = torch.full((images.shape[0],), -1, dtype=torch.int64)
        labels = labels.to(torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape [{images.shape[0]}], got {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.contiguous()
        self.shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
        self.num_classes = int(num_classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images and labels: they are held in memory already."""
        return self.images, self.labels

    def content_fingerprint(self) -> str:
        """The count and a hash of about 1000 evenly spaced images (all of a small set): cheap for any size."""
        step = max(1, len(self) // 1000)
        digest = hashlib.sha1(self.images[::step].numpy().tobytes()).hexdigest()[:12]
        return f"n{len(self)}-{digest}"


class FileImageDataset(ImageDataset):
    """Images read from files on demand: center square crop (side ``crop``, default the short side),
    then resize to ``resolution``; ``channels`` 3 converts to RGB, 1 to grayscale.

    With ``in_memory=True`` every file is decoded once at construction (in threads: :func:`decode_into`) and
    :meth:`as_tensors` serves them.
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: Sequence[int] | None,
        *,
        num_classes: int,
        resolution: int,
        channels: int = 3,
        crop: int | None = None,
        in_memory: bool = False,
    ) -> None:
        self.files = [f if isinstance(f, Path) else Path(f) for f in files]  # (a Path each: 50,000 take seconds)
        self.labels = list(labels) if labels is not None else [-1] * len(self.files)
        if len(self.labels) != len(self.files):
            raise ValueError("files and labels differ in length")
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.crop = crop
        self.shape = (self.channels, self.resolution, self.resolution)
        self._tensors: tuple[torch.Tensor, torch.Tensor] | None = None
        if in_memory:
            images = torch.empty((len(self.files), *self.shape), dtype=torch.uint8)
            decode_into(images, self._load)
            self._tensors = (images, torch.tensor(self.labels, dtype=torch.int64))

    def _load(self, i: int) -> torch.Tensor:
        return load_image(self.files[i], self.resolution, channels=self.channels, crop=self.crop)

    def content_fingerprint(self) -> str:
        """The count and a hash of the file names (an image added, removed or renamed changes it; one
        rewritten in place under its name does not)."""
        digest = hashlib.sha1("\n".join(str(f) for f in self.files).encode()).hexdigest()[:12]
        return f"n{len(self)}-{digest}"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._tensors is not None:
            return self._tensors[0][i], int(self._tensors[1][i])
        return self._load(i), int(self.labels[i])

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The decoded images and labels with ``in_memory=True``, else None (files are read per item)."""
        return self._tensors


# Images a thread decodes in one go when a dataset is decoded into memory: few enough tasks (CelebA's 202,599
# images: 3,166) that their futures cost nothing, many enough per thread that they balance.
_DECODE_CHUNK = 64
_MAX_DECODE_THREADS = 32  # (beyond this the GIL-held parts of decoding, not the cores, are the limit)


def decode_threads(n: int) -> int:
    """How many threads decode ``n`` images into memory: one per CPU this process may run on
    (``os.sched_getaffinity``: a container's or ``taskset``'s limit, not the machine's count), shared with the
    other processes of a torchrun job on this node (``LOCAL_WORLD_SIZE``; they all decode at start-up) unless
    the launcher already pinned each to its own CPUs; at most one per chunk of images, and at most 32.

    ``data.num_workers`` does not bound it: it counts DataLoader processes, which data held in memory do not use
    (trainers index its tensors), and a count of 0 would make this serial; the threads end with the decoding.
    """
    chunks = -(-n // _DECODE_CHUNK)
    return max(1, min(process_cpus(), chunks, _MAX_DECODE_THREADS))


def process_cpus() -> int:
    """The CPUs this process may use (``os.sched_getaffinity``: a container's or ``taskset``'s limit, not the
    machine's count; ``os.cpu_count()`` where there is no affinity), divided among the processes of a
    torchrun job on this node (``LOCAL_WORLD_SIZE``) unless the launcher already pinned each to its own
    CPUs (an affinity smaller than the machine); 0 when a torchrun job has more processes than CPUs."""
    machine = os.cpu_count() or 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (macOS, Windows: no affinity)
        cpus = machine
    local_world = os.environ.get("LOCAL_WORLD_SIZE", "1")
    local_world = int(local_world) if local_world.isdigit() else 1
    if local_world > 1 and cpus >= machine:
        cpus //= local_world
    return cpus


def decode_into(out: torch.Tensor, load: Callable[[int], torch.Tensor], threads: int | None = None) -> None:
    """``out[i] = load(i)`` for every ``i`` of ``out`` (uint8 [N, ...], preallocated), in a pool of
    :func:`decode_threads` threads (``threads`` to override; 1 decodes here, in order).

    PIL's decoding and conversion and torch's resize kernel release the GIL, so threads decode in parallel
    without copying images between processes; each writes its images straight into ``out``. The Python work
    around them (PIL's header parsing, torchvision's dispatch) does not, which bounds the gain: with 2 CPUs
    1.37x on CelebA-sized JPEGs (178x218 to 64), none on 80x80 ones, whose decoding is mostly that work.
    What comes out is the same as decoding in order, bit for bit, and so is a failure: the error of the first
    image (in order) that cannot be read, as decoding in order would have raised, with the images not yet
    started cancelled. While the threads run torch's own intra-op threads are set to 1 (a global
    setting: restored after), else each thread's resize would start a team of its own on the same CPUs.
    """
    n = int(out.shape[0])
    threads = decode_threads(n) if threads is None else max(1, int(threads))
    if threads == 1 or n <= 1:
        for i in range(n):
            out[i] = load(i)
        return

    # The first image here, first (its failure is the first anyway): whatever decoding imports on first use
    # (torchvision, PIL's plugins) is imported once, not by several threads at once halfway through each other.
    out[0] = load(0)

    def chunk(start: int) -> None:
        for i in range(start, min(start + _DECODE_CHUNK, n)):
            out[i] = load(i)

    intra_op = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="avade-decode")
    try:
        # map yields in order: the first chunk that failed raises, and within it the first image that did
        for _ in pool.map(chunk, range(1, n, _DECODE_CHUNK)):
            pass
    finally:  # (on a failure the chunks not yet started are cancelled; running ones finish theirs)
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(intra_op)


# --- transforms -----------------------------------------------------------------------------------


def class_counts(dataset: Any) -> list[int] | None:
    """How many images of ``dataset`` each of its ``num_classes`` classes has (unlabeled ones, -1, left
    out), from its ``labels``; None for unlabeled data."""
    labels, num_classes = getattr(dataset, "labels", None), int(getattr(dataset, "num_classes", 0))
    if labels is None or num_classes <= 0:
        return None
    known = torch.as_tensor(labels, dtype=torch.int64)
    known = known[(known >= 0) & (known < num_classes)]
    return torch.bincount(known, minlength=num_classes).tolist() if len(known) else None


def center_crop_resize(images: torch.Tensor, resolution: int, crop: int | None = None) -> torch.Tensor:
    """Center square crop then resize to ``resolution`` × ``resolution``, for uint8 [C, H, W] or [N, C, H, W].

    ``crop`` is the side of the square cut from the center (default: the shorter side, i.e. the largest
    centered square); it is clipped to the image. Resizing is bilinear with antialiasing.
    """
    h, w = int(images.shape[-2]), int(images.shape[-1])
    side = min(h, w) if crop is None else min(int(crop), h, w)
    if (h, w) != (side, side):
        from torchvision.transforms.v2 import functional as TF  # (see _resize)

        images = TF.center_crop(images, [side, side])
    return resize(images, resolution)


def resize(images: torch.Tensor, resolution: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 images ``[C, H, W]`` or ``[N, C, H, W]`` to a square ``resolution`` (bilinear, antialias).

    Batches are processed in chunks so that big datasets do not need a float copy of everything.
    """
    if tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    if images.dim() == 3:
        return _resize(images, resolution)
    out = torch.empty((images.shape[0], images.shape[1], resolution, resolution), dtype=images.dtype)
    for start in range(0, images.shape[0], chunk):
        out[start : start + chunk] = _resize(images[start : start + chunk].contiguous(), resolution)
    return out


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    # torchvision imported where images are decoded or resized, not with this module: importing it imports all
    # of torchvision, its models and torch's compiler (~2.4 s), which `avade recipe check` needs none of
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, [resolution, resolution], interpolation=InterpolationMode.BILINEAR, antialias=True)


class UnsupportedPixels(ValueError):
    """An image whose pixel values have no defined 8-bit scale (floating-point, 32-bit or signed integers)."""


_SAMPLE_FORMAT, _BITS_PER_SAMPLE = 339, 258  # TIFF tags


def pil_to_uint8(img: Image.Image, channels: int = 3) -> torch.Tensor:
    """A PIL image as a uint8 tensor [C, H, W] (RGB for 3 channels, luminance for 1).

    Integer grayscale of more than 8 bits (modes ``I;16*`` and ``I``: 16-bit PNG, TIFF, PGM/PPM, which Pillow
    reads into 0..65535) is scaled by 1/256, the same for every file of a format, whatever its content.
    Floating-point pixels, and 32-bit or signed integer TIFFs, have no defined 8-bit scale:
    :class:`UnsupportedPixels` (PIL's conversion would clip them, a 0..1 float image to black).
    """
    if img.mode == "F":
        raise UnsupportedPixels("it holds floating-point pixels (mode F), which have no defined 8-bit scale")
    if img.mode == "I" or img.mode.startswith("I;16"):
        if img.mode == "I" and img.format == "TIFF":
            tags = getattr(img, "tag_v2", {})
            bits, kind = max(tags.get(_BITS_PER_SAMPLE, (16,))), max(tags.get(_SAMPLE_FORMAT, (1,)))
            if bits > 16 or kind != 1:
                what = ("signed " if kind == 2 else "") + f"{bits}-bit"
                raise UnsupportedPixels(f"it holds {what} integer pixels, which have no defined 8-bit scale")
        if img.mode not in ("I", "I;16"):  # I;16B (a big-endian TIFF's), I;16L, I;16N: getextrema and point take
            img = img.convert("I")          # none of them ("image has wrong mode"); convert keeps their values
        low, high = img.getextrema()
        if low < 0 or high > 65535:  # (any other reader of wider integers)
            raise UnsupportedPixels(f"its integer pixels span {low}..{high}, beyond 16 bits")
        # 16-bit grayscale: PIL's convert clips to 255 instead of scaling. The scale is the format's, never
        # the image's own maximum: a dark 16-bit image stays dark.
        img = img.point(lambda v: v / 256, "I").convert("L")
    img = img.convert("RGB" if channels == 3 else "L")
    from torchvision.transforms.v2 import functional as TF  # (see _resize)

    return TF.pil_to_tensor(img)


_ORIENTATION = 0x0112  # the EXIF tag
# Part of the cache keys of features of real data: bump it whenever decoding changes what images a file
# gives (2: EXIF orientation applied; 3: 16-bit PGM/PPM scaled by 1/256 whatever their maximum, as 16-bit
# PNGs were; 4: uncompressed TIFFs of orientations 5-8 read by libtiff), so that statistics cached from the
# old pixels are not reused.
DECODING_VERSION = 4


@contextlib.contextmanager
def open_image(source: Path | IO[bytes]) -> Iterator[Image.Image]:
    """``PIL.Image.open(source)``, but an uncompressed TIFF whose orientation tag transposes it (5-8) is
    read by libtiff: Pillow's own reader scrambles such pixels in most modes (grayscale, 16-bit, RGBA,
    palette, CMYK; Pillow 13), while its libtiff reader applies the orientation right."""
    img = Image.open(source)
    try:
        if img.format == "TIFF" and not getattr(img, "use_load_libtiff", True) \
                and img.tag_v2.get(_ORIENTATION) in (5, 6, 7, 8):
            if not isinstance(source, Path | str):  # (closing the image closes the stream too)
                source.seek(0)
                source = io.BytesIO(source.read())
            img.close()
            before, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True  # read while opening
            try:
                img = Image.open(source)
            finally:
                TiffImagePlugin.READ_LIBTIFF = before
        yield img
    finally:
        img.close()


def upright(img: Image.Image) -> Image.Image:
    """``img`` as viewers show it: a camera's EXIF orientation applied (photos from phones are often
    stored sideways with a tag saying so; torchvision ignores it, which trains on rotated images)."""
    if img.getexif().get(_ORIENTATION, 1) in (0, 1):
        return img
    return ImageOps.exif_transpose(img)


def load_image(path: Path, resolution: int, channels: int = 3, crop: int | None = None) -> torch.Tensor:
    """Decode an image file into uint8 [C, resolution, resolution] (center crop + resize)."""
    try:
        with open_image(path) as img:
            tensor = pil_to_uint8(upright(img), channels)
    except UnsupportedPixels as exc:
        raise DataError(f"cannot read image {path}: {exc}; save it as an 8-bit (or 16-bit) image") from None
    except PermissionError as exc:  # (the file is fine: removing or replacing it is not the fix)
        raise DataError(f"cannot read image {path}: {describe_error(exc)}; make it readable "
                        f"(e.g. chmod u+r {shlex.quote(str(path))})") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {describe_error(exc)}; remove or replace the file") from None
    return center_crop_resize(tensor, resolution, crop)


# --- locating data --------------------------------------------------------------------------------


def expand_root(root: str) -> Path:
    """``~`` and ``$VARS`` expanded; the directory a dataset looks under."""
    return Path(os.path.expandvars(os.path.expanduser(root)))


def check_split(split: str) -> str:
    """Reject anything but "train" / "test" (a ConfigError: ``avade.create("dataset", ..., split=...)`` takes it
    from the user)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; a dataset has the splits {' and '.join(SPLITS)}", path="split")
    return split


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension; hidden files and folders such as
    ``.ipynb_checkpoints`` skipped; symlinks followed, as torchvision's ImageFolder does, except a link
    back to a folder it sits in, so a link loop ends), sorted by path.

    [] when ``folder`` is not a directory. A folder below it that cannot be read is a DataError (see
    :func:`folder_entries`), where a glob would skip it and the data would be incomplete without a word; so is
    a symbolic link named as an image whose target is gone, or in a loop of links.
    """
    # Sorted as Paths sort (part by part: "a/x" before "a-b/x"), on strings: with the separator as NUL, which
    # no name holds and every character follows, a string comparison is that of the parts. (Sorting Paths
    # took seconds for CelebA's 202,599 images.)
    found = sorted(_walk_images(folder, recursive), key=lambda path: os.path.normcase(path).replace(os.sep, "\0"))
    return [Path(path) for path in found]


def has_images(folder: Path, recursive: bool = True) -> bool:
    """Whether ``folder`` holds an image that :func:`list_images` would list; it stops at the first one
    (a folder of 50,000 images is not listed to learn that it is not empty)."""
    return next(_walk_images(folder, recursive), None) is not None


def _walk_images(folder: Path, recursive: bool) -> Iterator[str]:
    """The paths of :func:`list_images`, unsorted, as they are found."""
    if not folder.is_dir():
        return
    # (folder, the real paths of it and the folders above it): only a link to one of those is a loop.
    pending = [(folder, frozenset({os.path.realpath(folder)}))]
    while pending:
        current, above = pending.pop()
        for entry in folder_entries(current):
            if entry.name.startswith("."):
                continue
            image = os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and image and entry.is_file()
            except OSError as exc:  # a symbolic link in a loop (ELOOP), a file the disk cannot stat
                raise DataError(f"cannot read {entry.path} in the data ({describe_error(exc)}); remove it or, if it "
                                "is a symbolic link, point it at an image") from None
            if is_dir:
                real = os.path.realpath(entry.path)
                if recursive and real not in above:
                    pending.append((Path(entry.path), above | {real}))
            elif is_file:
                yield entry.path
            elif image and entry.is_symlink():  # an image whose target is gone: the data would be short of it
                raise DataError(f"{entry.path} is a broken symbolic link (to {os.readlink(entry.path)}); restore "
                                "its target or remove the link")


def folder_entries(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` (``os.scandir``); a one-line DataError naming it when it cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except PermissionError as exc:
        raise DataError(
            f"cannot read the data folder {folder} ({describe_error(exc)}); fix its permissions "
            f"(e.g. chmod -R u+rX {shlex.quote(str(folder))}) or move it out of the data"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read the data folder {folder} ({describe_error(exc)}); check the disk") from None


def repair_hint(exc: BaseException, folder: Path | None = None, archive: str = "") -> str:
    """How to fix a dataset whose files failed to load: permissions, or a fresh copy of ``folder`` (from
    ``archive``, the official release's file, unpacked again; or downloaded)."""
    if isinstance(exc, PermissionError):
        return "make its files readable (check their permissions)"
    where = str(folder) if folder is not None else "the dataset's folder"
    again = f"unpack {archive} again in {folder.parent}, or " if archive and folder is not None else \
        f"unpack {archive} again, or " if archive else ""
    return f"replace {where} with a fresh copy ({again}delete it and set data.download=true, needs network)"


def describe_error(exc: BaseException) -> str:
    """``"Type: message"`` on one line (errors from libraries may span several)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def missing_data(
    dataset: str, searched: Sequence[Path | str], *, download: bool, what: str = "", source: str = "",
    location: str = "data.root", root: Path | None = None,
) -> DataError:
    """The one-line "not found" error: which dataset, every path searched, and how to fix it.

    ``download``: whether ``data.download=true`` can fetch it; ``source``: where to get it by hand otherwise;
    ``location``: the key that says where it is (an absolute ``data.folder`` makes ``data.root`` moot);
    ``root``: the expanded ``data.root`` the paths were searched under, whose subfolders are looked in for
    them (the data one level down: ``~/data/cifar10/cifar-10-batches-py`` with ``data.root=~/data``).
    """
    paths = ", ".join(str(p) for p in searched)
    if any(isinstance(p, Path) and not p.is_absolute() for p in searched):
        # (a recipe's `extends` is its own folder's, its data paths are not: say which folder they were from)
        paths += f", from the current directory {Path.cwd()}, not the recipe's folder"
    detail = f" {what}" if what else ""
    for path in searched:
        # data.root pointed at the dataset's own folder (cifar-10-batches-py/, stl10_binary/, celeba/): the
        # folder searched for is then named twice in a row, and the folder that holds it is one level up
        # (the data are there: a download or another dataset is no fix)
        if isinstance(path, Path) and path.name == path.parent.name and path.parent.is_dir():
            return DataError(f"dataset '{dataset}'{detail} not found: {location} {path.parent} is the {path.name} "
                             f"folder itself; set {location}={path.parent.parent}, the folder that holds it")
    below = _one_level_down(root, searched) if root is not None else None
    if below is not None:  # (the data are there: the root is the fix, not a download)
        return DataError(f"dataset '{dataset}'{detail} not found in {location} {root}, but it is in {below}: "
                         f"set {location}={below}")
    packed = _unextracted_archive(dataset, searched)
    if packed is not None:  # (the data are there, packed: extracting is the fix, not another root or a download)
        archive, into = packed
        where = "where it is" if into == archive.parent else f"into {into}"
        return DataError(f"dataset '{dataset}'{detail} not found (searched: {paths}), but {archive} is there, not "
                         f"extracted: extract it {where} ({_extract_command(archive, into)})")
    fixes = [f"set {location}=<the folder that holds it>"]
    if download:
        fixes.append("set data.download=true to fetch it (needs network)")
    elif source:
        fixes.append(f"get it from {source} (data.download cannot fetch it)")
    fallback = _SUGGEST_FALLBACK.get()
    if fallback:
        fixes.append(f"or use the built-in offline data with --set data.name={fallback}")
    return DataError(f"dataset '{dataset}'{detail} not found (searched: {paths}); {', '.join(fixes)}")


#: at most this many entries of data.root are looked through for the dataset one level down (a root holding a
#: whole image collection would otherwise be listed at length for an error message)
_SUBFOLDERS_LOOKED_IN = 256


def _one_level_down(root: Path, searched: Sequence[Path | str]) -> Path | None:
    """The subfolder of ``root`` that holds what was searched for under ``root`` (the first path of ``searched``
    found there, file or folder as it was looked for), or None. Hidden folders are skipped."""
    wanted = []
    for path in searched:
        if isinstance(path, Path):
            try:
                wanted.append(path.relative_to(root))
            except ValueError:  # (an absolute path of its own, e.g. data.folder)
                continue
    if not wanted or not root.is_dir():
        return None
    try:
        with os.scandir(root) as entries:
            subfolders = sorted(Path(e.path) for e in itertools.islice(entries, _SUBFOLDERS_LOOKED_IN)
                                if not e.name.startswith(".") and e.is_dir())
    except OSError:  # (unreadable: the plain "not found" says enough)
        return None
    for relative in wanted:
        for folder in subfolders:
            # os.path.exists, not Path.exists: that raises PermissionError (Python 3.11) for a subfolder this user
            # cannot read, e.g. lost+found in a file system's root
            if os.path.exists(folder / relative):
                return folder
    return None


#: dataset -> (its official archive, the folder that archive unpacks to, relative to data.root): only these are
#: named, by their exact names (a substring would take cifar-100-python.tar.gz for cifar10's)
_ARCHIVES: dict[str, tuple[str, str]] = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
    "stl10": ("stl10_binary.tar.gz", "stl10_binary"),
    "celeba": ("img_align_celeba.zip", "celeba/img_align_celeba"),
}


def _unextracted_archive(dataset: str, searched: Sequence[Path | str]) -> tuple[Path, Path] | None:
    """(archive, the folder to unpack it into) when ``dataset``'s official archive lies, not extracted, in the
    data.root of a path searched or in the folder it unpacks into (``celeba/`` for img_align_celeba.zip), else
    None. Only those two folders are looked in (not the folders above a data.root that does not exist: unpacking
    an archive there would not make the data found), each by one stat."""
    if dataset not in _ARCHIVES:
        return None
    name, unpacked = _ARCHIVES[dataset]
    depth = len(Path(unpacked).parts)
    for path in searched:
        path = Path(path)
        # the searched path that is, or lies in, the unpacked folder: data.root is `depth` levels above it
        tops = [q for q in (path, *path.parents) if len(q.parts) > depth and q.parts[-depth:] == Path(unpacked).parts]
        if not tops:
            continue
        into = tops[0].parent  # where the archive's own top folder lands
        root = tops[0].parents[depth - 1]
        for holder in dict.fromkeys((into, root)):
            if (holder / name).is_file():
                return holder / name, into
    return None


def _extract_command(archive: Path, into: Path) -> str:
    """The shell command that unpacks ``archive`` into the folder ``into``."""
    where = shlex.quote(str(into))
    if archive.name.lower().endswith(".zip"):
        return f"unzip {shlex.quote(str(archive))} -d {where}"
    return f"tar xf {shlex.quote(str(archive))} -C {where}"
