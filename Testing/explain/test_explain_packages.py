"""Each explanation method imports only the package it uses: attention needs torch alone,
gradcam / ig / occlusion / smoothgrad captum, gradcampp MONAI."""
import sys

import numpy as np
import pytest
import torch

from EmphysemaXAILib.explain.methods import FILL_HU, attribute
from EmphysemaXAILib.model.severity_net import SeverityNet
from EmphysemaXAILib.packages import METHOD_PACKAGES


@pytest.fixture(scope="module")
def net_and_tiles():
    torch.manual_seed(0)
    tiles = np.random.default_rng(0).normal(-860, 25, (2, 3, 32, 32)).astype(np.float32)
    tiles[:, :, :, :6] = FILL_HU
    return SeverityNet(width=8, hidden=16).eval(), tiles


def test_attention_runs_without_captum_and_monai(net_and_tiles, monkeypatch):
    for name in ("captum", "captum.attr", "monai", "monai.visualize"):
        monkeypatch.setitem(sys.modules, name, None)
    net, tiles = net_and_tiles
    maps = attribute(net, tiles, "attention")
    assert maps.shape == tiles.shape and maps.max() > 0


@pytest.mark.parametrize("method", [m for m, package in METHOD_PACKAGES.items() if package])
def test_a_method_without_its_package_raises_import_error_naming_it(net_and_tiles, monkeypatch, method):
    package = METHOD_PACKAGES[method]
    for name in (package, f"{package}.attr", f"{package}.visualize"):
        monkeypatch.setitem(sys.modules, name, None)
    net, tiles = net_and_tiles
    with pytest.raises(ImportError) as raised:
        attribute(net, tiles, method)
    assert raised.value.name.split(".")[0] == package
