"""Export the networks of a trained model to ONNX, with a dynamic batch size.

    python tools/export.py --config_file=F --weight_path=W --format onnx --out model.onnx [KEY=VALUE ...]
    python tools/export.py --config_file=F --weight_path=W --out model.onnx --networks depth_net --verify
    python tools/export.py --config_file=configs/synthetic/ddad_baseline.yaml \
        --weight_path=results/ddad_baseline/models/weights_1 --out ddad_baseline.onnx training.height=384 training.width=640

The networks of the config's model are read from the checkpoint folder W (``<name>.pth``, strict:
every parameter must fit) and traced on the CPU at the config's image size (training.height x
training.width; override them to export another size: only the batch axis is dynamic). The first
network goes to --out, every further one beside it as ``<stem>_<name><ext>`` (for the baseline:
``model.onnx`` the depth network, ``model_pose_net.onnx`` the pose network). Each graph has named
inputs and outputs (float32; B is the dynamic batch axis):

* ``depth_net`` of the per-camera baseline (model.type surround_depth, depth_model and pose_model
  ``fsm``): inputs ``image`` [B, 3, H, W] in [0, 1] (one camera per batch item) and ``K`` [B, 3, 3]
  (intrinsics at H x W); outputs ``disparity`` [B, 1, H, W] (the sigmoid output of the decoder at
  scale 0) and ``depth`` [B, 1, H, W] in metres (the model's conversion: min/max depth of the
  config, times fx / training.focal_length_scale).
* ``pose_net`` of the baseline: inputs ``image_a``, ``image_b`` [B, 3, H, W], the two frames in
  temporal order; outputs ``axis_angle`` [B, 3], ``translation`` [B, 3] and ``transform`` [B, 4, 4]
  = Trans(t)·Rot(axis_angle), the motion of the camera from frame a to frame b as the model
  builds it (the model inverts it for the pair (I-1, I0)).
* ``sceneflow_net`` (model.type mono_sceneflow): inputs ``images`` [B, T, 3, H, W], the frames of
  data.frame_ids sorted by offset (T fixed by the config), ``K`` [B, 3, 3] and ``baseline`` [B]
  (metres; 0.54 for KITTI); outputs, for the target frame (offset 0), ``disparity`` [B, 1, H, W] in
  pixels, ``depth`` [B, 1, H, W] in metres, ``scene_flow_forward`` and ``scene_flow_backward``
  [B, 3, H, W] (metres, t -> t+1 and t -> t-1). This is the plain pass: eval.flip_post_process
  (the average with the pass on flipped images) is not part of the graph.

The fusion networks of VFDepth (depth_model or pose_model ``fusion``) are refused: they find the
(camera, voxel) pairs of a calibration with a data-dependent ``nonzero`` in Python, per batch item,
and cache them; a traced graph would hold the example calibration's pairs as constants and a
fixed batch size, so it would silently compute something else on another rig.

``--verify`` runs each exported file in onnxruntime on random inputs (batch sizes 1 and 2) and
compares it with PyTorch (prints the largest absolute difference; fails above --tolerance).

Exit status: 0 done, 1 runtime error (the export or the check failed), 2 bad command line, config
or checkpoint folder.
"""

import argparse
import contextlib
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

FORMATS = ("onnx",)
OPSET = 17
BATCH = "batch"

FUSION_REFUSAL = (
    "the fusion networks of model.type surround_depth (depth_model/pose_model 'fusion') cannot be exported "
    "faithfully: they select the visible (camera, voxel) pairs of the calibration with a data-dependent nonzero "
    "in Python, per batch item, through a calibration cache, so a traced graph would freeze the example "
    "calibration and batch size; export the per-camera baseline (depth_model=fsm pose_model=fsm) or run the "
    "fusion model in PyTorch")


class ExportError(RuntimeError):
    """A model or network that this tool cannot export faithfully."""


# ---------------------------------------------------------------------------------------- wrappers
class BaselineDepthExport(nn.Module):
    """image [B, 3, H, W], K [B, 3, 3] -> (disparity [B, 1, H, W], depth [B, 1, H, W])."""

    input_names = ("image", "K")
    output_names = ("disparity", "depth")

    def __init__(self, depth_net: nn.Module, min_depth: float, max_depth: float, focal_length_scale: float):
        super().__init__()
        self.depth_net = depth_net
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.focal_length_scale = float(focal_length_scale)

    def forward(self, image: torch.Tensor, K: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        from models.depth_utils import focal_scaled_depth

        disp = self.depth_net(image)[0]
        # Scale 0 is at the input size already (as SurroundBaseline.to_depth, without its resize).
        depth = focal_scaled_depth(disp, K, self.min_depth, self.max_depth, self.focal_length_scale)
        return disp, depth

    def example_inputs(self, batch: int, height: int, width: int, generator: torch.Generator):
        return (torch.rand(batch, 3, height, width, generator=generator), example_intrinsics(batch, height, width))


class BaselinePoseExport(nn.Module):
    """image_a, image_b [B, 3, H, W] -> (axis_angle [B, 3], translation [B, 3], transform [B, 4, 4])."""

    input_names = ("image_a", "image_b")
    output_names = ("axis_angle", "translation", "transform")

    def __init__(self, pose_net: nn.Module):
        super().__init__()
        self.pose_net = pose_net

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor):
        from geometry import pose_from_axis_angle_translation

        axis_angle, translation = self.pose_net(image_a, image_b)
        axis_angle, translation = axis_angle.flatten(1), translation.flatten(1)
        return axis_angle, translation, pose_from_axis_angle_translation(axis_angle, translation)

    def example_inputs(self, batch: int, height: int, width: int, generator: torch.Generator):
        return (torch.rand(batch, 3, height, width, generator=generator),
                torch.rand(batch, 3, height, width, generator=generator))


class SceneFlowExport(nn.Module):
    """images [B, T, 3, H, W] (sorted offsets), K [B, 3, 3], baseline [B] -> the target frame's
    (disparity px, depth, scene_flow_forward, scene_flow_backward), as MonoSceneFlow.predict
    without flip post-processing."""

    input_names = ("images", "K", "baseline")
    output_names = ("disparity", "depth", "scene_flow_forward", "scene_flow_backward")

    def __init__(self, sceneflow_net: nn.Module, num_frames: int, target_step: int):
        super().__init__()
        self.sceneflow_net = sceneflow_net
        self.num_frames, self.target_step = int(num_frames), int(target_step)

    def forward(self, images: torch.Tensor, K: torch.Tensor, baseline: torch.Tensor):
        from network.sceneflow import disparity_to_depth_sf

        with (traceable_correlation() if torch.jit.is_tracing() else contextlib.nullcontext()):
            out = self.sceneflow_net(images, K, baseline)
        disp = out["disp"][self.target_step][0]
        disp_px = disp * disp.shape[-1]
        depth = disparity_to_depth_sf(disp_px, K, baseline)
        return disp_px, depth, out["sf_f"][self.target_step][0], out["sf_b"][self.target_step][0]

    def example_inputs(self, batch: int, height: int, width: int, generator: torch.Generator):
        images = torch.rand(batch, self.num_frames, 3, height, width, generator=generator)
        baseline = 0.4 + 0.3 * torch.rand(batch, generator=generator)
        return images, example_intrinsics(batch, height, width), baseline


@contextlib.contextmanager
def traceable_correlation():
    """While tracing, the scene flow network's cost volume is computed by
    network.correlation.correlation_loop (one channel mean per displacement) instead of the batched
    ``correlation``: the same values (tests/test_correlation holds them together), but the batched
    one cuts a flat buffer into overlapping windows with ``unfold``/``as_strided`` of a size that
    depends on the batch, which ONNX cannot express."""
    import network.sceneflow as sceneflow
    from network.correlation import correlation_loop

    original = sceneflow.correlation
    sceneflow.correlation = correlation_loop
    try:
        yield
    finally:
        sceneflow.correlation = original


def example_intrinsics(batch: int, height: int, width: int) -> torch.Tensor:
    """Plausible K [B, 3, 3] at H x W, a different focal length per item."""
    K = torch.zeros(batch, 3, 3)
    focal = width * (0.6 + 0.1 * torch.arange(batch, dtype=torch.float32))
    K[:, 0, 0], K[:, 1, 1] = focal, focal
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = (width - 1) / 2.0, (height - 1) / 2.0, 1.0
    return K


# ---------------------------------------------------------------------------------------- model -> wrappers
def export_wrappers(cfg, model) -> Dict[str, nn.Module]:
    """{network name: wrapper} for every network of `model` that can be exported; raises
    ExportError (with the reason) for a model that cannot be exported faithfully."""
    networks = model.networks()
    t = cfg.training
    if cfg.model.type == "surround_depth":
        if cfg.model.depth_model != "fsm" or cfg.model.pose_model != "fsm":
            raise ExportError(FUSION_REFUSAL)
        return {"depth_net": BaselineDepthExport(networks["depth_net"], t.min_depth, t.max_depth,
                                                 t.focal_length_scale),
                "pose_net": BaselinePoseExport(networks["pose_net"])}
    if cfg.model.type == "mono_sceneflow":
        from models.mono_sceneflow import sequence_layout

        layout = sequence_layout(cfg.data.frame_ids)
        return {"sceneflow_net": SceneFlowExport(networks["sceneflow_net"], len(layout["frame_ids"]),
                                                 layout["target_step"])}
    raise ExportError(f"model.type {cfg.model.type!r}: no ONNX export is defined for it "
                      f"(supported: surround_depth with depth_model=fsm pose_model=fsm, mono_sceneflow)")


def output_paths(out: str, names: Sequence[str]) -> Dict[str, str]:
    """The first network at `out`, the others at <stem>_<name><ext> beside it."""
    stem, ext = os.path.splitext(out)
    ext = ext or ".onnx"
    return {name: (out if i == 0 else f"{stem}_{name}{ext}") for i, name in enumerate(names)}


def export_onnx(wrapper: nn.Module, path: str, height: int, width: int, opset: int = OPSET) -> None:
    """Trace `wrapper` at batch size 2 (so that the batch axis cannot be folded into a constant)
    and write it to `path` with a dynamic batch axis on every input and output."""
    import warnings

    wrapper = wrapper.eval()
    example = wrapper.example_inputs(2, height, width, torch.Generator().manual_seed(0))
    names = list(wrapper.input_names) + list(wrapper.output_names)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python int taken from a shape; the batch-size check below
        # (tests, --verify) is what tells whether the graph really follows the batch.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(wrapper, example, path, dynamo=False, opset_version=opset,
                          input_names=list(wrapper.input_names), output_names=list(wrapper.output_names),
                          dynamic_axes={name: {0: BATCH} for name in names}, do_constant_folding=True)
    normalise_transposes(path)


def normalise_transposes(path: str) -> None:
    """Rewrite negative axes in the ``perm`` of Transpose nodes as positive ones (the TorchScript
    exporter copies ``movedim(-3, -1)``'s negative axes into the attribute, which ONNX forbids;
    the length of perm is the rank, so -k is len(perm) - k)."""
    import onnx

    model = onnx.load(path)
    changed = False
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
                if node.op_type == "Transpose" and attribute.name == "perm" and any(p < 0 for p in attribute.ints):
                    rank = len(attribute.ints)
                    fixed = [p + rank if p < 0 else p for p in attribute.ints]
                    del attribute.ints[:]
                    attribute.ints.extend(fixed)
                    changed = True
    if changed:
        onnx.checker.check_model(model)
        onnx.save(model, path)


def onnx_session(path: str):
    """An onnxruntime session of the ONNX file at `path` on the CPU."""
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_onnx(session, inputs: Sequence[torch.Tensor], input_names: Sequence[str]) -> List:
    """Outputs (numpy arrays, in the graph's output order) of an onnxruntime session."""
    return session.run(None, {name: x.numpy() for name, x in zip(input_names, inputs)})


def verify(wrapper: nn.Module, path: str, height: int, width: int, batch_sizes: Sequence[int] = (1, 2),
           seed: int = 1) -> float:
    """Largest absolute difference between onnxruntime and PyTorch over random inputs of each batch size."""
    worst = 0.0
    generator = torch.Generator().manual_seed(seed)
    session = onnx_session(path)
    names = [o.name for o in session.get_outputs()]
    if names != list(wrapper.output_names):
        raise RuntimeError(f"{path}: outputs {names}, expected {list(wrapper.output_names)}")
    for batch in batch_sizes:
        inputs = wrapper.example_inputs(batch, height, width, generator)
        with torch.no_grad():
            expected = wrapper(*inputs)
        got = run_onnx(session, inputs, wrapper.input_names)
        for name, e, g in zip(wrapper.output_names, expected, got):
            if tuple(g.shape) != tuple(e.shape):
                raise RuntimeError(f"{path}: output {name!r} has shape {tuple(g.shape)} in onnxruntime, "
                                   f"{tuple(e.shape)} in PyTorch (batch size {batch})")
            worst = max(worst, float((torch.from_numpy(g) - e).abs().max()))
    return worst


# ---------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config_file", required=True, help="experiment YAML the checkpoint was trained with")
    parser.add_argument("--weight_path", required=True, help="checkpoint folder (results/<name>/models/weights_<epoch>)")
    parser.add_argument("--format", default="onnx", help=f"export format: {', '.join(FORMATS)} (default onnx)")
    parser.add_argument("--out", required=True, help="file of the first network; further networks go beside it "
                                                      "as <stem>_<name><ext>")
    parser.add_argument("--networks", nargs="+", default=None, metavar="NAME",
                        help="networks to export (default: all of the model, e.g. depth_net pose_net)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (>= 17, default {OPSET})")
    parser.add_argument("--verify", action="store_true",
                        help="run each file in onnxruntime and compare with PyTorch (batch sizes 1 and 2)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="--verify: largest absolute difference allowed")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser


def usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    from trainer import run_reporting_errors
    from utils.config import ConfigError, load_config

    args = build_parser().parse_intermixed_args(argv)
    if args.format not in FORMATS:
        return usage_error(f"--format: unknown format {args.format!r} (supported: {', '.join(FORMATS)})")
    if args.opset < 17:
        return usage_error(f"--opset: must be 17 or more, got {args.opset}")
    try:
        # The data paths are not checked: exporting reads no dataset.
        cfg = load_config(args.config_file, args.overrides, mode="eval", weight_path=args.weight_path)
    except (ConfigError, OSError) as err:
        return usage_error(str(err))
    if not os.path.isdir(args.weight_path):
        return usage_error(f"--weight_path: checkpoint folder not found: '{args.weight_path}'")

    from models import build_model

    model = build_model(cfg, torch.device("cpu"))
    available = list(model.network_names)
    names = list(args.networks) if args.networks else available
    unknown = [n for n in names if n not in available]
    if unknown:
        return usage_error(f"--networks: {unknown} are not networks of this model (it has {available})")
    missing = [n for n in names if not os.path.isfile(os.path.join(args.weight_path, f"{n}.pth"))]
    if missing:
        return usage_error(f"--weight_path: no {', '.join(f'{n}.pth' for n in missing)} in '{args.weight_path}' "
                           f"(choose the networks to export with --networks)")

    def job():
        from trainer.checkpoint import load_networks

        wrappers = export_wrappers(cfg, model)          # refuses what cannot be exported, before loading
        load_networks(args.weight_path, model.networks(), names=names, strict=True)
        model.eval()
        h, w = int(cfg.training.height), int(cfg.training.width)
        for name, path in output_paths(args.out, names).items():
            export_onnx(wrappers[name], path, h, w, args.opset)
            line = f"{name}: {path} (inputs {', '.join(wrappers[name].input_names)} at {h}x{w}; " \
                   f"outputs {', '.join(wrappers[name].output_names)})"
            if args.verify:
                worst = verify(wrappers[name], path, h, w)
                if not worst <= args.tolerance:
                    raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {worst:.3g} "
                                       f"(more than --tolerance {args.tolerance:g})")
                line += f"; onnxruntime matches PyTorch to {worst:.2g}"
            print(line)

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
