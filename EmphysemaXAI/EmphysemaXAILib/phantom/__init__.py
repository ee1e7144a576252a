"""Synthetic chest CT phantoms with exact ground truth (test data, training data, teaching).

``generate_phantom(PhantomParams(...))`` builds the scan, label maps and truth;
``write_phantom`` writes them as ``docs/contracts.md`` describes.
"""
from .generate import Phantom, generate_phantom
from .params import DEMO_EXTENT_PCT, DOSES, KERNELS, LESION_PATTERNS, SIZES, SUBTYPES, PhantomParams, demo_params

__all__ = ["DEMO_EXTENT_PCT", "DOSES", "KERNELS", "LESION_PATTERNS", "SIZES", "SUBTYPES", "Phantom", "PhantomParams",
           "demo_params", "generate_phantom"]
