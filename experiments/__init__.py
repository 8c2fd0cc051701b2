"""Benchmarks and studies of geopatra, run from the repository root as ``python -m experiments.<study>``
(``make bench`` runs the comparison studies in their fast mode). Results: ``experiments/results/``.

Shared by the studies, one concern per module: :mod:`.layout` (paths, model names),
:mod:`.bench_data` (datasets and nested splits), :mod:`.environments` (subprocess environments and
the venvs of sgdml 1.0.3 and MACE), :mod:`.runners` (one runner per model family),
:mod:`.timed_runs` (equal wall-clock runs pinned to cores), :mod:`.variant_probes` (the probes'
command line and rows), :mod:`.calculator_timing` (energy + forces and MD speed of an ASE calculator),
:mod:`.reporting` (options and the report writer) and :mod:`.provenance` (the header of every report).
"""
