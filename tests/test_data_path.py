"""The fast data path of the rig datasets (DDAD, nuScenes): the resized-frame cache (data.cache_dir),
colour jitter on the training device (data.color_aug_on_device) and the loader benchmark's figures
of the plain and the fast path."""
import json
import os
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataset.contract import ContractError, check_sample
from dataset.ddad import DDADDataset
from dataset.image_io import FrameCache, FrameReader, read_image, resize_rgb
from dataset.transforms import COLOR_JITTER_KEY, apply_batch_color_jitter
from tests.box_world import box_world_sequence

pytestmark = pytest.mark.usefixtures("one_thread")   # the colour work is slow with contended threads

ROOT = Path(__file__).resolve().parents[1]
SYN_HW = (48, 80)
OUT_HW = (24, 40)
JITTER = (0.3, 0.3, 0.3, 0.1)


@pytest.fixture(scope="module")
def dgp(tmp_path_factory):
    """A tiny DGP dataset of the box world: 6 cameras, 4 frames (2 training items)."""
    from dataset.synthetic.writers import write_dgp

    root = tmp_path_factory.mktemp("dgp")
    seq = box_world_sequence("ddad", 4, SYN_HW)
    summary = write_dgp([seq], str(root))
    return Path(summary["dataset_json"])


def write_image(path: Path, seed: int, hw=(32, 48)) -> np.ndarray:
    """A random RGB picture written with OpenCV (format from the suffix); returns it as RGB."""
    rgb = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def entries(folder: Path):
    return sorted(folder.rglob("*.frame"))


def uncached(path, target_hw, reduced=True):
    rgb, hw = read_image(path, target_hw if reduced else None)
    return resize_rgb(rgb, target_hw), hw


# ----------------------------------------------------------------------------- frame cache
@pytest.mark.parametrize("suffix, reduced", [(".png", True), (".jpg", True), (".jpg", False)])
def test_cache_hit_gives_the_pixels_of_the_uncached_path(tmp_path, suffix, reduced):
    source = tmp_path / f"frame{suffix}"
    write_image(source, 0, (64, 96))                   # 1/4 reduced decode for a 16x24 target
    reader = FrameReader((16, 24), reduced_decode=reduced, cache_dir=tmp_path / "cache")
    expected, hw = uncached(source, (16, 24), reduced)
    first = reader.read(source)                        # miss: decoded and stored
    assert len(entries(tmp_path / "cache")) == 1
    second = FrameReader((16, 24), reduced_decode=reduced, cache_dir=tmp_path / "cache").read(source)  # hit
    for rgb, original_hw in (first, second):
        assert rgb.dtype == np.uint8 and rgb.shape == (16, 24, 3) and original_hw == hw == (64, 96)
        np.testing.assert_array_equal(rgb, expected)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_keys_keep_decode_modes_and_sizes_apart(tmp_path):
    source = tmp_path / "frame.jpg"
    write_image(source, 1, (64, 96))
    for reduced, hw in ((True, (16, 24)), (False, (16, 24)), (True, (32, 48))):
        rgb, _ = FrameReader(hw, reduced, tmp_path / "cache").read(source)
        np.testing.assert_array_equal(rgb, uncached(source, hw, reduced)[0])
    assert len(entries(tmp_path / "cache")) == 3


def test_a_changed_source_is_never_served_from_a_stale_entry(tmp_path):
    # BMP: the file size depends only on the image size, so a change of content alone keeps it.
    source = tmp_path / "frame.bmp"
    cache = tmp_path / "cache"
    first = write_image(source, 2)
    stat = os.stat(source)
    np.testing.assert_array_equal(FrameReader((32, 48), cache_dir=cache).read(source)[0], first)

    second = write_image(source, 3)                    # same size, new mtime
    assert os.stat(source).st_size == stat.st_size
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    np.testing.assert_array_equal(FrameReader((32, 48), cache_dir=cache).read(source)[0], second)

    third = write_image(source, 4, (32, 40))           # new size, the first mtime again
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    rgb, hw = FrameReader((32, 48), cache_dir=cache).read(source)
    assert hw == (32, 40)
    np.testing.assert_array_equal(rgb, resize_rgb(third, (32, 48)))
    assert len(entries(cache)) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip_pixel", "garbage", "empty"])
def test_a_corrupt_entry_is_reported_and_rebuilt(tmp_path, damage):
    source = tmp_path / "frame.png"
    write_image(source, 5)
    reader = FrameReader((16, 24), cache_dir=tmp_path / "cache")
    expected = reader.read(source)[0]
    (entry,) = entries(tmp_path / "cache")
    data = bytearray(entry.read_bytes())
    if damage == "truncate":
        data = data[:-7]
    elif damage == "flip_pixel":
        data[-1] ^= 0x40
    elif damage == "garbage":
        data = bytearray(b"not a frame" * 20)
    else:
        data = bytearray()
    entry.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt"):
        rgb, _ = reader.read(source)
    np.testing.assert_array_equal(rgb, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # rewritten: the next read is a clean hit
        np.testing.assert_array_equal(reader.read(source)[0], expected)


def test_concurrent_writers_leave_one_valid_entry(tmp_path):
    source = tmp_path / "frame.png"
    write_image(source, 6)
    expected = uncached(source, (16, 24))[0]
    results, errors = [], []

    def work():
        try:   # separate readers, as DataLoader workers have
            results.append(FrameReader((16, 24), cache_dir=tmp_path / "cache").read(source)[0])
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 8
    for rgb in results:
        np.testing.assert_array_equal(rgb, expected)
    assert len(entries(tmp_path / "cache")) == 1 and not list((tmp_path / "cache").rglob("*.tmp"))


def test_an_unwritable_cache_warns_once_and_decodes(tmp_path):
    source = tmp_path / "frame.png"
    write_image(source, 7)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    reader = FrameReader((16, 24), cache_dir=blocker)
    with pytest.warns(RuntimeWarning, match="cannot write the frame cache"):
        rgb = reader.read(source)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(reader.read(source)[0], rgb)
    np.testing.assert_array_equal(rgb, uncached(source, (16, 24))[0])


def test_a_missing_source_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        FrameReader((16, 24), cache_dir=tmp_path / "cache").read(tmp_path / "missing.png")


def test_foreign_entry_under_the_right_name_is_rebuilt(tmp_path):
    """An entry holding another frame (e.g. copied between caches) fails the key check."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_image(a, 8)
    write_image(b, 9)
    cache = FrameCache(tmp_path / "cache", "method")
    build = lambda path: uncached(path, (16, 24))  # noqa: E731
    cache.read(a, build)
    cache.read(b, build)
    cache.entry_path(cache.key(b)).write_bytes(cache.entry_path(cache.key(a)).read_bytes())
    with pytest.warns(RuntimeWarning, match="another frame"):
        np.testing.assert_array_equal(cache.read(b, build)[0], build(b)[0])


# ----------------------------------------------------------------------------- rig datasets
def test_ddad_samples_with_the_cache_equal_those_without(dgp, tmp_path):
    plain = DDADDataset(dgp, "train", image_hw=OUT_HW, depth_cache=False)
    cached = DDADDataset(dgp, "train", image_hw=OUT_HW, depth_cache=False, frame_cache_dir=tmp_path / "cache")
    for _ in range(2):                                 # cold, then warm
        for index in range(len(plain)):
            a, b = plain[index], cached[index]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["K"], b["K"])
    assert len(entries(tmp_path / "cache")) == 4 * 6   # every frame of every camera once
    full = DDADDataset(dgp, "train", image_hw=OUT_HW, depth_cache=False)
    full.set_frame_reading(reduced_decode=False)       # the plain path: same geometry, near-same pixels
    assert torch.equal(full[0]["K"], plain[0]["K"])
    assert (full[0]["image"] - plain[0]["image"]).abs().max() < 2 / 255


def test_device_jitter_equals_worker_jitter(dgp):
    worker = DDADDataset(dgp, "train", image_hw=OUT_HW, depth_cache=False, color_jitter=JITTER, seed=3)
    device = DDADDataset(dgp, "train", image_hw=OUT_HW, depth_cache=False, color_jitter=JITTER, seed=3,
                         color_aug_on_device=True)
    for epoch in (0, 1):
        worker.set_epoch(epoch)
        device.set_epoch(epoch)
        batch = next(iter(DataLoader(device, batch_size=2)))
        assert "image_aug" not in batch and COLOR_JITTER_KEY in batch
        check_sample(batch, num_frames=3, num_cams=6, batched=True)
        moved = apply_batch_color_jitter(batch)        # what the trainer does after moving the batch
        assert COLOR_JITTER_KEY not in moved and torch.equal(moved["image"], batch["image"])
        expected = torch.stack([worker[0]["image_aug"], worker[1]["image_aug"]])
        torch.testing.assert_close(moved["image_aug"], expected, rtol=0, atol=1e-6)
        assert not torch.equal(moved["image_aug"], moved["image"])
        single = device[1]                             # an unbatched sample works too
        torch.testing.assert_close(apply_batch_color_jitter(single)["image_aug"], worker[1]["image_aug"],
                                   rtol=0, atol=1e-6)
    assert apply_batch_color_jitter({"image": batch["image"]}).keys() == {"image"}


def test_trainer_step_applies_the_device_jitter(dgp, monkeypatch):
    """trainer/loop.py makes image_aug from the draws after moving the batch: the model sees it."""
    from trainer.loop import Trainer

    seen = {}

    class Model(torch.nn.Module):
        def forward(self, batch):
            seen.update(batch)
            return {}

        def compute_losses(self, batch, outputs):
            return {"total": torch.zeros((), requires_grad=True) * 1.0}

    class Stub:
        device = torch.device("cpu")
        cfg = type("Cfg", (), {"training": type("T", (), {"amp": "off", "grad_clip": 0.0})()})()
        net = algo = Model()
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        nonfinite_in_a_row = 0

    monkeypatch.setattr("trainer.loop.dist_utils.all_true", lambda value, device: value)
    device = DDADDataset(dgp, "train", image_hw=OUT_HW, depth_cache=False, color_jitter=JITTER, seed=3,
                         color_aug_on_device=True)
    worker = DDADDataset(dgp, "train", image_hw=OUT_HW, depth_cache=False, color_jitter=JITTER, seed=3)
    Trainer._train_step(Stub(), next(iter(DataLoader(device, batch_size=1))))
    assert COLOR_JITTER_KEY not in seen
    torch.testing.assert_close(seen["image_aug"][0], worker[0]["image_aug"], rtol=0, atol=1e-6)


def test_contract_checks_the_jitter_draws(dgp):
    sample = DDADDataset(dgp, "train", image_hw=OUT_HW, depth_cache=False, color_jitter=JITTER,
                         color_aug_on_device=True)[0]
    check_sample(sample, num_frames=3, num_cams=6)
    broken = {k: v.clone() for k, v in sample[COLOR_JITTER_KEY].items()}
    broken["order"][0] = torch.tensor([0, 0, 1, 2])
    cases = [
        ({k: v for k, v in sample[COLOR_JITTER_KEY].items() if k != "hue"}, "lacks"),
        ({**sample[COLOR_JITTER_KEY], "brightness": torch.ones(5)}, "color_jitter.brightness: expected shape"),
        ({**sample[COLOR_JITTER_KEY], "hue": torch.full((6,), 0.7)}, "hue"),
        ({**sample[COLOR_JITTER_KEY], "contrast": -torch.ones(6)}, ">= 0"),
        (broken, "permutation"),
        (torch.zeros(6), "dict"),
    ]
    for params, message in cases:
        with pytest.raises(ContractError, match=message):
            check_sample({**sample, COLOR_JITTER_KEY: params})


def test_build_passes_the_config_keys(dgp, tmp_path):
    from dataset.build import build_dataset
    from utils.config import load_config

    config = ROOT / "configs" / "synthetic" / "ddad_surround_fusion.yaml"
    overrides = ["data.synthetic=false", f"data.data_path={dgp}", "data.mask_path=null",
                 f"training.height={OUT_HW[0]}", f"training.width={OUT_HW[1]}", f"data.cache_dir={tmp_path / 'c'}"]
    cfg = load_config(str(config), overrides)
    assert cfg.data.color_aug_on_device is True
    sample = build_dataset(cfg, "train")[0]
    assert COLOR_JITTER_KEY in sample and "image_aug" not in sample and entries(tmp_path / "c")
    cfg = load_config(str(config), overrides + ["data.color_aug_on_device=false", "data.cache_dir=null"])
    assert "image_aug" in build_dataset(cfg, "train")[0]


# ----------------------------------------------------------------------------- benchmark
def test_loader_benchmark_reports_plain_reduced_and_cached(dgp, tmp_path):
    from tools import benchmark

    out = tmp_path / "bench.json"
    config = ROOT / "configs" / "synthetic" / "ddad_surround_fusion.yaml"
    status = benchmark.main([f"--config_file={config}", "--loader", "--batches=1", "--workers=0", "--rounds=2",
                             f"--json={out}", "data.synthetic=false", f"data.data_path={dgp}", "data.mask_path=null",
                             f"training.height={OUT_HW[0]}", f"training.width={OUT_HW[1]}",
                             f"data.cache_dir={tmp_path / 'cache'}"])
    assert status == 0
    result = json.loads(out.read_text())
    for key in ("plain", "reduced", "cache_cold", "cache_warm"):
        assert result[f"{key}_images_per_s"] > 0
        assert result[f"speedup_{key}" if key != "plain" else "speedup"] > 0
        assert len(result["variants"][key]["batch_times_s"]) == (1 if key == "cache_cold" else 2)
    assert result["fast_path"] == "cache_warm" and result["images_per_s"] == result["cache_warm_images_per_s"]
    warm, plain = result["cache_warm_images_per_s"], result["plain_images_per_s"]
    assert result["speedup_cache_warm"] == pytest.approx(warm / plain)
    assert result["images_per_batch"] == 3 * 6 and result["batches_timed"] == 1 and result["started"]
    assert os.listdir(tmp_path / "cache") == []       # its temporary cache is gone, the folder kept
