"""Sweeps: a grid of (protocol, model, dataset, seed, options) cells, written as YAML, run
on a workstation or a Slurm cluster, resumable and safe under concurrency.

``grid.py`` reads and validates the file (``source.py`` keeps every value's line, ``values.py``
checks option values against the jobs' option fields) and expands it into cells;
``hashing.py`` keys each cell by what changes its result; ``order.py`` groups cells that
share features into units; ``parts.py`` and ``split.py`` split a large dataset's feature
extraction into part tasks that run before the cells that read it; ``state.py`` and
``locks.py`` hold each task's state, lock and log under ``<results>/sweeps/``;
``runner.py`` runs one cell, part or unit (and tags a cell's record); ``local.py``/
``worker.py`` and ``slurm.py`` are the executors; ``synthetic.py`` writes the synthetic
data a grid may ask for; ``command.py`` is the command line. The file format and the
guarantees are in ``docs/sweeps.md``.
"""
