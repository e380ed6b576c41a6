"""filelayer's benchmark against Chainlit's own SQL data layers: ``python -m benchmarks``.

:mod:`benchmarks.workload` is the Chainlit-shaped workload (also replayed by the
reliability tests), :mod:`benchmarks.archives` builds large archives for every layer,
:mod:`benchmarks.measure` is what one subprocess measures, :mod:`benchmarks.run` the
whole run.
"""
