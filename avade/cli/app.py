"""``avade`` CLI: list-components, doctor, recipe check/show/run, eval, sample, study.

User errors (:class:`~avade.errors.AvadeError`) print one ``error: ...`` line and exit with code 2;
unexpected exceptions print one line too and exit 1 -- ``--debug`` shows the traceback before that line (the
exit status stays the same, so scripts can tell a user error from a bug with or without it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, overload

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from avade import __version__
from avade.errors import AvadeError, ConfigError, StoppedError, a_or_an, cli_flags, one_line

if TYPE_CHECKING:
    from avade.registry import PluginFailure

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_DEBUG = {"on": False}


def _print_json(data: Any) -> None:
    """Results as strict JSON on stdout: a non-finite number is null, as in eval.json (NaN is no JSON)."""
    from avade.train.rundir import json_safe

    print(json.dumps(json_safe(data), indent=2, allow_nan=False, default=str))


def _fail(message: str, code: int) -> NoReturn:
    # Escaped: a message quoting user text such as "[/x]" must not be read as rich markup.
    err.print(f"[bold red]error:[/] {escape(one_line(message))}", markup=True, highlight=False)
    raise typer.Exit(code)


try:  # recent Typer parses with its own copy of click, whose exceptions are not the `click` package's
    from typer._click.exceptions import NoArgsIsHelpError, NoSuchOption, UsageError
except ImportError:  # pragma: no cover - older Typer
    from click.exceptions import (  # type: ignore[assignment]  # (click's own, raised there)
        NoArgsIsHelpError,
        NoSuchOption,
        UsageError,
    )

_ROOT_OPTIONS = ("--debug", "--disable-plugins", "--version")  # avade's own, given before the command


def _usage_error(exc: Any) -> NoReturn:
    """A command-line mistake (unknown option, bad value) as one line, exit 2, as every other error."""
    if isinstance(exc, NoArgsIsHelpError):  # `avade recipe` alone: the help it asks for
        raise exc
    where = exc.ctx.command_path if exc.ctx is not None else "avade"
    if isinstance(exc, NoSuchOption) and exc.option_name in _ROOT_OPTIONS and where != "avade":
        # `avade eval RUN --debug`, as "rerun with --debug" invites: say where it goes
        given = {"--disable-plugins": "--disable-plugins NAMES"}.get(exc.option_name, exc.option_name)
        example = "avade --version" if given == "--version" else f"avade {given} {where.partition(' ')[2]} ..."
        _fail(f"{exc.option_name} is an option of avade itself: give it before the command, e.g. {example}", 2)
    _fail(f"{exc.format_message()} (see '{where} --help')", 2)


# The library's argument names (Python) -> the flags the commands take them by: inside a command, library errors
# name what the user typed (avade.errors.argument); from Python they name the argument.
CLI_FLAGS = {
    "batch_size": "--batch-size",
    "checkpoint": "--checkpoint",
    "device": "--device",
    "ema": "--ema/--no-ema",
    "importance_samples": "--importance-samples",
    "interpolations": "--interpolations",
    "label": "--class",
    "metrics": "--metrics",
    "n": "-n",
    "only": "--only",
    "output": "-o",
    "overrides": "--set",
    "reconstructions": "--reconstructions",
    "run_dir": "RUN_DIR",
    "samples": "--samples",
    "seed": "--seed",
    "steps": "--steps",
    "temperature": "--temperature",
}


def _unwrapped(text: str) -> str:
    """A docstring's paragraphs each on one line: rich help keeps single line breaks, so the source's wrapping at
    120 columns would show as ragged lines in an 80-column terminal; the terminal's own wrapping is wanted."""
    import inspect

    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


class _Group(typer.core.TyperGroup):
    """Turns errors into one line and an exit code (the traceback only with ``--debug``); shows each command's
    help rewrapped to the terminal (:func:`_unwrapped`)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        # (both the command's own --help and this group's list of commands get it from here)
        command = super().get_command(ctx, cmd_name)
        if command is not None and command.help:
            command.help = _unwrapped(command.help)
        return command

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            with cli_flags(CLI_FLAGS):  # library errors name the flags typed, not Python's argument names
                return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except UsageError as exc:  # a subcommand's own options
            _usage_error(exc)
        except BrokenPipeError:  # `avade ... | head`: the reader left; nothing to report
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush at exit
            raise typer.Exit(0) from None
        except StoppedError as exc:  # the conventional exit status of a process ended by that signal
            from avade.train.ranks import is_main_process

            code = 128 + signal.Signals[exc.signal_name]
            if not is_main_process():  # under torchrun rank 0 says it once for the job
                raise typer.Exit(code) from None
            _fail(str(exc), code)
        except AvadeError as exc:
            _debug_traceback()
            from avade.train.ranks import said_by_another_process

            if said_by_another_process(exc):  # under torchrun: said once for the job (or the node), not N times
                raise typer.Exit(2) from None
            _fail(str(exc), 2)
        except KeyboardInterrupt:
            from avade.train.ranks import is_main_process

            if not is_main_process():  # Ctrl-C reaches every process of a torchrun job (and torchrun passes it
                raise typer.Exit(130) from None  # on again): rank 0 says it once for the job
            _fail("interrupted", 130)
        except OSError as exc:  # a path that cannot be read or written: the environment, not avade
            _debug_traceback()
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or exc} ({_os_error_fix(exc)})", 2)
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("typer", "click"):
                raise
            _debug_traceback()
            _fail(*_unexpected(exc))


def _unexpected(exc: Exception) -> tuple[str, int]:
    """The one line (and exit status) for an exception no command named: whose it is when that can be told
    (another torchrun process's, the machine's memory, a plugin's, a broken installation's), else avade's bug.
    Each of those guesses may itself fail (torch half imported): the exception is never hidden by the
    handler's own."""
    from avade.train.ranks import job_failure

    failure = job_failure(exc)  # another process's failure (it says why), or a collective timed out
    if failure is not None:
        return failure, 1
    with contextlib.suppress(Exception):
        from avade.memory import GENERAL_FIX, as_out_of_memory

        memory = as_out_of_memory(exc, "", GENERAL_FIX)  # (where no command said what it was doing)
        if memory is not None:  # a GPU's or the host's: the machine's limit, not avade's bug
            return str(memory), 2
    from avade.blame import broken_import, plugin_at_fault
    from avade.registry import DISABLE_ENV

    culprit = plugin_at_fault(exc)
    if culprit:  # not avade's bug: name whose it is
        return (f"{culprit} failed: {type(exc).__name__}: {exc}; fix or disable that plugin (--disable-plugins "
                f"/ {DISABLE_ENV}; {_traceback_hint()})"), 1
    package, file = broken_import(exc)
    if package:
        where = f" (from {file})" if file else ""
        return (f"importing {package}{where} failed: {type(exc).__name__}: {exc}; its installation is broken (a "
                f"missing or mismatched library, a half-finished upgrade): reinstall it, e.g. pip install "
                f"--force-reinstall {_distribution_of(package)} ({_traceback_hint()})"), 1
    return f"internal error: {type(exc).__name__}: {exc} ({_traceback_hint()} and please report it)", 1


def _distribution_of(package: str) -> str:
    """The installed distribution that provides the top-level ``package`` (torch: ``torch``; PIL: ``pillow``)."""
    from importlib.metadata import packages_distributions

    with contextlib.suppress(Exception):
        found = packages_distributions().get(package)
        if found:
            return found[0]
    return package


def _debug_traceback() -> None:
    """With ``--debug``: the traceback of the exception being handled, on stderr (its one line follows)."""
    if _DEBUG["on"]:
        import traceback

        traceback.print_exc(file=sys.stderr)


def _traceback_hint() -> str:
    """Where a bug's traceback is: above, with ``--debug`` (rerunning with it would change nothing), else how to
    get it."""
    return "the traceback is above" if _DEBUG["on"] else "rerun with --debug for the traceback"


def _os_error_fix(exc: OSError) -> str:
    """What to do about an OSError of the file system (a full disk is no matter of permissions)."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space there, or write elsewhere; a run goes on from its last checkpoint with --resume"
    if exc.errno == errno.EROFS:
        return "that file system is mounted read-only: write elsewhere, or remount it writable"
    if exc.errno == errno.ENAMETOOLONG:
        return "a name in that path is longer than its file system allows: give a shorter one"
    return "check the path and its permissions"


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hybrid likelihood/adversarial generative image models (AV-ADE and relatives).")
recipe_app = typer.Typer(cls=_Group, no_args_is_help=True, pretty_exceptions_enable=False,
                         help="Check, show and run TOML recipes.")
study_app = typer.Typer(cls=_Group, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Evaluation studies from the paper.")
app.add_typer(recipe_app, name="recipe")
app.add_typer(study_app, name="study")


DEVICES = ("auto", "cpu", "cuda")


@overload
def _device(value: str, indexed: bool = False) -> str: ...


@overload
def _device(value: None, indexed: bool = False) -> None: ...


def _device(value: str | None, indexed: bool = False) -> str | None:
    """``value`` if it names a device avade runs on (case-insensitive; ``indexed``: ``cuda:N`` too, for
    commands that load a run), else a one-line error."""
    if value is None:
        return None
    name = value.lower()
    if name in DEVICES or (indexed and re.fullmatch(r"cuda:\d+", name)):
        return name
    allowed = ", ".join(DEVICES) + " or cuda:N" if indexed else ", ".join(DEVICES[:-1]) + f" or {DEVICES[-1]}"
    raise AvadeError(f"--device: expected {allowed}, got {value!r}")


def _check_output_folder(output: Path) -> None:
    """Before the work, not after it: a folder of ``output`` that is a file fails here in one line (else
    ``mkdir`` says "File exists" once every sample was drawn)."""
    for folder in output.parents:
        if folder.exists():
            if not folder.is_dir():
                raise AvadeError(f"-o: {folder} is a file, not a folder, so {output} cannot be written there; "
                                 "give another path")
            return


def _image_suffixes() -> set[str]:
    """File suffixes Pillow can write (what the grid is saved with)."""
    from PIL import Image

    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    err.print(f"[yellow]warning:[/] {escape(one_line(str(message)))}", markup=True, highlight=False)
    _plugin_traceback(getattr(message, "failure", None))


def _plugin_traceback(failure: PluginFailure | None) -> None:
    """With ``--debug``: the traceback of a plugin that failed to load (a
    :class:`~avade.registry.PluginFailure`), after its one-line warning, so that its author sees the file
    and line; without ``--debug`` (or with no exception kept) nothing."""
    text = failure.format_traceback() if _DEBUG["on"] and failure is not None else ""
    if text:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()


def _version(value: bool) -> None:
    if value:
        out.print(f"avade {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors and for plugins that "
                                                        "fail to load.")] = False,
    disable_plugins: Annotated[str, typer.Option("--disable-plugins", metavar="NAMES",
                                                 help="Comma-separated plugins not to load.")] = "",
) -> None:
    """Hybrid likelihood/adversarial generative image models."""
    _DEBUG["on"] = debug
    warnings.showwarning = _show_warning
    if disable_plugins:
        from avade.registry import DISABLE_ENV, reset_registry

        current = [p for p in os.environ.get(DISABLE_ENV, "").split(",") if p]
        os.environ[DISABLE_ENV] = ",".join(current + disable_plugins.split(","))
        reset_registry()


CheckpointOption = Annotated[str | None, typer.Option(
    "--checkpoint", metavar="STEP", help="The checkpoint of this step (e.g. 30000) instead of the newest.")]
EmaOption = Annotated[bool, typer.Option(
    "--ema/--no-ema", help="The averaged weights of a run trained with train.ema_decay (--no-ema: the last "
    "iterate).")]
SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE",
                                                     help="Override a recipe key (TOML value syntax).")]
RunSetOption = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="Override a key of the run's recipe that leaves the trained model as "
    "it is, e.g. data.root=/new/place or model.temperature=0.9 (TOML value syntax; not saved in the run).")]


# -- components --------------------------------------------------------------------------------------


@app.command("list-components")
def list_components(
    pattern: Annotated[str | None, typer.Argument(
        metavar="PATTERN", help="Glob on names, e.g. '*iaf*' or 'flow/*' (case-insensitive).")] = None,
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    schema: Annotated[bool, typer.Option("--schema", help="With --json: include each config schema (imports "
                                                          "the components).")] = False,
) -> None:
    """List registered components: kind, name, provider (distribution + version), summary."""
    from avade.registry import PluginWarning, get_registry

    if schema and not as_json:  # the table has no room for schemas: say so rather than drop the flag
        raise AvadeError("--schema adds each config schema to the JSON output: use it with --json "
                         "(avade list-components --json --schema)")

    with warnings.catch_warnings():  # failed plugins are listed once, after the table (or in the JSON)
        warnings.filterwarnings("ignore", message=r"plugin '.*' failed to load", category=PluginWarning)
        registry = get_registry()
    items = registry.list(kind=kind, pattern=pattern)
    # a name two plugins register is listed once per provider (unusable until one is disabled)
    listed = {(i.kind, i.name) for i in items}
    items = sorted([*items, *(other for key, infos in registry.conflicts.items() if key in listed
                              for other in infos[1:])], key=lambda i: (i.kind, i.name, i.dist))
    if as_json:
        rows = []
        for info in items:
            row: dict[str, Any] = {"kind": info.kind, "name": info.name, "dist": info.dist,
                                   "version": info.version, "summary": info.summary,
                                   "conflict": (info.kind, info.name) in registry.conflicts}
            if schema:
                from avade.schema import describe

                try:
                    cfg = info.load_config()
                except AvadeError as exc:  # one plugin's broken schema must not hide every other component
                    row["config"] = None
                    row["config_error"] = str(exc)
                    warnings.warn(str(exc), PluginWarning, stacklevel=1)
                else:
                    row["config"] = describe(cfg) if cfg is not None else []
            rows.append(row)
        failures = [{"dist": f.dist, "entry_point": f.entry_point, "reason": f.reason} for f in registry.failures]
        print(json.dumps({"components": rows, "failed_plugins": failures}, indent=2, default=str))
        return
    table = Table(title=f"avade components ({len(items)})", title_justify="left")
    for col in ("kind", "name", "provider", "summary"):
        table.add_column(col, overflow="fold")
    for info in items:
        clash = (info.kind, info.name) in registry.conflicts
        table.add_row(info.kind, info.name, escape(info.provider) + (" [red](conflict)[/]" if clash else ""),
                      escape(info.summary))
    out.print(table)
    for kind_, name_ in sorted({(i.kind, i.name) for i in items} & set(registry.conflicts)):
        providers = " and ".join(i.provider for i in registry.conflicts[(kind_, name_)])
        err.print(f"[red]{kind_} '{escape(name_)}' is provided by both {escape(providers)}:[/] it cannot be used "
                  f"until one is disabled (--disable-plugins DIST or AVADE_DISABLE_PLUGINS)", highlight=False)
    if not items and pattern is not None:
        bare = pattern.strip("*?")
        hint = f"; to list every {bare}, use --kind {bare}" if bare in registry.kinds() and kind is None else ""
        err.print(f"no component name matches {escape(pattern)!r}{escape(hint)}", highlight=False)
    for failure in registry.failures:
        # (in the words every other command's warning uses for it)
        err.print(f"[yellow]warning:[/] plugin '{escape(failure.dist)}' failed to load and is skipped: "
                  f"{escape(failure.message)}", highlight=False)
        _plugin_traceback(failure)


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
           recipe: Annotated[Path | None, typer.Option(
               "--recipe", help="Also check that this recipe can start here: valid, its data (every sweep "
               "variant's) found, its train.device and compile backend here, Inception weights if its metrics need "
               "them; exit 2 if not.")] = None,
           overrides: Annotated[list[str] | None, typer.Option(
               "--set", "-s", metavar="KEY=VALUE", help="Override a key of the --recipe checked (TOML value "
               "syntax).")] = None) -> None:
    """What to know before a long run: versions, devices, plugins, datasets, metric weights."""
    from avade.cli.doctor import collect, render

    if overrides and recipe is None:
        raise AvadeError("--set changes the recipe that --recipe checks: give --recipe too")
    report = collect(recipe, overrides or [])
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        render(report, out)
    entry = report.get("recipe")
    if entry and not (entry["ok"] and entry["ready"]):  # the whole report, then a failing exit for scripts
        raise typer.Exit(2)


@app.command("runs")
def runs_overview(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Run directories, sweeps' --out, or folders of runs (searched a few levels down). \\[default: runs]",
        show_default=False, metavar="PATH")] = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", "-m", help="Comma-separated result columns: keys, patterns or metric names (e.g. fid,prdc_*,kid) "
        "\\[default: those of "
        "bpd, fid, kid_mean, is_mean that some run has]", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every run's record, all its results, as JSON.")] = False,
) -> None:
    """Where each run stands (step, finished or not) and what its newest checkpoint scored, from the run files.

    A run file that cannot be read (damaged, edited, a folder, no access) is named below the table (--json: the
    record's "problems"), with what is wrong and how to mend it, every other run listed as usual; the exit status
    is then 1 (0 when every file was read, 2 for a PATH that is not a folder)."""
    from avade.cli.runs import columns_for, find_runs, matching_keys, render, run_record

    if not paths and not Path("runs").exists():  # nothing trained here yet (not a mistyped PATH): no error
        if as_json:
            _print_json([])
        else:
            err.print("no runs yet: there is no runs/ folder here (avade recipe run RECIPE writes its runs there); "
                      "give PATH for runs elsewhere")
        return
    found = find_runs(paths or [Path("runs")])
    now = time.time()
    records = [run_record(run, axes, now) for run, axes in found]
    damaged = any(r.get("problems") for r in records)
    if as_json:
        _print_json(records)
        if damaged:
            raise typer.Exit(1)
        return
    if not records:
        err.print(f"no runs under {escape(', '.join(str(p) for p in paths or [Path('runs')]))}")
        return
    chosen = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    known = sorted({k for r in records for k in r.get("results", {})})
    missing = [m for m in chosen or [] if not matching_keys(m, known)]
    if missing:  # (a typo, or a metric no run was evaluated on yet: an empty column either way)
        from avade.errors import did_you_mean

        close = "".join(did_you_mean(m, known) for m in missing if "*" not in m)
        err.print(f"[yellow]warning:[/] --metrics {escape(', '.join(missing))}: no run has results of that name"
                  f"{escape(close)}; theirs: {escape(', '.join(known) or 'none yet')} (avade eval RUN --metrics ... "
                  "adds more)")
    render(records, columns_for(records, chosen), out)
    if damaged:
        raise typer.Exit(1)


# -- recipes -----------------------------------------------------------------------------------------


@recipe_app.command("check")
def recipe_check(file: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe TOML file.")],
                 overrides: SetOption = None) -> None:
    """Validate a recipe (and every sweep variant): its keys and values, then its model, built and run
    once on two random images of the dataset's shape; exit 0 or one clear error."""
    from avade.recipe import expand_sweep, load_recipe
    from avade.train.run import check_variants

    recipe = load_recipe(file, overrides or [])
    variants = expand_sweep(recipe)
    sizes: dict[str, dict[str, tuple[int, int]]] = {}
    unrun = not check_variants(variants, sweep=variants if recipe.sweep is not None else None, data=False,
                               source=str(file), sizes=sizes)
    for v in variants:
        try:
            # A statistics file the recipe names ([eval.fid] reference) is read as `recipe run` reads it before
            # step 0 (without the Inception net): a missing or malformed one fails here too, not only there.
            fid = v.recipe.eval.settings.get("fid")
            if fid is not None and getattr(fid.config, "reference", None):
                from avade.metrics.fid import load_reference_stats

                load_reference_stats(fid.config.reference)
            if v.recipe.train.compile:  # the backend list needs torch._dynamo: only imported when asked for
                from avade.train.compiling import check_compile_backend

                check_compile_backend(v.recipe.train.compile_backend)
        except ConfigError as exc:  # (named in the recipe file, as its other errors)
            raise exc.located(source=str(file)) from None
    extra = f", {len(variants)} sweep variant{'s' if len(variants) != 1 else ''}" if recipe.sweep is not None else ""
    out.print(f"[green]ok[/]: {escape(recipe.name)} ({recipe.variant} on {escape(recipe.data.options.name)}{extra})")
    from avade.models.build import model_summary

    # what a user sizes a long run by (parameters, training state, batch, steps): one line per distinct model
    summaries: dict[str, list[str]] = {}
    for v in variants:
        if (summary := model_summary(v.recipe, sizes)) is not None:
            summaries.setdefault(summary, []).append(v.name)
    for summary, names in summaries.items():
        who = "model" if len(summaries) == 1 else ", ".join(names)
        out.print(f"  {escape(who)}: {escape(summary)}", highlight=False)
    from avade.train.schedule import whole_run_warm_up

    for v in variants:  # (valid, but what training would only say as it starts)
        if odd := whole_run_warm_up(v.recipe):
            err.print(f"[yellow]warning:[/] {escape(v.name + ': ' if recipe.sweep is not None else '')}"
                      f"{escape(odd)}", highlight=False)
    if unrun:  # keys and values are valid, but whether the components fit the images shows only at run
        out.print(f"[yellow]note:[/] the model was not run: dataset '{escape(recipe.data.options.name)}' declares no "
                  "`resolution`, so its image shape is known only once it is loaded (`avade recipe run`)")


def _memory_size(text: str) -> int:
    """``--memory``'s bytes: "16GB", "80 GiB", "512MiB", "1.5T" (decimal or binary units, B to TB)."""
    import re

    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?)b?|b?)\s*", text, re.IGNORECASE)
    unit, binary = (found.group(2) or "", found.group(3)) if found else ("", "")
    size = int(float(found.group(1)) * (1024 if binary else 1000) ** ("_kmgt".find(unit.lower()) if unit else 0)) \
        if found else 0
    if size < 1:
        raise typer.BadParameter(f"{text!r} is not a memory size; say e.g. 16GB, 80GiB or 512MB", param_hint="--memory")
    return size


@recipe_app.command("memory")
def recipe_memory(file: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe TOML file.")],
                  overrides: SetOption = None,
                  memory: Annotated[str | None, typer.Option(
                      "--memory", metavar="SIZE",
                      help="Plan for a device with this much free memory (16GB, 80GiB) instead of the free memory "
                           "of the recipe's train.device here.")] = None,
                  processes: Annotated[int, typer.Option(
                      "--processes", min=1, metavar="N",
                      help="Plan for a torchrun job of N processes, one per GPU: each takes data.batch_size / N "
                           "images and holds its own training state.")] = 1,
                  as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
                  ) -> None:
    """Estimate the memory one training step needs (training state and activations, counted without
    allocating them) and the largest batch that fits: on the recipe's device here, or in --memory. One line
    per distinct model and batch of a sweep. Activations are the tensors saved for the backward pass
    (float32, or as bf16 autocast keeps them); measured peaks came within 25 %, so a step up to 25 % over
    the memory may not fit."""
    from avade.memory import memory_free
    from avade.models.activations import MARGIN, describe, fits, not_estimated, step_memory
    from avade.models.build import _run_device, distinct_models
    from avade.recipe import expand_sweep, load_recipe

    budget = _memory_size(memory) if memory is not None else None
    recipe = load_recipe(file, overrides or [])
    variants = expand_sweep(recipe)
    names = {id(v.recipe): v.name for v in variants}
    rows, notes = [], set()
    for group in distinct_models([v.recipe for v in variants]):
        r = group[0]
        batch = r.data.options.batch_size
        if batch % processes:  # (as training refuses it)
            raise ConfigError(f"{batch} is not divisible by --processes {processes}; set a multiple of {processes} "
                              "(each process takes an equal share)", path="data.batch_size", source=str(file))
        plan, each = step_memory(r), batch // processes
        device = _run_device(r, None)
        if budget is None and device == "cpu" and r.train.device.startswith("cuda"):
            notes.add(f"train.device = {r.train.device!r}, but this machine has no GPU: its host memory is what is "
                      "compared; give --memory SIZE for the GPU you plan for")
        free, where = (budget, f"in {memory}") if budget is not None else memory_free(device)
        row: dict[str, Any] = {"variants": [names[id(g)] for g in group], "batch": batch, "processes": processes,
                               "free_bytes": free, "where": where}
        if plan is not None:
            row.update(need_bytes=plan.need(each), state_bytes=plan.state,
                       activations_bytes=plan.need(each) - plan.state,
                       per_image_bytes=plan.activations.per_image,
                       largest_batch=plan.largest_batch(free) * processes if free is not None else None,
                       precision=r.train.precision)
        rows.append((row, plan))
    if as_json:
        print(json.dumps([row for row, _ in rows], indent=2))
        return
    for note in sorted(notes):
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for row, plan in rows:
        who = ("model" if recipe.sweep is None else f"all {len(variants)} variants" if len(rows) == 1
               else ", ".join(row["variants"]))
        if plan is None:
            out.print(f"  {escape(who)}: not estimated: {escape(not_estimated(r))}", highlight=False)
            continue
        each = row["batch"] // processes
        step = f"a step at batch {row['batch']}" if processes == 1 else \
            f"a step at batch {row['batch']} ({each} in each of {processes} processes)"
        line = f"{who}: {step} needs {describe(plan, each)}{' in each' if processes > 1 else ''}"
        if (free := row["free_bytes"]) is not None:
            where = row["where"] if budget is not None else f"{row['where']} has {free / 1e9:.3g} GB free"
            largest, need = row["largest_batch"], row["need_bytes"]
            if need <= free:
                verdict = f"fits, up to data.batch_size = {largest}"
            elif need <= MARGIN * free:
                verdict = "may not fit (within the estimate's 25 %)" + (  # (one image each: no smaller batch)
                    f": data.batch_size = {largest} would fit" if largest else
                    ", and no smaller batch is estimated to fit")
            elif largest:
                verdict = f"does not fit, data.batch_size = {largest} would fit"
            else:
                verdict = fits(plan, free)
            line += f"; {where}: {verdict}"
        out.print(f"  {escape(line)}", highlight=False)


@recipe_app.command("show")
def recipe_show(file: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe TOML file.")],
                overrides: SetOption = None,
                variants: Annotated[bool, typer.Option("--variants", help="List the sweep's variants.")]
                = False,
                as_json: Annotated[bool, typer.Option("--json", help="JSON instead of TOML/table.")] = False,
                ) -> None:
    """Print the fully resolved recipe as TOML (or the variants a sweep expands to)."""
    from avade.recipe import expand_sweep, load_recipe, recipe_to_dict, recipe_to_toml

    recipe = load_recipe(file, overrides or [])
    # a sweep's variants are checked as `recipe check` checks them: a mistyped grid key must not print as valid
    expanded = expand_sweep(recipe) if variants or recipe.sweep is not None else []
    if variants:
        if as_json:
            print(json.dumps([{"name": v.name, "overrides": v.overrides} for v in expanded], indent=2))
            return
        table = Table(title=escape(f"{recipe.name}: {len(expanded)} variant(s)"), title_justify="left")
        table.add_column("#", justify="right")  # what --only takes, as the name (a cluster array job's index)
        table.add_column("name", overflow="fold")  # (cut to "table9a_av_…" in a narrow terminal otherwise)
        table.add_column("overrides", overflow="fold")
        for index, v in enumerate(expanded):
            table.add_row(str(index), escape(v.name),
                          escape(" ".join(f"{k}={json.dumps(val)}" for k, val in v.overrides.items()) or "-"))
        out.print(table)
        return
    if as_json:
        print(json.dumps(recipe_to_dict(recipe), indent=2))
    else:
        print(recipe_to_toml(recipe), end="")


@recipe_app.command("keys")
def recipe_keys(
    section: Annotated[str | None, typer.Argument(
        metavar="SECTION", help="top | model | data | train | eval | sweep (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The recipe's own keys per section: type, default, help (a component's keys: avade list-components
    --json --schema)."""
    from avade.recipe.schema import MODEL_COMPONENTS, DataOptions, EvalSection, ModelOptions, TrainSection
    from avade.schema import describe

    components = [{"name": slot, "type": "table", "default": None,
                   "help": f'the {kind} component: name = "..." and its own keys'}
                  for slot, kind in MODEL_COMPONENTS.items()]
    dataset = {"name": "...", "type": "", "default": None,
               "help": "the dataset's own keys (avade list-components --kind dataset --json --schema)"}
    metric = {"name": "<metric>", "type": "table", "default": None, "help": "[eval.<metric>]: its settings"}

    def row(name: str, kind: str, text: str) -> dict[str, Any]:
        return {"name": name, "type": kind, "default": None, "help": text}

    sections: dict[str, list[dict[str, Any]]] = {
        "top": [row("name", "string", "the run's name (default: the file's stem)"),
                row("description", "string", "free text, kept with the recipe"),
                row("extends", "string | list[string]", "recipe file(s) this one deep-merges onto (relative to it)")],
        "model": [*describe(ModelOptions), *components],
        "data": [*describe(DataOptions), dataset],
        "train": describe(TrainSection),
        "eval": [*(r for r in describe(EvalSection) if r["name"] != "settings"), metric],
        "sweep": [row("grid", "table of lists",
                      'dotted key -> values; the cartesian product, e.g. {"model.flow.scales" = [1, 2, 3]}'),
                  row("combos", "list of tables", "explicit variants, each a table of dotted key -> value")],
    }
    if section is not None and section not in sections:
        head, _, slot = section.partition(".")
        own = {r["name"] for r in sections.get(head, ())}  # (eval.every is [eval]'s key, not a metric's table)
        kind = (MODEL_COMPONENTS.get(slot) if head == "model" else
                "metric" if head == "eval" and slot and slot not in own else
                "dataset" if section == "data.name" else None)
        if kind is not None:  # a component's keys are its own, not the recipe's
            name = f"{slot} " if kind == "metric" else ""  # ([eval.fid] is fid's: the others depend on name =)
            raise ConfigError(f"{section!r} holds {a_or_an(kind)} component's own keys: see avade list-components "
                              f"{name}--kind {kind} --json --schema")
        if slot in own:
            raise ConfigError(f"{section!r} is a key of section {head}, not a section: avade recipe keys {head} "
                              "lists it")
        raise ConfigError(f"no recipe section {section!r}; choose one of {', '.join(sections)}")
    chosen = {section: sections[section]} if section else sections
    if as_json:
        print(json.dumps(chosen, indent=2, default=str))
        return
    for name, rows in chosen.items():
        table = Table(title=escape("top level" if name == "top" else f"[{name}]"), title_justify="left")
        for col in ("key", "type", "default", "help"):
            table.add_column(col, overflow="fold")
        for entry in rows:  # (`row` is the helper above)
            default = "" if entry["default"] is None else json.dumps(entry["default"], default=str)
            table.add_row(entry["name"], escape(entry["type"]), escape(default), escape(entry["help"]))
        out.print(table)


@recipe_app.command("run")
def recipe_run(
    file: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe TOML file.")],
    overrides: SetOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", "--output", help="Run directory (default "
                                                 "runs/<recipe>/<time>; -2, -3... for runs started in the same "
                                                 "second).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --out (without "
                                                 "--out: the newest run under runs/<recipe>/).")]
    = False,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (overrides "
                                               "train.device).")] = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="VARIANT", help="Only these sweep variants: names or 0-based indices, comma-separated or "
        "repeated (e.g. --only $SLURM_ARRAY_TASK_ID, one variant per array job, all with the same --out).")] = None,
) -> None:
    """Train a recipe (each sweep variant in its own run directory)."""
    from avade.train.run import run_recipe_file

    run_recipe_file(file, overrides or [], out_dir=out_dir, resume=resume, device=_device(device), console=out,
                    only=only or [])


# -- runs --------------------------------------------------------------------------------------------


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR", help="A run directory, or a sweep's --out (every variant's run).")],
    metrics: Annotated[str | None, typer.Option("--metrics", "-m", help="Comma-separated, e.g. "
                                                "bpd,fid,kid,prd (default: the recipe's).")] = None,
    samples: Annotated[int | None, typer.Option(
        "--samples", help="Samples for sample-based metrics (default: each metric's own, e.g. eval.fid.samples: "
        "FID's 10000 unless the recipe sets it).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")] = "auto",
    checkpoint: Annotated[str | None, typer.Option(
        "--checkpoint", metavar="STEP|all", help="The checkpoint of this step (e.g. 30000) instead of the newest; "
        "'all': every checkpoint kept, oldest first (a metric against training steps).")] = None,
    ema: EmaOption = True,
    importance_samples: Annotated[int | None, typer.Option(
        "--importance-samples", min=1, metavar="K", help="bpd: also the k-sample importance-weighted bound "
        "bpd_iw<k> (default: the recipe's \\[eval.bpd] importance_samples if above 1, else its "
        "eval.importance_samples).")] = None,
    overrides: RunSetOption = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="VARIANT", help="A sweep's --out: only these variants, names or 0-based indices, "
        "comma-separated or repeated (e.g. --only $SLURM_ARRAY_TASK_ID; each job adds its rows to "
        "sweep_eval.json).")] = None,
) -> None:
    """Evaluate a run's last checkpoint (or --checkpoint STEP, or all); records eval.json (and plots) in the run.
    A sweep's --out: every variant's last checkpoint (or --only some), one row each in its sweep_eval.{json,csv}."""
    from avade.evaluate import (
        evaluate_checkpoints,
        evaluate_sweep,
        sweep_eval_failures,
        sweep_eval_warnings,
        sweep_runs,
    )
    from avade.evaluate.runs import eval_row, evaluate_and_record
    from avade.train.ranks import is_main_process
    from avade.train.run import cell_text

    if not is_main_process():  # single-process work: under torchrun, rank 0 does it and the others stop
        return

    if samples is not None and samples < 2:
        raise AvadeError(f"--samples: sample-based metrics need at least 2 samples, got {samples}")
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics is not None else None
    if names is not None and not names:
        raise AvadeError("--metrics: give at least one metric, e.g. --metrics bpd,fid (or leave it out for the "
                         "recipe's eval.metrics)")
    given = names or []
    twice = sorted({m for m in given if given.count(m) > 1})  # (each would be computed, then refused)
    if twice:
        raise AvadeError(f"--metrics: {', '.join(twice)} given twice; give each metric once")
    # (options the metrics asked for do not take: said, not silently ignored)
    if names and importance_samples is not None and "bpd" not in names:
        err.print("[yellow]warning:[/] --importance-samples applies to bpd, which --metrics leaves out: ignored",
                  highlight=False)
    if names and samples is not None and set(names) == {"bpd"}:
        err.print("[yellow]warning:[/] --samples sets how many samples the sample-based metrics (fid, kid, prd, ...) "
                  "draw; bpd is computed on the test split: ignored", highlight=False)
    if run_dir.is_dir() and not (run_dir / "recipe.toml").is_file() and sweep_runs(run_dir)[0]:
        if checkpoint is not None:
            raise AvadeError(f"--checkpoint picks a checkpoint of one run, but {run_dir} is a sweep's --out; "
                             "evaluate one of its runs with it, or leave it out for every variant's newest")
        rows = evaluate_sweep(run_dir, names, samples=samples, device=_device(device, indexed=True),
                              console=err if as_json else out, ema=ema, importance_samples=importance_samples,
                              overrides=overrides or [], only=only or [])
        if as_json:
            _print_json(rows)
        for warning in sweep_eval_warnings(run_dir, rows):
            err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        failures = sweep_eval_failures(run_dir, rows)
        if failures is not None:
            raise failures
        return
    if only:
        raise AvadeError(f"--only picks variants of a sweep, but {run_dir} is a single run (a sweep's --out holds "
                         "sweep_plan.json or sweep_summary.json); leave --only out")
    if checkpoint is not None and checkpoint.strip().lower() == "all":
        rows = evaluate_checkpoints(run_dir, names, samples=samples, device=_device(device, indexed=True),
                                    console=err, ema=ema, importance_samples=importance_samples,
                                    overrides=overrides or [])
        if as_json:
            _print_json(rows)
            return
        table = Table(title=escape(f"eval: {run_dir} (every checkpoint)"), title_justify="left")
        # the step says which checkpoint, and the settings (a table per metric) are in --json and
        # eval_checkpoints.json: not a column of JSON text each
        columns = list(dict.fromkeys(key for row in rows for key in row if key not in ("checkpoint", "settings")))
        for column in columns:
            table.add_column(escape(column), justify="right", overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell_text(row.get(column))) for column in columns))
        out.print(table)
        return
    results, _, record = evaluate_and_record(run_dir, names, samples, _device(device, indexed=True),
                                             err if as_json else out, checkpoint, ema, importance_samples,
                                             overrides or [])
    odd = [k for k, v in results.items() if isinstance(v, float) and not math.isfinite(v)]
    if odd:
        err.print(f"[yellow]warning:[/] {escape(', '.join(odd))} not finite (null in eval.json and --json)")
    if as_json:  # which checkpoint and weights and, as eval.json says, the settings of the metrics computed now
        # (eval.json's of earlier calls are not theirs): as each row of --checkpoint all and of a sweep says
        _print_json(eval_row(record, results))
    else:
        table = Table(title=escape(f"eval: {run_dir}"), title_justify="left")
        table.add_column("metric", overflow="fold")
        table.add_column("value", justify="right", overflow="fold")
        for key, value in results.items():
            table.add_row(escape(key), escape(cell_text(value)))
        out.print(table)


@app.command()
def sample(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory.")],
    n: Annotated[int | None, typer.Option("-n", "--samples", help="Number of images (as eval's --samples); "
                                          "with --interpolations, of rows. \\[default: 64; 8 rows]",
                                          show_default=False)] = None,
    output: Annotated[Path, typer.Option("-o", "--output", "--out", help="Image file for the grid (.png, .jpg, ...), "
                                         "or .npz: all n samples as uint8 \\[n, H, W, C] under arr_0 (the "
                                         "layout external FID tools read; a class-conditional model's labels, "
                                         "with the training class balance, under labels).")] = Path("samples.png"),
    temperature: Annotated[float | None, typer.Option(
        "--temperature", "-t", help="Prior temperature: 1 = the prior, 0 = its mode; the decoder's "
        "Gaussian noise is added either way (default: the recipe's model.temperature, as evaluation samples).")] = None,
    reconstructions: Annotated[bool, typer.Option("--reconstructions", help="Test images and their "
                                                  "reconstructions instead.")] = False,
    interpolations: Annotated[bool, typer.Option("--interpolations", help="Rows of a test image, --steps "
                                                 "decodings along the path between its latent code and a second "
                                                 "one's, and that second image (a class-conditional model's "
                                                 "pairs share a class: --class picks it).")] = False,
    steps: Annotated[int | None, typer.Option("--steps", help="Frames per --interpolations row, both ends "
                                              "included. \\[default: 8]", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")] = "auto",
    checkpoint: CheckpointOption = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Images per model call (noise is drawn per call: another size, other samples).")] = 100,
    ema: EmaOption = True,
    overrides: RunSetOption = None,
    label: Annotated[int | None, typer.Option("--class", help="A class-conditional model's samples of this class "
                                              "alone (default: every class, one per grid column).")] = None,
) -> None:
    """Write a grid of samples (or reconstructions, or interpolations), or an .npz of samples, from a run's last
    checkpoint (or --checkpoint STEP)."""
    from avade.evaluate import sample_run
    from avade.evaluate.sampling import INTERPOLATION_STEPS
    from avade.train.ranks import is_main_process

    if not is_main_process():  # single-process work: under torchrun, rank 0 does it and the others stop
        return

    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise AvadeError(f"--temperature: expected a number >= 0 (1 = the prior itself, 0 = its mode), got "
                         f"{temperature}")
    if checkpoint is not None and checkpoint.strip().lower() == "all":
        raise AvadeError("--checkpoint all is avade eval's (a metric against training steps); avade sample takes "
                         "one checkpoint: --checkpoint STEP, or leave it out for the newest")
    if output.suffix.lower() not in {*_image_suffixes(), ".npz"}:
        raise AvadeError(f"-o: {output} has no image suffix Pillow can write; end it in .png (or .jpg, .webp, "
                         "...), or in .npz for an array of samples")
    if output.is_dir():
        raise AvadeError(f"-o: {output} is a directory; give a file name such as {output / 'samples.png'}")
    _check_output_folder(output)
    if steps is not None and not interpolations:
        raise AvadeError(f"--steps {steps} sets the frames of an --interpolations row; add --interpolations, or "
                         "leave out --steps")
    if n is None:
        n = 8 if interpolations else 64
    path = sample_run(run_dir, n=n, output=output, temperature=temperature, reconstructions=reconstructions,
                      seed=seed, device=_device(device, indexed=True), checkpoint=checkpoint, batch_size=batch_size,
                      ema=ema, overrides=overrides or [], label=label, interpolations=interpolations,
                      steps=INTERPOLATION_STEPS if steps is None else steps)
    out.print(f"wrote {escape(str(path))}")


@study_app.command("subsets")
def study_subsets(
    dataset: Annotated[str, typer.Option("--data", help="Dataset name.")] = "natural-patches",
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a key of the dataset's config, e.g. resolution=16 "
                                                 "(or data.resolution=16; TOML value syntax).")] = None,
    fractions: Annotated[str, typer.Option("--fractions", help="Comma-separated subset fractions.")]
    = "1.0,0.8,0.6,0.4,0.2,0.1,0.05",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", "--out", help="Write JSON here.")] = None,
) -> None:
    """Table 7: FID/IS of random subsets of the real data against the full set.

    The Inception runs over the whole split (minutes on a CPU; a CUDA GPU is used when there is one)."""
    from avade.evaluate import subset_study_cli
    from avade.train.run import cell_text

    try:
        values = [float(f) for f in fractions.split(",")]
    except ValueError:
        raise AvadeError(f"--fractions expects comma-separated numbers such as 1.0,0.5, got {fractions!r}") from None
    if output is not None:  # before the study, not after it: a path that cannot be written loses nothing
        if output.is_dir():
            raise AvadeError(f"-o: {output} is a directory; give a file name such as {output / 'study.json'}")
        _check_output_folder(output)
        output.parent.mkdir(parents=True, exist_ok=True)
    rows = subset_study_cli(dataset, overrides or [], values, console=err if as_json else out)
    if not rows:
        raise AvadeError("the subset study produced no rows; pass at least one fraction")
    if output is not None:
        from avade.train.rundir import write_json

        write_json(output, rows)
    if as_json:
        _print_json(rows)
    else:
        table = Table(title=escape(f"subset study on {dataset}"), title_justify="left")
        for col in rows[0]:
            table.add_column(col, justify="right", overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell_text(v)) for v in row.values()))
        out.print(table)


@study_app.command("prd")
def study_prd(
    runs: Annotated[list[str], typer.Argument(
        metavar="RUN", help="Run directories evaluated with --metrics prd (or their prd_curve.json), each "
                               "optionally LABEL=PATH; the legend otherwise names each by its recipe.")],
    output: Annotated[Path, typer.Option("-o", "--output", "--out", help="The plot, a .png file.")]
    = Path("prd.png"),
    title: Annotated[str | None, typer.Option("--title", help="The plot's title.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Figure 19: the precision-recall curves (PRD) of several runs on one plot, with F8, F1/8 and AUC each."""
    from avade.evaluate.prd_study import prd_study
    from avade.train.run import cell_text

    if output.is_dir() or output.suffix.lower() != ".png":
        raise AvadeError(f"-o: {output} is {'a directory' if output.is_dir() else 'not a .png file'}; give a file "
                         "name such as figure19.png")
    _check_output_folder(output)
    rows = prd_study(runs, output, title)
    if as_json:
        _print_json({"plot": str(output), "curves": rows})
        return
    table = Table(title=escape(f"PRD curves: {output}"), title_justify="left")
    for col in ("label", "prd_f8", "prd_f1_8", "prd_auc"):
        table.add_column(col, justify="left" if col == "label" else "right", overflow="fold")
    for row in rows:
        table.add_row(escape(row["label"]), *(escape(cell_text(row[k])) for k in ("prd_f8", "prd_f1_8", "prd_auc")))
    out.print(table)
    out.print(f"wrote {escape(str(output))}")


def _writable_anywhere() -> None:
    """Characters the terminal's or file's encoding lacks (names such as "Jégou", "×", "σ"; a path) are
    written escaped (``\\xe9``) rather than failing the command with a UnicodeEncodeError: stdout and stderr
    are ASCII under ``PYTHONIOENCODING=ascii`` and cp1252 on Windows when redirected to a file."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure) and (getattr(stream, "errors", None) or "strict") == "strict":
            reconfigure(errors="backslashreplace")


def _reader_left(console: Console) -> None:
    """Rich's answer to a closed pipe (``avade recipe keys | head -1``, ``avade --help | head``), with the exit
    status of avade's own (``_Group.invoke``: 0, nothing to report) rather than rich's 1, which
    ``set -o pipefail`` would take for a failure of avade."""
    console.quiet = True
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _writable_anywhere()
    # (every Console: typer's help screens print through consoles of their own)
    rich_default, Console.on_broken_pipe = Console.on_broken_pipe, _reader_left  # type: ignore[method-assign,assignment]
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="avade")
    finally:
        Console.on_broken_pipe = rich_default  # type: ignore[method-assign]
