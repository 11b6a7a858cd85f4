"""Deterministic, resumable batches: the order of batch ``step`` depends only on (seed, step).

Epoch e visits the training set in the order ``randperm(N)`` seeded by ``(seed, e)``; the last incomplete batch is
dropped. Batch ``step`` can therefore be produced without replaying earlier ones, which is what makes
resuming exact. Under data parallelism each rank takes its slice of the same global batch.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
from collections.abc import Generator, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from avade.errors import AvadeError, ConfigError, DataError, minutes_setting
from avade.train.preemption import ignore_stop_signals


def refuse_while_a_worker_starts(what: str) -> None:
    """Refuse to ``what`` in a process that is still starting (``spawn``/``forkserver``: the default start
    method on macOS and Windows, which runs the parent's main script again in each DataLoader worker): a
    script that trains or evaluates without ``if __name__ == "__main__":`` would otherwise start that work
    again in every worker, which fails with an error that names something else (the run directory's lock, a
    worker that "exited unexpectedly") or spawns workers of its own."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ConfigError(f"avade was asked to {what} while a worker process was starting: under the 'spawn' "
                          "start method (the default on macOS and Windows) each DataLoader worker runs the main "
                          "script again; put the script's avade calls under `if __name__ == \"__main__\":`, or "
                          "set data.num_workers = 0")


#: How long a loader waits for its workers' next batch before taking them for stuck (minutes; environment).
DATA_TIMEOUT_ENV = "AVADE_DATA_TIMEOUT_MIN"
DEFAULT_DATA_TIMEOUT_MIN = 30.0
#: The longest timeout a loader can take (its queues wait by ``poll``, in milliseconds held in a C int: some 24.8
#: days; a longer one fails the first batch with an OverflowError). A longer setting is cut to it: as good as none.
MAX_DATA_TIMEOUT_S = float((2**31 - 1) // 1000)


def worker_timeout_s(num_workers: int) -> float:
    """DataLoader's ``timeout`` for ``num_workers`` workers: ``$AVADE_DATA_TIMEOUT_MIN`` minutes (default 30) in
    seconds, 0 without workers (a read in this process cannot be timed out). Why: a worker stuck in a dataset's
    ``__getitem__`` (storage that stopped answering) would otherwise hold a run, and its allocation, forever
    without a word. The time is per batch, and the workers read ahead, so it only has to exceed the slowest
    batch's reading. At most :data:`MAX_DATA_TIMEOUT_S` (a larger setting, e.g. to wait for ever, is cut to it)."""
    if not num_workers:
        return 0.0
    minutes = minutes_setting(DATA_TIMEOUT_ENV, DEFAULT_DATA_TIMEOUT_MIN, "the data loader's timeout")
    return min(60.0 * minutes, MAX_DATA_TIMEOUT_S)


#: The most loader workers ``data.num_workers = "auto"`` starts (beyond it a decoded batch waits on the step).
MAX_AUTO_WORKERS = 8


def resolve_num_workers(setting: int | str, in_memory: bool, device: torch.device | None) -> int:
    """The DataLoader workers of ``data.num_workers = setting`` (an int is itself).

    ``"auto"`` is 0 when the data are held as tensors (no DataLoader is used: batches are indexed from them),
    when the device is the CPU (the step itself runs on the cores the workers would take, and decoding is
    not what limits it there: some 2,400 images/s decoded in the training process against some 90/s
    trained) and on any device but CUDA (Apple's MPS runs on macOS, whose workers start by ``spawn``: a script
    without a ``__main__`` guard or a dataset that does not pickle would fail where 0 workers worked); else one
    worker per CPU of this process (:func:`~avade.data.base.process_cpus`: its affinity,
    shared by a node's torchrun processes) less the one the process itself runs on, at least 1 and at most
    :data:`MAX_AUTO_WORKERS`, so that decoding files does not hold back a fast accelerator's step. Workers
    change where batches are decoded, never what they hold."""
    if setting != "auto":
        return int(setting)
    if in_memory or device is None or torch.device(device).type != "cuda":
        return 0
    from avade.data.base import process_cpus

    return min(MAX_AUTO_WORKERS, max(1, process_cpus() - 1))


class _StepSampler(Sampler[list[int]]):
    def __init__(self, stream: BatchStream, start: int) -> None:
        self.stream, self.start = stream, start

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.stream.indices(step).tolist()
            step += 1


class BatchStream:
    """Batches of (uint8 images, int64 labels) for training steps 0, 1, 2, ..."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 num_workers: int | str = 0, device: torch.device | None = None) -> None:
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        if batch_size % world:
            raise ConfigError(f"batch size {batch_size} is not divisible by the {world} processes",
                              path="data.batch_size")
        if self.n < batch_size:
            raise ConfigError(f"the training split has {self.n} images, fewer than one batch of {batch_size}; "
                              "lower data.batch_size", path="data.batch_size")
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.per_rank = batch_size // world
        self.per_epoch = self.n // batch_size
        self.device = device or torch.device("cpu")
        self._perm: tuple[int, torch.Tensor] | None = None
        # (a dataset may offer other tensors for training, e.g. data.n_bits' unposterized ones: the model
        # quantizes its input itself)
        tensors = getattr(dataset, "training_tensors", getattr(dataset, "as_tensors", lambda: None))()
        self._tensors = tensors
        self.num_workers = resolve_num_workers(num_workers, tensors is not None, self.device)

    def _epoch_perm(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices of this rank's share of global batch ``step``."""
        epoch, j = divmod(step, self.per_epoch)
        start = j * self.batch_size + self.rank * self.per_rank
        return self._epoch_perm(epoch)[start:start + self.per_rank]

    def batches(self, start: int) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
        """Batches for steps ``start, start + 1, ...`` on the stream's device: a generator, whose ``close()``
        ends the loader's workers (see :func:`from_workers`)."""
        return self._batches(start, self.num_workers)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``step`` alone, as :meth:`batches` gives it, read in this process: starting the
        loader's workers (and their prefetching) for one batch would cost more than it saves."""
        with contextlib.closing(self._batches(step, 0)) as batches:
            return next(batches)

    def _batches(self, start: int, workers: int) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
        pin = self.device.type == "cuda"
        if self._tensors is not None:
            images, labels = self._tensors
            step = start
            while True:
                idx = self.indices(step)
                x, y = images[idx], labels[idx]
                yield x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)
                step += 1
        # An explicit generator: creating the iterator must not draw from the global RNG (exact resume).
        loader: Any = DataLoader(self.dataset, batch_sampler=_StepSampler(self, start),
                                 num_workers=workers, pin_memory=pin, persistent_workers=workers > 0,
                                 worker_init_fn=ignore_stop_signals, timeout=worker_timeout_s(workers),
                                 generator=torch.Generator().manual_seed(self.seed))
        classes = int(getattr(self.dataset, "num_classes", 0))
        for x, y in from_workers(loader):
            y = torch.as_tensor(y)
            _check_batch(x, y, classes)  # items read from files: checked as they arrive (on the CPU)
            yield x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)


def from_workers(loader: DataLoader) -> Generator[Any, None, None]:
    """The batches of ``loader``, whose workers end with this iteration however it ends (they ignore stop
    signals, so a worker left running would hang the process at exit, where multiprocessing joins its
    children after a SIGTERM). A worker's error that fails the iteration holds the loader's iterator in its
    traceback, so closing the generator alone would not end them. An avade error raised in a worker comes
    out as itself: torch re-raises it as "Caught DataError in DataLoader worker process 0" followed by the
    worker's traceback, which is no one-line error. A batch that does not come within the loader's
    ``timeout`` (:func:`worker_timeout_s`) is a :class:`DataError` naming :data:`DATA_TIMEOUT_ENV`; a worker
    still stuck when the loader ends (past DataLoader's SIGTERM, which the workers ignore) is killed."""
    if loader.num_workers:
        refuse_while_a_worker_starts("load data with workers")
    batches = iter(loader)
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except AvadeError as exc:
                unwrapped = _from_worker(exc)
                if unwrapped is exc:  # raised in this process (num_workers = 0): as it is, its cause kept
                    raise
                raise unwrapped from None
            except RuntimeError as exc:
                if loader.timeout and str(exc).startswith("DataLoader timed out"):
                    raise DataError(_stuck_workers(loader)) from None
                raise
            yield batch
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # (the multi-process iterator's own cleanup)
        if callable(shutdown):
            shutdown()
        for worker in getattr(batches, "_workers", ()):
            if worker.is_alive():  # stuck in __getitem__: SIGTERM is ignored (ignore_stop_signals)
                worker.kill()
                worker.join(timeout=5)


def _stuck_workers(loader: DataLoader) -> str:
    """The one-line error of a loader whose workers sent no batch within its timeout."""
    return (f"no batch came from the data loader's {loader.num_workers} worker process(es) in {loader.timeout / 60:g} "
            f"minutes ({DATA_TIMEOUT_ENV}): one is stuck reading the dataset (storage that stopped answering, such as "
            "a network file system under data.root?) and they were stopped; run again once it answers (a training "
            f"run: with --resume), or raise {DATA_TIMEOUT_ENV} if a batch can take that long to read")


def _from_worker(exc: AvadeError) -> AvadeError:
    """``exc`` with the one-line message it had in the worker, when torch wrapped it (else ``exc`` itself)."""
    text = str(exc)
    if not (text.startswith("Caught ") and "DataLoader worker" in text.split("\n", 1)[0]):
        return exc
    last = text.rstrip().rsplit("\n", 1)[-1]  # "avade.errors.DataError: <the message>"
    name = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    message = last[len(name):] if last.startswith(name) else last
    try:
        return type(exc)(message)
    except Exception:  # a plugin's error class with other arguments
        return DataError(message)


def _check_batch(x: torch.Tensor, y: torch.Tensor, classes: int, what: str = "a training batch") -> None:
    from avade.data.validate import label_problem

    if x.dtype != torch.uint8:
        raise DataError(f"the dataset served {x.dtype} images in {what}; items must be uint8 (0..255)")
    problem = label_problem(y, classes)
    if problem:
        raise DataError(f"{what} of the dataset: {problem}")


def eval_batches(dataset: Dataset, batch_size: int, limit: int = 0, num_workers: int | str = 0,
                 device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The dataset in order, in batches (the last one may be short); ``limit`` batches at most (0 = all),
    from a fixed random subset when that leaves images out (see :func:`indexed_batches`)."""
    for _, x, y in indexed_batches(dataset, batch_size, limit, num_workers, device=device):
        yield x, y


def subset_indices(n: int, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` of the indices ``0..n-1``, drawn at random (fixed by ``seed``) and sorted: a part of a
    dataset that stands for all of it. The first images would not: class-sorted datasets (image folders,
    one per class) would be represented by their first classes only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].sort().values


def indexed_batches(dataset: Dataset, batch_size: int, limit: int = 0, num_workers: int | str = 0,
                    shard: tuple[int, int] = (0, 1), seed: int = 0, device: torch.device | None = None
                    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(i, images, labels)`` for the dataset's batches (``limit`` at most, 0 = all), keeping only
    batches ``i = rank, rank + world, ...`` for ``shard = (rank, world)``: each process of a
    data-parallel job evaluates its share, and only its share is ever loaded. A ``limit`` that leaves
    images out takes its batches from a random subset (:func:`subset_indices` with ``seed``). Files are
    decoded by ``num_workers`` loader processes (:func:`resolve_num_workers` with ``device``, the one the
    batches are evaluated on)."""
    rank, world = shard
    n = len(dataset)  # type: ignore[arg-type]
    total = math.ceil(n / batch_size)
    count = min(total, limit) if limit else total
    keep = subset_indices(n, count * batch_size, seed) if count < total else None
    yield from _batches_of(dataset, keep, n, batch_size, range(rank, count, world), num_workers, device)


def _batches_of(dataset: Dataset, keep: torch.Tensor | None, n: int, batch_size: int, which: range,
                num_workers: int | str, device: torch.device | None
                ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Batches ``which`` of the images ``keep`` (all ``n`` when None), in that order."""
    tensors = getattr(dataset, "as_tensors", lambda: None)()
    if tensors is not None:
        images, labels = tensors
        for i in which:
            part = slice(i * batch_size, (i + 1) * batch_size)
            if keep is None:
                yield i, images[part], labels[part]
            else:
                yield i, images[keep[part]], labels[keep[part]]
        return
    order = keep.tolist() if keep is not None else range(n)
    sampler = [list(order[i * batch_size:(i + 1) * batch_size]) for i in which]
    workers = resolve_num_workers(num_workers, False, device)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, worker_init_fn=ignore_stop_signals,
                        timeout=worker_timeout_s(workers))
    classes = int(getattr(dataset, "num_classes", 0))
    for i, (x, y) in zip(which, from_workers(loader), strict=True):
        y = torch.as_tensor(y)
        _check_batch(x, y, classes, "an evaluation batch")  # items read from files, as for training batches
        yield i, x, y


def subset_batches(dataset: Dataset, n: int | None, batch_size: int, seed: int = 0, num_workers: int | str = 0,
                   device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` images of the dataset (all when None or more than it has), in batches: a random subset
    fixed by ``seed`` (:func:`subset_indices`), so that reference statistics computed from part of a
    dataset represent all of it. Files are decoded by ``num_workers`` loader processes (0: this one;
    ``"auto"``: :func:`resolve_num_workers` with ``device``, the one their features are computed on)."""
    total = len(dataset)  # type: ignore[arg-type]
    keep = subset_indices(total, n, seed) if n is not None and n < total else None
    count = len(keep) if keep is not None else total
    for _, x, y in _batches_of(dataset, keep, total, batch_size, range(math.ceil(count / batch_size)),
                                num_workers, device):
        yield x, y
