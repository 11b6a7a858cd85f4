"""avade's benchmark suite: ``python -m benchmarks`` (or ``bash scripts/bench.sh``); see README.md here.

One module per benchmark -- :mod:`~benchmarks.flows`, :mod:`~benchmarks.train`,
:mod:`~benchmarks.evaluation`, :mod:`~benchmarks.scaling`, :mod:`~benchmarks.startup` -- each with
``run(settings, ...) -> dict`` (JSON-able) and ``render(result) -> list of rich tables``; shared
machinery in :mod:`~benchmarks.common`, the command line in :mod:`~benchmarks.runner`.
"""
