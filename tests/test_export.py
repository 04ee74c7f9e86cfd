"""tools/export.py: ONNX files of the baseline and scene flow networks that onnxruntime runs like
PyTorch at any batch size, and clear refusals (fusion model, bad command line)."""

import os

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from geometry import pose_from_axis_angle_translation  # noqa: E402
from models import build_model  # noqa: E402
from tools.export import export_wrappers, main, onnx_session, run_onnx  # noqa: E402
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


def assert_close(name, got, expected):
    got = torch.from_numpy(got)
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    assert torch.isfinite(got).all(), name
    difference = float((got - expected).abs().max())
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


def test_fusion_model_is_refused_with_the_reason(tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("depth_net", "pose_net"):
        (weights / f"{name}.pth").write_bytes(b"")      # refused before anything is read
    case = ("configs/synthetic/ddad_surround_fusion.yaml", ["model.weights_init=false"])
    assert export(case, weights, tmp_path / "model.onnx") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ExportError: the fusion networks") and "nonzero" in err, err
    assert not (tmp_path / "model.onnx").exists()


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
