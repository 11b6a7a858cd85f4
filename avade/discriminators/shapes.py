"""Checks shared by discriminators: the image shape they are built for and the labels they receive."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import is_fake

from avade.discriminators.configs import positive_ints as positive_ints
from avade.errors import ConfigError, DataError


def check_in_shape(in_shape: tuple[int, int, int], name: str) -> tuple[int, int, int]:
    """``in_shape`` as a tuple of three positive ints, or a ConfigError saying what is wrong."""
    try:
        shape = tuple(int(s) for s in in_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"in_shape must be (channels, height, width) of positive ints, got {in_shape!r}",
                          path=f"discriminator.{name}")
    return shape  # type: ignore[return-value]


def check_labels(y: torch.Tensor, batch: int, num_classes: int, name: str) -> torch.Tensor:
    """Class labels as a long tensor ``[B]`` in ``[0, num_classes)``; a DataError otherwise.

    Checked here because an out-of-range index in an embedding is a device-side assert on CUDA,
    which names neither the labels nor the discriminator.
    """
    if y.dim() != 1 or y.shape[0] != batch:
        raise DataError(f"discriminator '{name}': labels must have shape [{batch}], got {list(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise DataError(f"discriminator '{name}': labels must be integer class ids, got dtype {y.dtype}")
    if not y.numel() or is_fake(y):  # (fake tensors, which count a step's activations: no values to check)
        return y.long()
    if y.device.type == "cpu" and not torch.compiler.is_compiling():
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise DataError(f"discriminator '{name}': labels must lie in [0, {num_classes}), "
                            f"got min {int(y.min())} and max {int(y.max())}; check data.num_classes")
    elif not torch.compiler.is_compiling():
        # On a GPU the range check above would be two host syncs per call (the trainer's labels were
        # already checked on the CPU, as each batch was loaded): asserted on the device instead.
        torch._assert_async(((y >= 0) & (y < num_classes)).all(),
                            f"discriminator '{name}': labels must lie in [0, {num_classes})")
    return y.long()
