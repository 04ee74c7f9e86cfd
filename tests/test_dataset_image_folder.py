"""Monocular sequences (dataset/image_folder.py): DAVIS frames, a street video's two frames with
normalised intrinsics (../shared/data), a video file written here, and the error messages."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.contract import check_sample
from dataset.image_folder import ImageFolderDataset, IntrinsicsError, load_intrinsics

DAVIS_HW = (480, 854)


@pytest.fixture(scope="module")
def davis(shared_data) -> Path:
    return shared_data / "davis_3frames"


@pytest.fixture(scope="module")
def two_frames(shared_data) -> Path:
    return shared_data / "two_frames_with_intrinsics"


def test_davis_frames_one_window_with_assumed_intrinsics(davis):
    ds = ImageFolderDataset(davis, frame_ids=[0, -1, 1])
    assert len(ds) == 1 and ds.num_excluded == 2
    sample = ds[0]
    check_sample(sample, num_frames=3, num_cams=1)
    assert sample["meta"]["name"] == "00001"
    assert sample["image"].shape == (3, 1, 3, *DAVIS_HW)
    h, w = DAVIS_HW
    np.testing.assert_allclose(sample["K"][0].numpy(), [[700, 0, (w - 1) / 2], [0, 700, (h - 1) / 2], [0, 0, 1]])
    torch.testing.assert_close(sample["extrinsics"], torch.eye(4)[None])
    reference = ImageFolderDataset(davis, frame_ids=[0, -1, 1], image_hw=(240, 427), convention="reference")[0]
    np.testing.assert_allclose(reference["K"][0].numpy(), [[350, 0, 213.5], [0, 350, 120], [0, 0, 1]], rtol=1e-6)
    fov = ImageFolderDataset(davis, frame_ids=[0], assumed_hfov_deg=90.0)[0]
    assert float(fov["K"][0, 0, 0]) == pytest.approx(w / 2, rel=1e-6)        # tan(45 deg) = 1


def test_davis_layout_scenes_and_windows(davis, tmp_path):
    jpeg = tmp_path / "DAVIS" / "JPEGImages" / "480p"
    shutil.copytree(davis, jpeg / "blackswan")
    (jpeg / "bear").mkdir()
    for name in ("00000.jpg", "00001.jpg"):
        shutil.copy(davis / name, jpeg / "bear" / name)
    ds = ImageFolderDataset(tmp_path / "DAVIS", frame_ids=[0, -1, 1], image_hw=(96, 160))
    assert ds.kind == "davis" and [s.name for s in ds.sequences] == ["bear", "blackswan"]
    assert len(ds) == 1 and ds[0]["meta"]["scene"] == "blackswan"
    pair = ImageFolderDataset(tmp_path / "DAVIS", frame_ids=[-1, 0], scenes="bear")
    assert len(pair) == 1 and pair[0]["meta"]["name"] == "00001"
    split = tmp_path / "val.txt"
    split.write_text("blackswan\n")
    assert len(ImageFolderDataset(jpeg, frame_ids=[0, 1], split=split)) == 2
    with pytest.raises(ValueError, match="no window"):
        ImageFolderDataset(tmp_path / "DAVIS", frame_ids=[-3, -2, -1, 0, 1])
    with pytest.raises(FileNotFoundError, match="'dog'"):
        ImageFolderDataset(tmp_path / "DAVIS", scenes=["dog"])


def test_normalised_intrinsics_json(two_frames):
    normalised = json.loads((two_frames / "test_sequence_intrinsics.json").read_text())
    fx_n, cx_n, fy_n, cy_n = normalised[0][0], normalised[0][2], normalised[1][1], normalised[1][2]
    ds = ImageFolderDataset(two_frames, frame_ids=[0, -1], image_hw=(192, 640),
                            intrinsics=two_frames / "test_sequence_intrinsics.json")
    assert len(ds) == 1
    sample = ds[0]
    check_sample(sample, num_frames=2, num_cams=1)
    assert sample["meta"]["name"] == "test_sequence_target"
    K = sample["K"][0]
    assert float(K[0, 0]) == np.float32(fx_n * 640) and float(K[0, 2]) == np.float32(cx_n * 640)
    assert float(K[1, 1]) == np.float32(fy_n * 192) and float(K[1, 2]) == np.float32(cy_n * 192)
    assert len(ImageFolderDataset(two_frames, frame_ids=[-1, 0], image_hw=(192, 640),
                                  intrinsics=two_frames / "test_sequence_intrinsics.json")) == 1
    # At the original size, each frame's K follows its own width and height.
    single = ImageFolderDataset(two_frames, frame_ids=[0], intrinsics=two_frames / "test_sequence_intrinsics.json")
    target = single[1]
    h, w = target["image"].shape[-2:]
    assert target["meta"]["name"] == "test_sequence_target"
    assert float(target["K"][0, 0, 0]) == np.float32(fx_n * w) and float(target["K"][0, 1, 1]) == np.float32(fy_n * h)
    # The two frames differ in size: a window needs image_hw.
    with pytest.raises(ValueError, match="test_sequence_source.jpg.*image_hw"):
        ImageFolderDataset(two_frames, frame_ids=[0, -1], intrinsics=two_frames / "test_sequence_intrinsics.json")[0]


def test_pixel_intrinsics_files(davis, tmp_path):
    K = np.array([[600.0, 0, 420.0], [0, 610.0, 230.0], [0, 0, 1]])
    txt = tmp_path / "K.txt"
    txt.write_text("600 0 420\n0 610 230\n0 0 1\n")
    npy = tmp_path / "K.npy"
    np.save(npy, K)
    for path in (txt, npy):
        np.testing.assert_array_equal(load_intrinsics(path), K)
        sample = ImageFolderDataset(davis, frame_ids=[0], image_hw=(240, 427), intrinsics=path)[0]
        expected = K.copy()
        expected[0] *= 427 / 854
        expected[1] *= 240 / 480
        expected[0, 2] += 0.5 * 427 / 854 - 0.5
        expected[1, 2] += 0.5 * 240 / 480 - 0.5
        np.testing.assert_allclose(sample["K"][0].numpy(), expected, rtol=1e-6)
    as_dict = tmp_path / "K.json"
    as_dict.write_text(json.dumps({"fx": 600, "fy": 610, "cx": 420, "cy": 230}))
    np.testing.assert_array_equal(load_intrinsics(as_dict), K)
    # Forcing the reading: a pixel K with fx < 10 would otherwise be taken as normalised.
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("5 0 0.5 0 5 0.5 0 0 1")
    forced = ImageFolderDataset(davis, frame_ids=[0], intrinsics=tiny, intrinsics_normalised=False)[0]
    assert float(forced["K"][0, 0, 0]) == 5.0
    detected = ImageFolderDataset(davis, frame_ids=[0], intrinsics=tiny)[0]
    assert float(detected["K"][0, 0, 0]) == 5.0 * DAVIS_HW[1]


def test_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    h, w = 64, 96
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write MJPG video here")
    frames = []
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(5):
        rgb = np.stack([(xx * 2 + 20 * i) % 256, (yy * 3) % 256, np.full_like(xx, 40 * i)], -1).astype(np.uint8)
        frames.append(rgb)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    ds = ImageFolderDataset(path, frame_ids=[0, -1, 1])
    assert ds.kind == "video" and len(ds) == 3
    sample = ds[0]
    check_sample(sample, num_frames=3, num_cams=1)
    assert sample["meta"]["name"] == "frame_000001"
    for t, i in enumerate((1, 0, 2)):
        decoded = sample["image"][t, 0].permute(1, 2, 0).numpy() * 255
        assert np.abs(decoded - frames[i]).mean() < 8                     # MJPG is lossy
    np.testing.assert_allclose(sample["K"][0].numpy(), [[700, 0, (w - 1) / 2], [0, 700, (h - 1) / 2], [0, 0, 1]])
    small = ImageFolderDataset(path, frame_ids=[-2, -1, 0, 1, 2], image_hw=(32, 48))
    assert len(small) == 1 and small[0]["image"].shape == (5, 1, 3, 32, 48)
    assert float(small[0]["K"][0, 0, 0]) == pytest.approx(350.0)


def test_error_messages(davis, tmp_path):
    cases = {
        "eight.txt": ("1 0 0.5 0 1 0.5 0 0", r"eight\.txt: found 8 numbers.*expected 9"),
        "word.txt": ("700 0 320 0 abc 240 0 0 1", r"word\.txt: 'abc' is not a number"),
        "negative.txt": ("-700 0 320 0 700 240 0 0 1", r"negative\.txt: focal lengths must be positive"),
        "lastrow.txt": ("700 0 320 0 700 240 0 1 1", r"lastrow\.txt: .*last row \(0, 0, 1\)"),
        "broken.json": ("[[700, 0, 320], [0, 700", r"broken\.json: not valid JSON"),
        "keys.json": ('{"f": 700}', r"keys\.json: a JSON object must hold"),
        "rows.json": ("[[700, 0], [0, 700]]", r"rows\.json: found 4 numbers"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(IntrinsicsError, match=message):
            ImageFolderDataset(davis, intrinsics=path)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        ImageFolderDataset(davis, intrinsics=tmp_path / "nothere.json")

    empty = tmp_path / "empty"
    (empty / "scene").mkdir(parents=True)
    (empty / "scene" / "notes.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match=r"no images with extensions \['.jpg'.*in folder .*empty/scene"):
        ImageFolderDataset(empty)
    with pytest.raises(FileNotFoundError, match=r"no images with extensions.*in folder .*empty/scene"):
        ImageFolderDataset(empty / "scene")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(davis, corrupt)
    (corrupt / "00002.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    ds = ImageFolderDataset(corrupt, frame_ids=[0, -1, 1])
    with pytest.raises(ValueError, match=r"corrupt/00002\.jpg"):
        ds[0]
    not_video = tmp_path / "clip.txt"
    not_video.write_text("x")
    with pytest.raises(ValueError, match=r"clip\.txt is a file but not a video"):
        ImageFolderDataset(not_video)
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"bad\.mp4"):
        ImageFolderDataset(bad_video)
