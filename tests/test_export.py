"""tools/export.py: ONNX files of the baseline, scene flow and fusion networks that onnxruntime
runs like PyTorch at any batch size (the fusion networks for one fixed rig calibration, recorded in
the file's metadata), and clear refusals (bad command line, bad calibration)."""

import json
import math
import os

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from dataset.rig_folder import load_rig_calibration  # noqa: E402
from geometry import invert_transform, pose_from_axis_angle_translation, resize_intrinsics  # noqa: E402
from models import build_model  # noqa: E402
from models.surround_fusion import canonical_to_cameras  # noqa: E402
from network.fusion_export import FixedRigDepthNet, FixedRigPoseNet  # noqa: E402
from tools.export import (calibration_from_file, export_wrappers, main, onnx_session, read_metadata,  # noqa: E402
                          run_onnx, synthetic_calibration)
from trainer.checkpoint import load_networks  # noqa: E402
from utils.config import load_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 96
TOLERANCE = 1e-4
BASELINE = ("configs/synthetic/ddad_baseline.yaml",
            ["model.weights_init=false", f"training.height={H}", f"training.width={W}"])
# Four frames: two centre frames, so the second step carries the splatted ConvLSTM states.
SCENEFLOW = ("configs/synthetic/kitti_selfsup.yaml",
             [f"training.height={H}", f"training.width={W}", "model.search_range=2", "model.output_level=1",
              "data.frame_ids=[-2,-1,0,1]", "eval.flip_post_process=false"])
# VFDepth's fusion model, small: three front cameras, 16x16x4 voxels of 6x6x3 m, 4 depth bins.
FUSION = ("configs/synthetic/ddad_surround_fusion.yaml",
          ["model.weights_init=false", f"training.height={H}", f"training.width={W}", "model.voxel_size=[16,16,4]",
           "model.voxel_unit_size=[6.0,6.0,3.0]", "model.voxel_str_p=[-45.0,-45.0,-4.5]", "model.proj_d_bins=4",
           "model.fusion_feat_in_dim=32", "model.voxel_pre_dim=[16]", "data.cameras=[camera_01,camera_05,camera_06]"])


def config(case):
    path, overrides = case
    return load_config(os.path.join(ROOT, path), overrides, mode="eval")


def fresh_checkpoint(case, folder, seed):
    """A freshly initialised model's networks saved as <folder>/<name>.pth."""
    torch.manual_seed(seed)
    model = build_model(config(case), torch.device("cpu"))
    os.makedirs(folder, exist_ok=True)
    for name, net in model.networks().items():
        torch.save(net.state_dict(), os.path.join(folder, f"{name}.pth"))


def model_from(case, folder):
    """The model loaded from `folder`, built under another seed than the checkpoint's."""
    torch.manual_seed(12345)
    model = build_model(config(case), torch.device("cpu"))
    load_networks(folder, model.networks(), strict=True)
    return model.eval()


def export(case, weights, out):
    path, overrides = case
    return main(["--config_file", os.path.join(ROOT, path), "--weight_path", str(weights), "--format", "onnx",
                 "--out", str(out), *overrides])


def batch_axis(path):
    return [i.type.tensor_type.shape.dim[0].dim_param for i in onnx.load(str(path)).graph.input]


def assert_close(name, got, expected, relative=False):
    """|got - expected| <= 1e-4, or with relative=True <= 1e-4·|expected| (depth in metres: a
    disparity rounded differently by 1e-6 moves a point at 100 m by ~1e-3 m)."""
    got = torch.from_numpy(got)
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    assert torch.isfinite(got).all(), name
    scale = expected.abs().clamp(min=1.0) if relative else 1.0
    difference = float(((got - expected).abs() / scale).max())
    assert difference <= TOLERANCE, f"{name}: onnxruntime differs from PyTorch by {difference:.3g}"


def intrinsics(batch):
    K = torch.zeros(batch, 3, 3)
    K[:, 0, 0] = K[:, 1, 1] = W * (0.5 + 0.2 * torch.arange(batch, dtype=torch.float32))
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = W / 2, H / 2, 1.0
    return K


def test_baseline_depth_and_pose_networks_run_in_onnxruntime_as_in_pytorch(tmp_path, capsys):
    weights = tmp_path / "weights"
    fresh_checkpoint(BASELINE, weights, seed=0)
    assert export(BASELINE, weights, tmp_path / "model.onnx") == 0, capsys.readouterr().err
    depth_file, pose_file = tmp_path / "model.onnx", tmp_path / "model_pose_net.onnx"
    assert depth_file.is_file() and pose_file.is_file()
    assert batch_axis(depth_file) == ["batch", "batch"] and batch_axis(pose_file) == ["batch", "batch"]

    model = model_from(BASELINE, weights)
    depth_session, pose_session = onnx_session(str(depth_file)), onnx_session(str(pose_file))
    assert [o.name for o in depth_session.get_outputs()] == ["disparity", "depth"]
    assert [o.name for o in pose_session.get_outputs()] == ["axis_angle", "translation", "transform"]
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 3):
        image, K = torch.rand(batch, 3, H, W, generator=generator), intrinsics(batch)
        disparity, depth = run_onnx(depth_session, (image, K), ("image", "K"))
        with torch.no_grad():   # the model's own path: cameras as N = 1, depth from its conversion
            disps, depths = model.predict_depth(image[:, None], K[:, None])
        assert_close("disparity", disparity, disps[0][:, 0])
        assert_close("depth", depth, depths[0][:, 0])

        image_b = torch.rand(batch, 3, H, W, generator=generator)
        axis_angle, translation, transform = run_onnx(pose_session, (image, image_b), ("image_a", "image_b"))
        with torch.no_grad():
            a, t = model.pose_net(image, image_b)
        assert_close("axis_angle", axis_angle, a.reshape(batch, 3))
        assert_close("translation", translation, t.reshape(batch, 3))
        assert_close("transform", transform, pose_from_axis_angle_translation(a.reshape(batch, 3),
                                                                              t.reshape(batch, 3)))


def test_sceneflow_network_runs_in_onnxruntime_as_the_model_predicts(tmp_path, capsys):
    weights = tmp_path / "weights"
    fresh_checkpoint(SCENEFLOW, weights, seed=0)
    out = tmp_path / "sceneflow.onnx"
    assert export(SCENEFLOW, weights, out) == 0, capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["sceneflow.onnx", "weights"]
    assert batch_axis(out) == ["batch", "batch", "batch"]

    model = model_from(SCENEFLOW, weights)
    session = onnx_session(str(out))
    assert [o.name for o in session.get_outputs()] == ["disparity", "depth", "scene_flow_forward",
                                                       "scene_flow_backward"]
    generator = torch.Generator().manual_seed(2)
    for batch in (1, 3):
        images, K = torch.rand(batch, 4, 3, H, W, generator=generator), intrinsics(batch)
        baseline = torch.full((batch,), 0.54)    # the model's baseline for a single camera
        disparity, depth, sf_f, sf_b = run_onnx(session, (images, K, baseline), ("images", "K", "baseline"))
        sample = {"image": images[:, :, None], "K": K[:, None], "extrinsics": torch.eye(4).expand(batch, 1, 4, 4),
                  "frame_ids": [-2, -1, 0, 1]}
        with torch.no_grad():
            predictions = model.predict(sample, model(sample))
        assert_close("disparity", disparity, predictions.extras["disparity"][:, 0])
        assert_close("depth", depth, predictions.depth[:, 0])
        assert_close("scene_flow_forward", sf_f, predictions.scene_flow["fwd"][:, 0])
        assert_close("scene_flow_backward", sf_b, predictions.scene_flow["bwd"][:, 0])
        # The baseline is an input of the graph, not a constant of the trace.
        _, depth_wide, _, _ = run_onnx(session, (images, K, 2 * baseline), ("images", "K", "baseline"))
        with torch.no_grad():
            expected = export_wrappers(config(SCENEFLOW), model)["sceneflow_net"](images, K, 2 * baseline)[1]
        assert_close("depth (baseline 1.08 m)", depth_wide, expected)


def fresh_fusion_checkpoint(folder, seed):
    """A fresh fusion model's networks, the convolutions after the encoders drawn with He
    initialisation: with PyTorch's default one the signal fades through them (the disparity
    varies by ~1e-4 around a large offset), so a 1e-4 tolerance would say nothing."""
    torch.manual_seed(seed)
    model = build_model(config(FUSION), torch.device("cpu"))
    with torch.no_grad():
        for net in (model.depth_net, model.pose_net):
            for name, module in net.named_modules():
                if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)) and not name.startswith("encoder"):
                    torch.nn.init.kaiming_normal_(module.weight, a=0.1, nonlinearity="leaky_relu")
                    torch.nn.init.zeros_(module.bias)
    os.makedirs(folder, exist_ok=True)
    for name, net in model.networks().items():
        torch.save(net.state_dict(), os.path.join(folder, f"{name}.pth"))


def rig_inputs(batch, cameras, generator):
    """Two frames [B, N, 3, H, W] and self-occlusion masks [B, N, 1, H, W] with a band of zeros at
    the bottom of each view, of another height per item and camera."""
    a = torch.rand(batch, cameras, 3, H, W, generator=generator)
    b = torch.rand(batch, cameras, 3, H, W, generator=generator)
    top = torch.randint(H // 2, H, (batch, cameras), generator=generator)
    masks = (torch.arange(H)[None, None, :] < top[..., None]).float()[:, :, None, :, None].expand(-1, -1, -1, -1, W)
    return a, b, masks.contiguous()


def metadata_rig(path, tmp_path):
    """(camera order, {name: (K, T_rig_cam)}, image_hw) from an ONNX file's metadata, read back
    through the calibration-file reader."""
    props = read_metadata(str(path))
    assert "wrong results for any other calibration" in props["calibration_note"]
    calibration = json.loads(props["calibration"])
    copy = tmp_path / f"{path.stem}_calibration.json"
    copy.write_text(props["calibration"])
    return calibration["camera_order"], load_rig_calibration(copy), tuple(calibration["image_hw"])


def test_fusion_networks_run_in_onnxruntime_as_the_model_on_the_synthetic_rig(tmp_path, capsys, one_thread):
    weights = tmp_path / "weights"
    fresh_fusion_checkpoint(weights, seed=0)
    assert export(FUSION, weights, tmp_path / "vf.onnx") == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert err.startswith("warning: no --calibration") and "synthetic ddad rig" in err, err
    depth_file, pose_file = tmp_path / "vf.onnx", tmp_path / "vf_pose_net.onnx"
    assert batch_axis(depth_file) == ["batch", "batch"] and batch_axis(pose_file) == ["batch"] * 3
    assert onnx.load(str(depth_file)).opset_import[0].version == 20           # the 5-D GridSample
    for path in (depth_file, pose_file):
        ops = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert "NonZero" not in ops and "Loop" not in ops and "ScatterND" in ops, ops

    cfg = config(FUSION)
    rig = synthetic_calibration(cfg, (H, W))
    names, calibration, image_hw = metadata_rig(depth_file, tmp_path)
    assert names == ["camera_01", "camera_05", "camera_06"] and image_hw == (H, W)
    for i, name in enumerate(names):
        assert torch.allclose(torch.from_numpy(calibration[name][0]).float(), rig.K[i])
        assert torch.allclose(torch.from_numpy(calibration[name][1]).float(), rig.extrinsics[i])
    assert metadata_rig(pose_file, tmp_path)[0] == names

    model = model_from(FUSION, weights)
    depth_session, pose_session = onnx_session(str(depth_file)), onnx_session(str(pose_file))
    generator = torch.Generator().manual_seed(3)
    for batch in (1, 2):
        previous, image, masks = rig_inputs(batch, len(names), generator)
        sample = {"K": rig.K.expand(batch, -1, -1, -1), "extrinsics": rig.extrinsics.expand(batch, -1, -1, -1),
                  "mask": masks}
        disparity, depth = run_onnx(depth_session, (image, masks), ("images", "masks"))
        with torch.no_grad():    # the model's own path, with the rig's K and extrinsics for every item
            outputs = model.fused_depth_outputs(image, sample)
            poses = model.fused_poses(torch.stack([previous, image], dim=1), sample, [-1, 0])
        assert_close("disparity", disparity, outputs["disp"][0])
        assert_close("depth", depth, outputs["depth"][0], relative=True)
        assert float(outputs["disp"][0].std()) > 0.05                         # a tolerance that says something
        # The masks are an input of the graph: other masks, other voxels fused.
        unmasked, _ = run_onnx(depth_session, (image, torch.ones_like(masks)), ("images", "masks"))
        assert float(abs(unmasked - disparity).max()) > 0.01

        axis_angle, translation, transform = run_onnx(pose_session, (previous, image, masks),
                                                      ("image_a", "image_b", "masks"))
        with torch.no_grad():
            a, t = model.pose_net(previous, image, sample["K"], sample["extrinsics"], masks)
        assert_close("axis_angle", axis_angle, a)
        assert_close("translation", translation, t)
        _, unmasked, _ = run_onnx(pose_session, (previous, image, torch.ones_like(masks)),
                                  ("image_a", "image_b", "masks"))
        assert float(abs(unmasked - translation).max()) > 1e-3               # ~1e-2 for translations ~2e-2
        # The canonical motion from frame a to frame b: the model inverts it for the pair (I-1, I0)
        # and spreads it to the cameras.
        per_camera = canonical_to_cameras(invert_transform(torch.from_numpy(transform)), sample["extrinsics"])
        assert_close("camera motions", per_camera.numpy(), poses[-1])


def write_calibration(path, K_scale=1.0):
    """A three-camera rig calibration in the rig-folder format, K in pixels of 1920x1280 images
    (or normalised with K_scale = (1/1920, 1/1280))."""
    cameras = {}
    for name, yaw in (("front", 0.0), ("left", 70.0), ("right", -70.0)):
        c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
        # OpenCV camera (x right, y down, z forward) in a rig frame x forward, y left, z up.
        R = [[s, 0.0, c], [-c, 0.0, s], [0.0, -1.0, 0.0]]
        T = [row + [p] for row, p in zip(R, (1.5, 0.3 * s, 1.6))] + [[0.0, 0.0, 0.0, 1.0]]
        sx, sy = K_scale if isinstance(K_scale, tuple) else (K_scale, K_scale)
        K = [[1200.0 * sx, 0.0, 960.0 * sx], [0.0, 1200.0 * sy, 640.0 * sy], [0.0, 0.0, 1.0]]
        cameras[name] = {"K": K, "T_rig_cam": T}
    path.write_text(json.dumps({"cameras": cameras}))
    return path


def test_fusion_depth_network_is_exported_for_a_calibration_file(tmp_path, capsys, one_thread):
    weights = tmp_path / "weights"
    fresh_fusion_checkpoint(weights, seed=1)
    calibration = write_calibration(tmp_path / "calibration.json")
    out = tmp_path / "rig.onnx"
    path, overrides = FUSION
    assert main(["--config_file", os.path.join(ROOT, path), "--weight_path", str(weights), "--out", str(out),
                 "--networks", "depth_net", "--calibration", str(calibration), "--calibration_size", "1920x1280",
                 *overrides]) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert "warning" not in printed.err and f"calibration file {calibration}" in printed.out
    assert sorted(os.listdir(tmp_path)) == ["calibration.json", "rig.onnx", "weights"]

    # Not the config's cameras: the sorted names of the file; K scaled from 1920x1280 to 96x64.
    names, rig, image_hw = metadata_rig(out, tmp_path)
    written = json.loads(calibration.read_text())["cameras"]
    assert names == ["front", "left", "right"] and image_hw == (H, W)
    for name in names:
        assert torch.allclose(torch.from_numpy(rig[name][0]).float(),
                              resize_intrinsics(torch.tensor(written[name]["K"]), (1280, 1920), (H, W)))
        assert torch.allclose(torch.from_numpy(rig[name][1]).float(), torch.tensor(written[name]["T_rig_cam"]))
    K = torch.stack([torch.from_numpy(rig[name][0]) for name in names]).float()
    E = torch.stack([torch.from_numpy(rig[name][1]) for name in names]).float()

    model = model_from(FUSION, weights)
    session = onnx_session(str(out))
    generator = torch.Generator().manual_seed(4)
    for batch in (1, 2):
        _, image, masks = rig_inputs(batch, len(names), generator)
        disparity, depth = run_onnx(session, (image, masks), ("images", "masks"))
        sample = {"K": K.expand(batch, -1, -1, -1), "extrinsics": E.expand(batch, -1, -1, -1), "mask": masks}
        with torch.no_grad():
            outputs = model.fused_depth_outputs(image, sample)
        assert_close("disparity", disparity, outputs["disp"][0])
        assert_close("depth", depth, outputs["depth"][0], relative=True)


def test_normalised_intrinsics_and_camera_choice_of_a_calibration_file(tmp_path):
    cfg = config(FUSION)
    pixels = calibration_from_file(write_calibration(tmp_path / "px.json"), (H, W), (1280, 1920), None,
                                   cfg.data.cameras, cfg.data.intrinsics_convention)
    assert pixels.camera_names == ["front", "left", "right"]        # sorted: not the config's cameras
    assert torch.allclose(pixels.K[0], resize_intrinsics(torch.tensor([[1200.0, 0, 960], [0, 1200, 640], [0, 0, 1]]),
                                                         (1280, 1920), (H, W), cfg.data.intrinsics_convention))
    normalised = calibration_from_file(write_calibration(tmp_path / "norm.json", K_scale=(1 / 1920, 1 / 1280)),
                                       (H, W), None, ["Right", "front"], cfg.data.cameras, "half_pixel")
    assert normalised.camera_names == ["right", "front"]                # --cameras: that order, any case
    # A normalised K needs no --calibration_size: rows times W and H of the export size.
    assert torch.allclose(normalised.K[1], torch.tensor([[60.0, 0, 48], [0, 60, 32], [0, 0, 1]]))
    assert torch.equal(normalised.extrinsics, pixels.extrinsics[[2, 0]])


def test_fixed_rig_networks_equal_the_fused_networks_with_reference_groups(one_thread):
    """The reference's six-camera overlap groups (group sums, voxels of three cameras or more
    dropped) in the fixed-rig modules, in PyTorch: the other branch of the fusion coefficients."""
    case = (FUSION[0], [o for o in FUSION[1] if not o.startswith("data.cameras")] +
            ["model.reference_max_two_overlap=true"])
    cfg = config(case)
    torch.manual_seed(2)
    model = build_model(cfg, torch.device("cpu")).eval()
    rig = synthetic_calibration(cfg, (H, W))
    assert len(rig.camera_names) == 6
    depth_net = FixedRigDepthNet(model.depth_net, rig.K, rig.extrinsics, (H, W)).eval()
    pose_net = FixedRigPoseNet(model.pose_net, rig.K, rig.extrinsics, (H, W)).eval()
    generator = torch.Generator().manual_seed(5)
    for batch in (1, 3):
        first, second, masks = rig_inputs(batch, 6, generator)
        K, E = rig.K.expand(batch, -1, -1, -1), rig.extrinsics.expand(batch, -1, -1, -1)
        with torch.no_grad():
            expected = model.depth_net.volume(second, K, E, masks)
            volume = depth_net.fuse(depth_net.camera_features(second), masks)
            assert float(expected.abs().max()) > 0.1
            assert float((volume - expected).abs().max()) <= 1e-5
            assert float((depth_net(second, masks) - model.depth_net(second, K, E, masks)[0]).abs().max()) <= 1e-6
            for got, want in zip(pose_net(first, second, masks), model.pose_net(first, second, K, E, masks)):
                assert float((got - want).abs().max()) <= 1e-7


@pytest.mark.parametrize("argv, mentions", [
    (["--calibration", "{tmp}/broken.json"], ["broken.json", "not valid JSON"]),
    (["--calibration", "{tmp}/nowhere.json"], ["calibration file not found", "nowhere.json"]),
    (["--calibration", "{tmp}/rig.json"], ["rig.json", "'front'", "--calibration_size WIDTHxHEIGHT"]),
    (["--calibration", "{tmp}/rig.json", "--calibration_size", "1920-1280"], ["--calibration_size", "1920-1280"]),
    (["--calibration", "{tmp}/rig.json", "--calibration_size", "1920x1280", "--cameras", "front", "rear"],
     ["rig.json", "['rear']", "--cameras"]),
    (["--calibration_size", "1920x1280"], ["--calibration_size: only with --calibration"]),
    (["data.dataset=kitti_raw"], ["kitti_raw", "--calibration FILE"]),
])
def test_bad_calibrations_exit_2_with_a_clear_message(tmp_path, capsys, argv, mentions):
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("depth_net", "pose_net"):
        (weights / f"{name}.pth").write_bytes(b"")      # refused before anything is read
    (tmp_path / "broken.json").write_text('{"cameras": {"front": ')
    write_calibration(tmp_path / "rig.json")
    path, overrides = FUSION
    args = ["--config_file", os.path.join(ROOT, path), "--weight_path", str(weights), "--out",
            str(tmp_path / "m.onnx"), *overrides] + [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(m in err for m in mentions), err
    assert "Traceback" not in err and not (tmp_path / "m.onnx").exists()


def test_a_calibration_for_the_baseline_is_refused(tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "depth_net.pth").write_bytes(b"")
    path, overrides = BASELINE
    assert main(["--config_file", os.path.join(ROOT, path), "--weight_path", str(weights), "--out",
                 str(tmp_path / "m.onnx"), "--networks", "depth_net", "--calibration",
                 str(write_calibration(tmp_path / "rig.json")), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --calibration") and "take no calibration" in err, err


@pytest.mark.parametrize("argv, message, mentions", [
    (["--weight_path", "{tmp}/nowhere"], "error: --weight_path: checkpoint folder not found", "nowhere"),
    (["--format", "tflite"], "error: --format: unknown format 'tflite' (supported: onnx)", "tflite"),
    (["--networks", "flow_net"], "error: --networks: ['flow_net'] are not networks of this model", "depth_net"),
    (["--networks", "pose_net"], "error: --weight_path: no pose_net.pth in", "--networks"),
    (["model.no_such_key=1"], "error: ", "no_such_key"),
])
def test_bad_command_lines_exit_2_with_a_clear_message(tmp_path, capsys, argv, message, mentions):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "depth_net.pth").write_bytes(b"")
    path, overrides = BASELINE
    args = ["--config_file", os.path.join(ROOT, path), "--weight_path", str(weights), "--out",
            str(tmp_path / "m.onnx"), *overrides]
    args += [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and mentions in err, err
    assert "Traceback" not in err and not (tmp_path / "m.onnx").exists()
