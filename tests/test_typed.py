"""avade's type hints reach the code that uses it (plugins, scripts): the package carries PEP 561's marker."""

from __future__ import annotations

from pathlib import Path

import avade


def test_the_package_ships_its_type_hints() -> None:
    # (without py.typed a type checker ignores an installed avade's hints: "missing library stubs or py.typed
    # marker", and every avade name is Any in a plugin's code)
    assert (Path(avade.__file__).parent / "py.typed").is_file()
