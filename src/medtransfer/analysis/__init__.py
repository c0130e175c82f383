"""Analyses that explain transfer: pure cores over tensors and modules (no data/models/jobs)."""
