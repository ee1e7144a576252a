"""Synthetic chest CT phantoms with exact ground truth (test data, training data, teaching).

``generate_phantom(PhantomParams(...))`` builds the scan, label maps and truth;
``write_phantom`` writes them as ``docs/contracts.md`` describes.
"""
from .generate import Phantom, generate_phantom
from .params import DOSES, KERNELS, LESION_PATTERNS, SIZES, SUBTYPES, PhantomParams

__all__ = ["DOSES", "KERNELS", "LESION_PATTERNS", "SIZES", "SUBTYPES", "Phantom", "PhantomParams", "generate_phantom"]
