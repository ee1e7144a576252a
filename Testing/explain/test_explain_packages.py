"""Each explanation method imports only the package it uses: attention and gradcam need torch
alone, ig / occlusion / smoothgrad captum, gradcampp MONAI; the torch-only Grad-CAM equals
captum's LayerGradCam."""
import sys

import numpy as np
import pytest
import torch

from EmphysemaXAILib.explain.methods import FILL_HU, TargetLogit, attribute, cam_layer, grad_cam
from EmphysemaXAILib.model.severity_net import SeverityNet
from EmphysemaXAILib.packages import METHOD_PACKAGES


@pytest.fixture(scope="module")
def net_and_tiles():
    torch.manual_seed(0)
    tiles = np.random.default_rng(0).normal(-860, 25, (2, 3, 32, 32)).astype(np.float32)
    tiles[:, :, :, :6] = FILL_HU
    return SeverityNet(width=8, hidden=16).eval(), tiles


@pytest.mark.parametrize("method", ["attention", "gradcam"])
def test_the_module_defaults_run_without_captum_and_monai(net_and_tiles, monkeypatch, method):
    for name in ("captum", "captum.attr", "monai", "monai.visualize"):
        monkeypatch.setitem(sys.modules, name, None)
    net, tiles = net_and_tiles
    maps = attribute(net, tiles, method)
    assert maps.shape == tiles.shape and maps.max() > 0


def test_torch_grad_cam_equals_captums_layer_grad_cam_on_both_networks(net_and_tiles):
    from captum.attr import LayerGradCam

    from EmphysemaXAILib.model.pattern_net import PatternNet

    net, tiles = net_and_tiles
    torch.manual_seed(1)
    pattern = PatternNet(width=8, fraction_width=8).eval()
    slices = tiles[:, :1]
    for model, x, target in ((net, tiles, "emphysema"), (pattern, slices, "emphysema"),
                             (pattern, slices, "paraseptal")):
        wrapper = TargetLogit(model, target).eval()
        x = torch.from_numpy(x)
        ours = grad_cam(wrapper, cam_layer(model, target), x)
        captums = LayerGradCam(wrapper, cam_layer(model, target)).attribute(x, target=0, relu_attributions=True)
        assert ours.shape == captums.shape and float(captums.abs().max()) > 0
        torch.testing.assert_close(ours, captums.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", [m for m, package in METHOD_PACKAGES.items() if package])
def test_a_method_without_its_package_raises_import_error_naming_it(net_and_tiles, monkeypatch, method):
    package = METHOD_PACKAGES[method]
    for name in (package, f"{package}.attr", f"{package}.visualize"):
        monkeypatch.setitem(sys.modules, name, None)
    net, tiles = net_and_tiles
    with pytest.raises(ImportError) as raised:
        attribute(net, tiles, method)
    assert raised.value.name.split(".")[0] == package
