"""Assay: a workbench for building, auditing and testing instruction-tuning datasets."""

__version__ = "0.1.0"
