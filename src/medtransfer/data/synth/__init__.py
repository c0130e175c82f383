"""Small image trees in the exact published layouts, with a learnable class signal.

Used by the tests, the demo and the benchmarks, and by users who want to see the layout a
reader expects (``medtransfer datasets synth --dataset NAME --out DIR``). Every tree is
written under ``DIR/<dataset folder>/`` so that ``--data-root DIR`` reads it directly.
The pixels are synthetic: the class signal is planted on purpose and means nothing
clinically.

:mod:`.primitives` holds the options and the shared drawing and writing primitives,
:mod:`.fundus` the fundus drawing the three fundus sets share, one module per published
layout its writer (it imports its layout's names from the reader in ``data/sources/``; no
reader imports a writer), and :mod:`.writers` maps each catalog dataset to its writer.
"""
