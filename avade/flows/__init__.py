"""Package placeholder; filled in by its component modules."""


def register(registry):
    """Register this package's components."""

