"""Reading the pickles some datasets ship as (CIFAR-10, Downsampled ImageNet) without running code: only
builtins and numpy arrays are rebuilt. avade's own files never use pickle."""

from __future__ import annotations

import codecs
import pickle
from typing import Any, ClassVar

import numpy as np

__all__ = ["ArrayUnpickler"]


_RECONSTRUCT = np.empty(0).__reduce__()[0]


def _ndarray_class(*args: Any, **kwargs: Any) -> np.ndarray:
    """What ``numpy.ndarray`` names in a data file: only an argument of ``_reconstruct`` (the array's class).
    Called itself, ``ndarray(shape, dtype)`` would allocate any shape, unfilled, as ``_reconstruct`` would."""
    raise pickle.UnpicklingError("numpy.ndarray(...) called to build an array is not allowed in a data file "
                                 "(arrays are pickled empty, then filled)")


def _empty_array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` as arrays pickle it: an empty array (``shape (0,)``), then filled by its state.
    Any other shape would allocate it, unfilled: a file of a few bytes could ask for terabytes."""
    if subtype not in (_ndarray_class, np.ndarray) or not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError(f"numpy _reconstruct of shape {shape!r:.40} is not allowed in a data file "
                                     "(arrays are pickled empty, then filled)")
    return _RECONSTRUCT(np.ndarray, shape, dtype)


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles builtins and numpy arrays only: any other global (a function to call, a class to build)
    is refused, so a crafted file cannot run code. Dataset releases in pickle form (CIFAR-10's batches,
    Downsampled ImageNet's) hold dicts of arrays, lists and strings."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy", "ndarray"): _ndarray_class,  # (the class as _reconstruct's argument, never called)
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
        **{
            (f"{package}.{module}", name): obj
            for package in ("numpy.core", "numpy._core")  # numpy 1 and numpy 2 write different paths
            for module, name, obj in (
                ("multiarray", "_reconstruct", _empty_array),
                ("multiarray", "scalar", np.int64(0).__reduce__()[0]),
                ("numeric", "_frombuffer", np.empty(0).__reduce_ex__(5)[0]),  # protocol 5
            )
        },
    }

    def find_class(self, module: str, name: str) -> Any:
        """Only the numpy array classes in ``_ALLOWED``: anything else in a data file is refused, not run."""
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a data file") from None
