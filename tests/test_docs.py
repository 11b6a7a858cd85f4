"""What the user-facing docs show must work as shown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from avade.recipe import load_recipe

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_toml_examples_are_valid_recipes(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    for i, text in enumerate(blocks):
        path = tmp_path / f"readme_{i}.toml"
        path.write_text(text, encoding="utf-8")
        load_recipe(path)  # valid TOML, known keys and values


def test_readme_switching_a_component_by_set_starts_its_table_afresh() -> None:
    """README (Recipes): `--set model.flow.name=glow` builds Glow's defaults, not the former flow's
    `scales = 1`; a later `--set` sets the new one's options; `[data]` keeps only its loader keys."""
    import attrs

    from avade.recipe.schema import DataOptions

    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "`--set model.flow.name=glow` builds Glow's defaults, not `scales = 1`" in text
    quickstart = README.parent / "recipes" / "quickstart.toml"
    assert load_recipe(quickstart).model.flow.config.scales == 1
    glow = load_recipe(quickstart, ["model.flow.name=glow"]).model.flow.config
    assert glow.scales == type(glow)().scales != 1
    assert load_recipe(quickstart, ["model.flow.name=glow", "model.flow.scales=1"]).model.flow.config.scales == 1
    kept = {f.name for f in attrs.fields(DataOptions)} - {"name"}
    assert kept == {"batch_size", "eval_batch_size", "num_workers", "n_bits"}
    assert all(f"`{k}`" in text for k in kept)


def _commands() -> list[tuple[list[str], Any]]:
    """Every command and subcommand of the CLI as (argv prefix, click command), the root first."""
    import typer

    from avade.cli.app import app

    found: list[tuple[list[str], Any]] = []

    def walk(prefix: list[str], command: Any) -> None:
        found.append((prefix, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk([*prefix, name], sub)

    walk([], typer.main.get_command(app))
    return found


def test_every_cli_option_has_help_and_shows_it_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--help` of every command shows each option's help text as written: a help text with brackets
    (`uint8 [n, H, W, C]`, `[eval.bpd]`) must not be eaten as rich markup, and no option goes unexplained."""
    import typer.rich_utils
    from typer.testing import CliRunner

    from avade.cli.app import app

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 400)  # long lines: help text wraps less

    def flat(text: str) -> str:  # help texts write a literal "[" as "\\[" (rich markup)
        text = text.replace("\\[", "[")
        return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())

    for prefix, command in _commands():
        result = CliRunner().invoke(app, [*prefix, "--help"])
        assert result.exit_code == 0, (prefix, result.output)
        shown = flat(result.output)
        assert flat(command.help or "") in shown, prefix
        for param in command.params:
            if param.name == "help":
                continue
            assert param.help, f"avade {' '.join(prefix)}: {param.name} has no help text"
            assert flat(param.help) in shown, (prefix, param.name, param.help)


@pytest.mark.parametrize("argv", [["recipe", "run", "absent.toml"], ["eval", "absent-run"], ["sample", "absent-run"]])
def test_device_help_lists_what_the_command_accepts(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`--device`'s help names every value the command accepts, no more: `eval` and `sample` take `cuda:N`
    too (a run evaluated on a chosen GPU); `recipe run` does not (torchrun's LOCAL_RANK picks it)."""
    from typer.testing import CliRunner

    from avade.cli.app import app

    command = dict((tuple(p), c) for p, c in _commands())[tuple(argv[:-1])]
    (option,) = [p for p in command.params if p.name == "device"]
    in_help = {v.strip() for v in option.help.split("(")[0].split("|")}
    result = CliRunner().invoke(app, [*argv, "--device", "tpu"])
    assert result.exit_code == 2, result.output
    accepted = re.search(r"--device: expected (.*), got 'tpu'", result.stderr)
    assert accepted, result.stderr
    assert in_help == set(re.split(r", | or ", accepted.group(1)))


def test_readme_abridged_recipe_agrees_with_the_recipe_it_abridges() -> None:
    """Every value of README's "abridged from recipes/av_ade_wg_rd.toml" block is the recipe's own."""
    import tomllib

    from avade.recipe import recipe_to_dict

    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    (block,) = [b for b in blocks if b.startswith("# abridged from ")]
    source = README.parent / block.splitlines()[0].removeprefix("# abridged from ").strip()
    full = recipe_to_dict(load_recipe(source))

    def compare(shown: dict[str, Any], actual: dict[str, Any], path: str) -> None:
        for key, value in shown.items():
            if isinstance(value, dict):
                compare(value, actual.get(key, {}), f"{path}{key}.")
            else:
                assert actual.get(key) == value, f"README: {path}{key} = {value!r}; {source.name}: {actual.get(key)!r}"

    compare(tomllib.loads(block), full, "")


def test_readme_components_table_lists_exactly_the_builtins() -> None:
    """README's Components table: each kind's row names every built-in component of that kind, and no other."""
    from avade.registry import BUILTIN_DIST, get_registry

    text = README.read_text(encoding="utf-8")
    table = text.split("## Components", 1)[1].split("\n\n")[1].splitlines()[2:]
    registry = get_registry()
    seen = set()
    for line in table:
        kinds, names = (cell.strip() for cell in line.strip().strip("|").split("|"))
        for kind in (k.strip() for k in kinds.split("/")):
            seen.add(kind)
            builtin = {i.name for i in registry.list(kind=kind) if i.dist == BUILTIN_DIST}
            assert set(re.findall(r"`([a-z0-9-]+)`", names)) == builtin, kind
    assert seen == {i.kind for i in registry.list() if i.dist == BUILTIN_DIST}


def test_every_recipe_path_the_docs_name_exists() -> None:
    root = README.parent
    for doc in (README, root / "CONTRIBUTING.md", root / "benchmarks" / "README.md"):
        for path in re.findall(r"recipes/[\w/]+\.toml", doc.read_text(encoding="utf-8")):
            assert (root / path).is_file(), f"{doc.name} names {path}, which does not exist"


def test_every_option_the_docs_show_exists() -> None:
    """Each `avade ...` line in README's and CONTRIBUTING's shell blocks (and the recipes' comments) names a
    real command, and each option it shows (optional ones in [brackets] too) is one of that command's."""
    commands = {tuple(prefix): command for prefix, command in _commands()}
    root = README.parent
    checked = 0
    recipes = sorted((root / "recipes").rglob("*.toml"))
    for doc in (README, root / "CONTRIBUTING.md", root / "scripts" / "quickstart.sh", *recipes):
        text = doc.read_text(encoding="utf-8")
        if doc.suffix == ".toml":  # the commands its comments show
            text = "\n".join(ln for ln in text.splitlines() if ln.lstrip().startswith("#"))
        blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S) if doc.suffix == ".md" else [text]
        for line in (ln for block in blocks for ln in block.splitlines()):
            line = line.split(" #")[0]
            found = re.search(r"(?:^|\s|/)avade\s+(.*)", line)
            if not found or "pip install" in line:
                continue
            words = found.group(1).split()
            prefix: list[str] = []
            while tuple([*prefix, words[0]]) in commands if words else False:
                prefix.append(words.pop(0))
            assert prefix, f"{doc.name}: {line!r} names no avade command"
            command = commands[tuple(prefix)]
            assert not getattr(command, "commands", None), f"{doc.name}: {line!r}: no such subcommand"
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
            known |= {opt for p in commands[()].params for opt in (*p.opts, *p.secondary_opts)}
            for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", " ".join(words)):
                assert option in known, f"{doc.name}: {line.strip()!r}: avade {' '.join(prefix)} has no {option}"
            checked += 1
    assert checked >= 20


def test_every_python_function_the_docs_name_exists_with_the_keywords_shown() -> None:
    """README's and CONTRIBUTING's `avade.module.function(..., key=...)` references name real functions
    (imported as a notebook would), and each keyword they show is one of its parameters."""
    import importlib
    import inspect

    root = README.parent
    checked = 0
    for doc in (README, root / "CONTRIBUTING.md"):
        text = doc.read_text(encoding="utf-8")
        for dotted, args in re.findall(r"\b(avade(?:\.\w+)+)\(([^()`]*(?:\([^()`]*\)[^()`]*)*)\)", text):
            parts = dotted.split(".")
            obj: Any = None
            for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                for name in parts[i:]:
                    assert hasattr(obj, name), f"{doc.name}: {dotted}: {obj.__name__} has no {name!r}"
                    obj = getattr(obj, name)
                break
            assert callable(obj), f"{doc.name}: {dotted} is not callable"
            params = inspect.signature(obj).parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
            for key in re.findall(r"(?:^|,)\s*(\w+)=", args):
                assert takes_any or key in params, f"{doc.name}: {dotted}() has no parameter {key!r}"
            checked += 1
    assert checked >= 4


def test_resume_help_says_where_it_resumes_without_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recipe run --resume` without `--out` resumes the newest run under runs/<recipe>/: its help says so."""
    from typer.testing import CliRunner

    from avade.cli.app import app

    (option,) = [p for p in dict((tuple(p), c) for p, c in _commands())[("recipe", "run")].params
                 if p.name == "resume"]
    assert "without --out: the newest run under runs/<recipe>/" in option.help
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["recipe", "run", str(README.parent / "recipes" / "quickstart.toml"), "--resume"])
    assert result.exit_code == 2 and "no earlier run of 'quickstart' under runs/" in result.stderr, result.output


def test_sample_checkpoint_all_says_it_is_evals(tmp_path: Path) -> None:
    """`--checkpoint all` (eval's, in README) given to `avade sample`: one line naming the difference, not
    "no such checkpoint" as if 'all' were a step."""
    from typer.testing import CliRunner

    from avade.cli.app import app

    result = CliRunner().invoke(app, ["sample", str(tmp_path), "--checkpoint", "all"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == ("error: --checkpoint all is avade eval's (a metric against training steps); "
                                     "avade sample takes one checkpoint: --checkpoint STEP, or leave it out for "
                                     "the newest")


def test_readme_torch_versions_are_the_ones_pinned_and_accepted() -> None:
    """README's PyTorch paragraph: what scripts/setup.sh installs and what pyproject.toml accepts."""
    import tomllib

    root = README.parent
    text = " ".join(README.read_text(encoding="utf-8").split())
    setup = (root / "scripts" / "setup.sh").read_text(encoding="utf-8")
    pins = dict(re.findall(r'"(torch|torchvision)==([\d.]+)"', setup))
    assert f"`torch=={pins['torch']}` / `torchvision=={pins['torchvision']}`" in text
    deps = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    bounds = {m[1]: (m[2], m[3]) for d in deps if (m := re.fullmatch(r"(torch|torchvision)>=([\d.]+),<=([\d.]+)", d))}
    assert f"accepts torch {bounds['torch'][0]} to {bounds['torch'][1]}" in text
    assert f"(torchvision {bounds['torchvision'][0]} to {bounds['torchvision'][1]})" in text
    assert bounds["torch"][1] == pins["torch"] and bounds["torchvision"][1] == pins["torchvision"]


def test_help_names_what_each_argument_takes() -> None:
    """`eval` takes a sweep's --out as well as a run (README: one row per variant); `doctor --set` changes
    the --recipe it checks, and is refused without one."""
    commands = {tuple(p): c for p, c in _commands()}
    (run_dir,) = [p for p in commands[("eval",)].params if p.name == "run_dir"]
    assert "a sweep's --out" in run_dir.help
    (overrides,) = [p for p in commands[("doctor",)].params if p.name == "overrides"]
    assert "--recipe" in overrides.help


def test_references_to_readme_sections_name_real_sections() -> None:
    """A comment such as "(README, Components)" points at a `## Components` heading that exists."""
    root = README.parent
    headings = set(re.findall(r"^## (.+)$", README.read_text(encoding="utf-8"), flags=re.M))
    files = [*root.glob("recipes/**/*.toml"), *root.glob("avade/**/*.py"), root / "CONTRIBUTING.md"]
    for path in files:
        for section in re.findall(r"README, ([A-Z][\w ]*)", path.read_text(encoding="utf-8")):
            assert any(h.startswith(section.strip()) for h in headings), f"{path.name}: no README section {section!r}"


def _doc_command_lines() -> list[tuple[str, list[str]]]:
    """(doc name, the words after `avade`) of every `avade ...` command line the docs show: README's and
    CONTRIBUTING's bash blocks, scripts/quickstart.sh, and the recipes' comments."""
    import shlex

    root = README.parent
    found: list[tuple[str, list[str]]] = []
    recipes = sorted((root / "recipes").rglob("*.toml"))
    for doc in (README, root / "CONTRIBUTING.md", root / "scripts" / "quickstart.sh", *recipes):
        text = doc.read_text(encoding="utf-8")
        if doc.suffix == ".toml":
            text = "\n".join(ln.lstrip().removeprefix("#") for ln in text.splitlines() if ln.lstrip().startswith("#"))
        blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S) if doc.suffix == ".md" else [text]
        for line in (ln.split(" #")[0] for block in blocks for ln in block.splitlines()):
            command = re.search(r"(?:^|\s|/)avade\s+(.*)", line)
            if command and "pip install" not in line:
                found.append((doc.name, shlex.split(command.group(1))))
    return found


def test_every_set_the_docs_show_is_a_valid_override() -> None:
    """Each `--set KEY=VALUE` of a command the docs show names a real key with a valid value: applied to the
    recipe the command names (the recipes' own comments included), or for a run's `eval` / `sample` to
    recipes/quickstart.toml (what `runs/qs` was trained from). Placeholders (`KEY=VALUE`) are skipped."""
    root = README.parent
    checked = 0
    for doc, words in _doc_command_lines():
        overrides = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--set", "-s", "[--set")]
        overrides = [o.rstrip("]") for o in overrides if not o.split("=")[0].isupper()]
        if not overrides:
            continue
        recipe = next((w for w in words if w.endswith(".toml")), None)
        path = root / recipe if recipe and (root / recipe).is_file() else root / "recipes" / "quickstart.toml"
        if recipe and not (root / recipe).is_file() and words[0] in ("recipe", "doctor"):
            continue  # a recipe of the reader's own (my.toml)
        try:
            load_recipe(path, overrides)
        except Exception as exc:  # any failure: named with the doc and line
            pytest.fail(f"{doc}: avade {' '.join(words)}: {exc}")
        checked += 1
    assert checked >= 10


def test_help_paragraphs_are_rewrapped_to_the_terminal_not_broken_where_the_source_breaks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A command's docstring is wrapped at 120 columns in the source; --help (and its parent's list of commands)
    shows each paragraph wrapped to the terminal, not broken again at the source's line ends (ragged lines in
    an 80-column terminal)."""
    import typer.rich_utils
    from typer.testing import CliRunner

    from avade.cli.app import app

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 1000)  # room for any paragraph on one line

    def lines(text: str) -> list[str]:
        return [" ".join(re.sub(r"[│╭╮╰╯─]", " ", ln.replace("\\[", "[")).split()) for ln in text.splitlines()]

    for prefix, command in _commands():
        shown = lines(CliRunner(env={"COLUMNS": "1000"}).invoke(app, [*prefix, "--help"]).output)
        for paragraph in (" ".join(p.split()) for p in (command.help or "").split("\n\n")):
            assert any(paragraph in line for line in shown), (prefix, paragraph)
        if prefix:  # the parent's list of commands: the first paragraph on one line too
            parent = lines(CliRunner(env={"COLUMNS": "1000"}).invoke(app, [*prefix[:-1], "--help"]).output)
            first = " ".join((command.help or "").split("\n\n")[0].split())
            assert any(first in line for line in parent), (prefix, first)


def test_readme_names_every_fact_the_run_records_of_its_data(tmp_path: Path) -> None:
    # (state.json's data_read: a reviewer reads the run directory's paragraph to know what each key means)
    from fake_datasets import FAKE_DATASETS

    import avade
    from avade.data.base import data_source

    tests = Path(__file__).resolve().parent

    text = README.read_text()
    paragraph = text[text.index("## Run directory"):]
    paragraph = paragraph[:paragraph.index("\n## ")]
    assert "`data_read`" in paragraph
    for name, write in FAKE_DATASETS.items():
        write(tmp_path / name)
        cfg = {"root": str(tmp_path / name), **({"resolution": 32} if name == "imagenet" else {})}
        for key in data_source(avade.create("dataset", name, split="train", **cfg), name, None):
            assert f"`{key}`" in paragraph, f"README's run-directory paragraph does not name {key!r} ({name})"
    for name in ("natural-patches", "digits", "synthetic"):  # the built-in data read from no folder (the versions of
        # the wheels they ship in)
        for key in data_source(avade.create("dataset", name, split="test", resolution=8), name, None):
            assert f"`{key}`" in paragraph, f"README's run-directory paragraph does not name {key!r} ({name})"
    row = next(line for line in (tests.parent / "CONTRIBUTING.md").read_text().splitlines()
               if line.startswith("| dataset |"))
    assert "`data_source`" in row and "`data_read`" in row


def test_readme_names_each_dataset_s_own_facts_in_its_own_item(tmp_path: Path) -> None:
    # (the list of "the dataset's own facts" named `layout` under three datasets only: cifar10's and stl10's were
    # left out, so a reader took them for datasets that record none)
    from fake_datasets import FAKE_DATASETS

    import avade
    from avade.data.base import data_source

    text = README.read_text()
    facts = text[text.index("The dataset's own facts:"):]
    facts = facts[:facts.index("\n\n", facts.index("\n- "))]
    items = re.split(r"\n- ", facts)[1:]
    common = {"dataset", "images", "paths", "resolved"}
    for name, write in FAKE_DATASETS.items():
        write(tmp_path / name)
        cfg = {"root": str(tmp_path / name), **({"resolution": 32} if name == "imagenet" else {})}
        own = set(data_source(avade.create("dataset", name, split="train", **cfg), name, None)) - common
        (item,) = [i for i in items if i.startswith((f"{name}:", f"`{name}`"))]
        assert all(f"`{key}`" in item for key in own), (name, own, item)
    for name in ("natural-patches", "digits"):
        own = set(data_source(avade.create("dataset", name, split="test", resolution=8), name, None)) - common
        (item,) = [i for i in items if f"`{name}`" in i.split(":")[0]]
        assert all(f"`{key}`" in item for key in own), (name, own, item)
