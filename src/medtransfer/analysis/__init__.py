"""Analyses that explain transfer: pure cores over tensors and modules (no data/models/jobs).

Occlusion saliency, feature invariance, feature inversion with a deep image prior and
perceptual distance; they import nothing from ``data/``, ``models/``, ``features/`` or
``jobs/``.
"""
