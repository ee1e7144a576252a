"""Synthetic chest CT phantoms with exact ground truth (test data, training data, teaching).

``generate_phantom(PhantomParams(...))`` builds the scan, label maps and truth;
``write_phantom`` writes them as ``contracts.md`` describes.
"""
from .generate import Phantom, generate_phantom  # noqa: F401
from .params import PATTERNS, SIZES, SUBTYPES, PhantomParams  # noqa: F401
