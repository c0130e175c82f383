"""Analysis cores: why a backbone transfers (occlusion saliency, feature invariance).

Pure functions over tensors, arrays and modules; like the protocol cores they import
nothing from ``data/``, ``models/``, ``features/`` or ``jobs/``.
"""
