"""What the user-facing docs show must work as shown."""

from __future__ import annotations

import re
from pathlib import Path

from avade.recipe import load_recipe

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_toml_examples_are_valid_recipes(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    for i, text in enumerate(blocks):
        path = tmp_path / f"readme_{i}.toml"
        path.write_text(text, encoding="utf-8")
        load_recipe(path)  # valid TOML, known keys and values
