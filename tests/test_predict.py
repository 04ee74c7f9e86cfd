"""predict.py: inference on one's own data (trainer/predict.py, dataset/rig_folder.py)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import predict as predict_cli
from dataset.image_folder import IntrinsicsError, ImageFolderDataset, load_intrinsics
from dataset.image_io import image_size
from dataset.rig_folder import CalibrationError, load_rig_calibration
from trainer.predict import depth_to_png16, point_clouds

SMALL = ["training.height=64", "training.width=96", "model.weights_init=false"]
VOXELS = ["model.voxel_size=[16,16,4]", "model.voxel_unit_size=[4.0,4.0,2.0]", "model.voxel_str_p=[-30.0,-30.0,-3.0]",
          "model.proj_d_bins=6", "model.proj_d_end=30"]
SCENEFLOW = ("configs/synthetic/davis_eval.yaml", SMALL + ["eval.flip_post_process=false"])
FUSION = ("configs/synthetic/ddad_surround_fusion.yaml", SMALL + VOXELS)
R_FORWARD = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]      # camera looking along rig +x


def read_ply(path):
    """(points [N, 3] float32, colours [N, 3] uint8) of a binary PLY written by utils/ply.py."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode()
    n = int(next(line.split()[2] for line in header.splitlines() if line.startswith("element vertex")))
    table = np.frombuffer(data[end:], dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                                      ("r", "u1"), ("g", "u1"), ("b", "u1")]), count=n)
    return np.stack([table["x"], table["y"], table["z"]], 1), np.stack([table["r"], table["g"], table["b"]], 1)


def fresh_weights(tmp_path, config, overrides):
    """A freshly initialised model of the config saved as <network>.pth; returns the folder."""
    from models import build_model
    from utils.config import load_config

    cfg = load_config(config, overrides, mode="eval")
    model = build_model(cfg)
    folder = tmp_path / "weights"
    folder.mkdir()
    for name, net in model.networks().items():
        torch.save(net.state_dict(), folder / f"{name}.pth")
    return folder


def run(config, overrides, weights, *args):
    return predict_cli.main(["--config_file", config, "--weight_path", str(weights), "--no_progress", *args, *overrides])


@pytest.fixture(scope="module")
def sceneflow_weights(tmp_path_factory):
    return fresh_weights(tmp_path_factory.mktemp("sf"), *SCENEFLOW)


@pytest.fixture(scope="module")
def fusion_weights(tmp_path_factory):
    return fresh_weights(tmp_path_factory.mktemp("fusion"), *FUSION)


def test_sceneflow_model_on_davis_frames(shared_data, sceneflow_weights, tmp_path):
    out = tmp_path / "out"
    src = shared_data / "davis_3frames"
    assert run(*SCENEFLOW, sceneflow_weights, "--input", str(src), "--output", str(out), "--batch_size", "2",
               "--colorbar") == 0
    frames = sorted(p.stem for p in src.glob("*.jpg"))
    assert len(frames) == 3                  # fewer than the 5-frame window: every frame still gets outputs
    for frame in frames:
        for kind in ("depth", "disparity", "flow", "sceneflow"):
            picture = out / f"{frame}_{kind}.png"
            assert image_size(picture)[0] == 64, picture
            assert image_size(picture)[1] == (96 if kind != "depth" else image_size(picture)[1])
        assert image_size(out / f"{frame}_depth.png")[1] > 96                 # the colour bar is appended
        import cv2
        raw = cv2.imread(str(out / f"{frame}_depth16.png"), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.shape == (64, 96) and (raw > 0).all()
        points, colours = read_ply(out / f"{frame}.ply")
        assert points.shape == (64 * 96, 3) and np.isfinite(points).all() and (points[:, 2] > 0).all()
        # The 16-bit depth is the z of the cloud (metres x 256), pixel for pixel in row-major order.
        np.testing.assert_allclose(raw.reshape(-1) / 256.0, points[:, 2], atol=1.0 / 256)
        assert colours.std() > 1                                              # coloured by the image
    gif = out / "depth.gif"
    from PIL import Image
    with Image.open(gif) as im:
        assert im.n_frames == 3 and im.size == (96, 128)                      # input above depth


def test_fusion_model_on_two_frames_with_intrinsics(shared_data, fusion_weights, tmp_path):
    out = tmp_path / "out"
    src = shared_data / "two_frames_with_intrinsics"
    assert run(*FUSION, fusion_weights, "--input", str(src), "--output", str(out),
               "--intrinsics", str(src / "test_sequence_intrinsics.json"), "--depth_format", "npy",
               "--no_animation") == 0
    for frame in ("test_sequence_source", "test_sequence_target"):
        assert image_size(out / f"{frame}_depth.png") == (64, 96)
        depth = np.load(out / f"{frame}_depth.npy")
        assert depth.shape == (64, 96) and depth.dtype == np.float32 and (depth > 0).all()
        points, _ = read_ply(out / f"{frame}.ply")
        # camera frame: z is the depth; x = (u - cx) z / fx with the normalised K scaled to 96 x 64
        np.testing.assert_allclose(points[:, 2], depth.reshape(-1), rtol=1e-5)
        fx, cx = 0.58 * 96, 0.5 * 96
        u = np.tile(np.arange(96), 64)
        np.testing.assert_allclose(points[:, 0], (u - cx) * depth.reshape(-1) / fx, rtol=1e-4, atol=1e-5)
    assert not (out / "depth.gif").exists()
    assert not list(out.glob("*_flow.png"))                     # no flow from a depth-only model


def test_single_image_and_video(shared_data, fusion_weights, tmp_path):
    import cv2
    image = shared_data / "two_frames_with_intrinsics" / "test_sequence_target.jpg"
    out = tmp_path / "image"
    assert run(*FUSION, fusion_weights, "--input", str(image), "--output", str(out), "--fov", "90") == 0
    assert sorted(p.name for p in out.iterdir()) == ["test_sequence_target.ply", "test_sequence_target_depth.png",
                                                     "test_sequence_target_depth16.png"]
    # a 4-frame video of the DAVIS frames: one output per frame and an animation
    video = tmp_path / "clip.avi"
    frames = [cv2.imread(str(p)) for p in sorted((shared_data / "davis_3frames").glob("*.jpg"))]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, frames[0].shape[1::-1])
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write an MJPG video here")
    for f in frames + frames[:1]:
        writer.write(f)
    writer.release()
    out = tmp_path / "video"
    assert run(*FUSION, fusion_weights, "--input", str(video), "--output", str(out), "--batch_size", "3") == 0
    assert sorted(p.name for p in out.glob("*_depth.png")) == [f"frame_{i:06d}_depth.png" for i in range(4)]
    from PIL import Image
    with Image.open(out / "depth.gif") as im:
        assert im.n_frames == 4


def test_default_output_folder_and_errors(shared_data, fusion_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    src = shared_data / "davis_3frames"
    overrides = FUSION[1] + [f"data.log_dir={tmp_path}/results"]
    assert run(FUSION[0], overrides, fusion_weights, "--input", str(src), "--no_animation") == 0
    assert len(list((tmp_path / "results/ddad_surround_fusion/predict/davis_3frames").glob("*.ply"))) == 3
    # a malformed intrinsics file: exit status 1 and one line naming the file and the expected form
    bad = tmp_path / "K.txt"
    bad.write_text("700 0 320\n0 700 240\n")
    assert run(*FUSION, fusion_weights, "--input", str(src), "--intrinsics", str(bad), "--output", str(tmp_path / "x")) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "expected 9" in err
    assert run(*FUSION, tmp_path / "nowhere", "--input", str(src)) == 1
    assert "checkpoint folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run(*FUSION, fusion_weights, "--input", str(src), "--depth_format", "exr")
    assert exc.value.code == 2


@pytest.mark.parametrize("text, suffix, expected", [
    ("[[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1]]", ".json", [[0.58 * 200, 0, 100], [0, 1.92 * 100, 50]]),
    ('{"fx": 700, "fy": 710, "cx": 99.5, "cy": 49.5}', ".json", [[700, 0, 99.5], [0, 710, 49.5]]),
    ('{"K": [700, 0, 99.5, 0, 700, 49.5, 0, 0, 1]}', ".json", [[700, 0, 99.5], [0, 700, 49.5]]),
    ("700, 0, 99.5\n0 700 49.5\n0 0 1", ".txt", [[700, 0, 99.5], [0, 700, 49.5]]),
])
def test_intrinsics_forms_are_parsed(tmp_path, text, suffix, expected):
    path = tmp_path / f"K{suffix}"
    path.write_text(text)
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2
    cv2.imwrite(str(folder / "a.png"), np.zeros((100, 200, 3), np.uint8))
    K = ImageFolderDataset(folder, frame_ids=(0,), intrinsics=path)[0]["K"][0].numpy()
    np.testing.assert_allclose(K[:2], np.array(expected), rtol=1e-6)


@pytest.mark.parametrize("text, suffix, message", [
    ("[[700, 0, 320], [0, 700, 240]]", ".json", "found 6 numbers"),
    ("700 0 320 0 seven 240 0 0 1", ".txt", "'seven' is not a number"),
    ("{not json", ".json", "not valid JSON"),
    ('{"focal": 700}', ".json", "'fx', 'fy', 'cx', 'cy'"),
    ("[[-700, 0, 320], [0, 700, 240], [0, 0, 1]]", ".json", "focal lengths must be positive"),
    ("[[700, 0, 320], [0, 700, 240], [0, 1, 1]]", ".json", "last row (0, 0, 1)"),
])
def test_malformed_intrinsics_are_refused(tmp_path, text, suffix, message):
    path = tmp_path / f"K{suffix}"
    path.write_text(text)
    with pytest.raises(IntrinsicsError) as exc:
        load_intrinsics(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_point_cloud_lands_on_the_ground_plane():
    """Depth rendered analytically for a ground plane z = 0 (rig frame) seen by a camera 1.5 m up,
    pitched 10 degrees down: the cloud in the rig frame lies on z = 0."""
    H, W = 48, 64
    K = torch.tensor([[50.0, 0, (W - 1) / 2], [0, 50.0, (H - 1) / 2], [0, 0, 1]])
    pitch = np.radians(10.0)
    # camera axes in the rig frame: forward = (cos p, 0, -sin p), right = (0, -1, 0), down = forward x right... explicit:
    forward = np.array([np.cos(pitch), 0.0, -np.sin(pitch)])
    right = np.array([0.0, -1.0, 0.0])
    down = np.cross(forward, right)
    R = torch.tensor(np.stack([right, down, forward], axis=1), dtype=torch.float32)     # columns: cam axes in rig
    T = torch.eye(4)
    T[:3, :3], T[:3, 3] = R, torch.tensor([1.0, 2.0, 1.5])
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    rays = torch.linalg.inv(K) @ torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)  # z = 1 rays, camera frame
    rays_rig = R @ rays
    depth = (-1.5 / rays_rig[2]).reshape(H, W)                                           # hit z = 0 at t = depth
    depth = torch.where(rays_rig[2].reshape(H, W) < 0, depth, torch.zeros(()))           # sky: no depth
    assert (depth > 0).float().mean() > 0.3
    points = point_clouds(depth[None, None, None], K[None, None], T[None, None])[0, 0]    # [3, H, W]
    hit = depth > 0
    assert points[2][hit].abs().max() < 1e-3                                           # on the plane
    assert (points[0][hit] > 1.0).all()                                                # in front of the camera
    # without extrinsics: the camera frame, z is the depth
    cam = point_clouds(depth[None, None, None], K[None, None])[0, 0]
    torch.testing.assert_close(cam[2], depth)


def test_depth_png16_encoding():
    d = np.array([[0.0, -1.0, np.nan, 1.0], [80.0, 255.99, 300.0, 1 / 512]])
    raw = depth_to_png16(d)
    assert raw.dtype == np.uint16
    assert raw.tolist() == [[0, 0, 0, 256], [20480, 65533, 65535, 1]]


def make_rig(tmp_path, shared_data, calibration):
    rig = tmp_path / "rig"
    src = shared_data / "two_frames_with_intrinsics"
    for cam in ("front", "left"):
        (rig / cam).mkdir(parents=True)
        for name in ("test_sequence_source.jpg", "test_sequence_target.jpg"):
            shutil.copy(src / name, rig / cam / name)
    (rig / "calibration.json").write_text(json.dumps(calibration))
    return rig


def yaw(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_rig_folder_fused_point_cloud(shared_data, fusion_weights, tmp_path):
    T_front = np.eye(4)
    T_front[:3, :3], T_front[:3, 3] = R_FORWARD, (1.5, 0.0, 1.6)
    T_left = np.eye(4)
    T_left[:3, :3], T_left[:3, 3] = yaw(90) @ np.array(R_FORWARD), (0.5, 0.9, 1.4)
    calibration = {"cameras": {
        "front": {"K": [[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1]], "T_rig_cam": T_front.tolist()},
        "LEFT": {"K": {"fx": 600.0, "fy": 600.0, "cx": 300.0, "cy": 100.0}, "T_rig_cam": T_left[:3].tolist()}}}
    rig = make_rig(tmp_path, shared_data, calibration)
    out = tmp_path / "out"
    assert run(*FUSION, fusion_weights, "--input", str(rig), "--output", str(out), "--depth_format", "npy") == 0
    frame = "test_sequence_target"
    points, _ = read_ply(out / f"{frame}.ply")
    assert points.shape == (2 * 64 * 96, 3)
    from geometry import resize_intrinsics
    from utils.config import load_config
    convention = load_config(FUSION[0], FUSION[1], mode="eval").data.intrinsics_convention
    K_left = torch.tensor([[600.0, 0, 300.0], [0, 600.0, 100.0], [0, 0, 1]])
    Ks = {"front": np.array([[0.58 * 96, 0, 0.5 * 96], [0, 1.92 * 64, 0.5 * 64], [0, 0, 1]]),   # normalised
          "left": resize_intrinsics(K_left, image_size(rig / "left" / f"{frame}.jpg"), (64, 96), convention).double().numpy()}
    assert abs(Ks["left"][0, 0] - 600.0 * 96 / image_size(rig / "left" / f"{frame}.jpg")[1]) < 1e-4
    for k, (cam, T) in enumerate((("front", T_front), ("left", T_left))):
        depth = np.load(out / cam / f"{frame}_depth.npy")
        for v, u in ((0, 0), (10, 70), (63, 95)):
            x_cam = depth[v, u] * np.linalg.inv(Ks[cam]) @ np.array([u, v, 1.0])
            expected = T[:3, :3] @ x_cam + T[:3, 3]
            np.testing.assert_allclose(points[k * 64 * 96 + v * 96 + u], expected, rtol=1e-4, atol=1e-4)
        assert image_size(out / cam / f"{frame}_depth.png") == (64, 96)
    from PIL import Image
    with Image.open(out / "depth.gif") as im:
        assert im.n_frames == 2 and im.size == (2 * 96, 2 * 64)


def test_rig_calibration_forms_and_errors(shared_data, tmp_path):
    dgp = sorted((shared_data / "dgp_test_scene" / "scene_01" / "calibration").glob("*.json"))[0]
    calib = load_rig_calibration(dgp)
    assert set(calib) == {"camera_01", "camera_05", "camera_06"}                # the lidar is left out
    K, T = calib["camera_01"]
    assert K[0, 0] > 1000 and np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
    bad = tmp_path / "calib.json"
    cases = [({"cameras": {"front": {"K": [[500, 0, 300], [0, 500, 200], [0, 0, 1]]}}}, "must hold 'K' and 'T_rig_cam'"),
             ({"cameras": {"front": {"K": [1, 2], "T_rig_cam": np.eye(4).tolist()}}}, "cameras.front.K"),
             ({"cameras": {"front": {"K": np.eye(3).tolist(), "T_rig_cam": (2 * np.eye(4)).tolist()}}}, "(0, 0, 0, 1)"),
             ({"cameras": {"front": {"K": np.eye(3).tolist(), "T_rig_cam": np.diag([1, 1, -1, 1.0]).tolist()}}},
              "not a rotation"),
             ({"intrinsics": []}, "unknown calibration layout")]
    for content, message in cases:
        bad.write_text(json.dumps(content))
        with pytest.raises(CalibrationError) as exc:
            load_rig_calibration(bad)
        assert str(bad) in str(exc.value) and message in str(exc.value), str(exc.value)
    # a camera folder without a calibration entry is refused, naming the folder
    rig = make_rig(tmp_path, shared_data, {"cameras": {"front": {"K": np.eye(3).tolist(), "T_rig_cam": np.eye(4).tolist()}}})
    from dataset.rig_folder import RigFolderDataset
    with pytest.raises(CalibrationError, match=r"\['left'\]"):
        RigFolderDataset(rig, image_hw=(64, 96))
