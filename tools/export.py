"""Export the networks of a trained model to ONNX, with a dynamic batch size.

    python tools/export.py --config_file=F --weight_path=W --format onnx --out model.onnx [KEY=VALUE ...]
    python tools/export.py --config_file=F --weight_path=W --out model.onnx --networks depth_net --verify
    python tools/export.py --config_file=configs/synthetic/ddad_baseline.yaml \
        --weight_path=results/ddad_baseline/models/weights_1 --out ddad_baseline.onnx training.height=384 training.width=640
    python tools/export.py --config_file=configs/ddad/ddad_surround_fusion.yaml --weight_path=W --out vfdepth.onnx \
        --calibration my_rig/calibration.json --calibration_size 1936x1216 --verify

The networks of the config's model are read from the checkpoint folder W (``<name>.pth``, strict:
every parameter must fit) and traced on the CPU at the config's image size (training.height x
training.width; override them to export another size: only the batch axis is dynamic). The first
network goes to --out, every further one beside it as ``<stem>_<name><ext>`` (for the baseline:
``model.onnx`` the depth network, ``model_pose_net.onnx`` the pose network). Each graph has named
inputs and outputs (float32; B is the dynamic batch axis):

* ``depth_net`` of the per-camera baseline (model.type surround_depth, depth_model ``fsm``): inputs
  ``image`` [B, 3, H, W] in [0, 1] (one camera per batch item) and ``K`` [B, 3, 3] (intrinsics at
  H x W); outputs ``disparity`` [B, 1, H, W] (the sigmoid output of the decoder at scale 0) and
  ``depth`` [B, 1, H, W] in metres (the model's conversion: min/max depth of the config, times
  fx / training.focal_length_scale).
* ``pose_net`` of the baseline (pose_model ``fsm``): inputs ``image_a``, ``image_b`` [B, 3, H, W],
  the two frames in temporal order; outputs ``axis_angle`` [B, 3], ``translation`` [B, 3] and
  ``transform`` [B, 4, 4] = Trans(t)·Rot(axis_angle), the motion of the camera from frame a to
  frame b as the model builds it (the model inverts it for the pair (I-1, I0)).
* ``sceneflow_net`` (model.type mono_sceneflow): inputs ``images`` [B, T, 3, H, W], the frames of
  data.frame_ids sorted by offset (T fixed by the config), ``K`` [B, 3, 3] and ``baseline`` [B]
  (metres; 0.54 for KITTI); outputs, for the target frame (offset 0), ``disparity`` [B, 1, H, W] in
  pixels, ``depth`` [B, 1, H, W] in metres, ``scene_flow_forward`` and ``scene_flow_backward``
  [B, 3, H, W] (metres, t -> t+1 and t -> t-1). This is the plain pass: eval.flip_post_process
  (the average with the pass on flipped images) is not part of the graph.

VFDepth's fusion networks (model.type surround_depth with depth_model and/or pose_model ``fusion``)
fuse all cameras in one voxel volume through the rig calibration: which (camera, voxel) pairs see
each other, where the rays of every pixel cross the volume. A deployed rig has one calibration, so
they are exported for one fixed rig and hold its calibration as constants of the graph
(network/fusion_export.py); the batch axis stays dynamic, every batch item being a frame of that rig:

* ``--calibration FILE``: the rig calibration JSON that predict.py reads for a rig folder, or a
  DGP (DDAD) calibration JSON (dataset/rig_folder.py). Its cameras are taken in the order of the
  config's data.cameras when the file has them all, in sorted order (predict.py's rig-folder
  order) otherwise, or as ``--cameras NAME ...`` says. Intrinsics written in pixels are scaled
  from the size of the images they were measured on, ``--calibration_size WIDTHxHEIGHT``, to the
  export size (data.intrinsics_convention); normalised intrinsics need no size.
* without it: the synthetic rig of the config's dataset (data.dataset ddad or nuscenes, the
  cameras of data.cameras, at data.synthetic_hw), with a warning: such a graph computes wrong
  depth and motion on any other rig.

The calibration (camera order, K at H x W, T_rig_cam, image size) is written into the file's
metadata (``metadata_props``: ``calibration`` as JSON in the calibration-file format, ``calibration_source``,
``calibration_note``), so that a user can check which rig a file was made for; another calibration
needs a new export. The graphs (N cameras of the rig; ``masks`` are the self-occlusion masks,
1 = scene, 0 = ego vehicle; all ones where there are none):

* ``depth_net`` (fusion): inputs ``images`` [B, N, 3, H, W] in [0, 1] and ``masks``
  [B, N, 1, H, W]; outputs ``disparity`` [B, N, 1, H, W] (the sigmoid output) and ``depth``
  [B, N, 1, H, W] in metres (as the baseline: min/max depth times each camera's fx /
  training.focal_length_scale). ONNX opset 20 at least: the projection of the volume into the
  cameras is a 5-D GridSample.
* ``pose_net`` (fusion): inputs ``image_a``, ``image_b`` [B, N, 3, H, W] (the rig's two frames in
  temporal order) and ``masks``; outputs ``axis_angle`` [B, 3], ``translation`` [B, 3] and
  ``transform`` [B, 4, 4] = Trans(t)·Rot(axis_angle), the one canonical motion of the rig from
  frame a to frame b, expressed in camera 0's frame, as the model builds it (it inverts it for
  the pair (I-1, I0); camera c moves by E_c⁻¹ E_0 T E_0⁻¹ E_c, E = T_rig_cam).

``--verify`` runs each exported file in onnxruntime on random inputs (batch sizes 1 and 2) and
compares it with PyTorch (prints the largest difference, absolute but relative to the depth for
``depth`` in metres; fails above --tolerance).

Exit status: 0 done, 1 runtime error (the export or the check failed), 2 bad command line, config,
checkpoint folder or calibration file.
"""

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

FORMATS = ("onnx",)
OPSET = 17
BATCH = "batch"

# The datasets whose synthetic world has a rig preset (dataset/synthetic/rig.py): the default rig of
# a fusion export without --calibration.
SYNTHETIC_RIGS = {"ddad": "ddad", "nuscenes": "nuscenes"}


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


# ---------------------------------------------------------------------------------------- fixed rig
CALIBRATION_NOTE = ("the graph holds this rig's calibration as constants (which voxels each camera sees, where "
                    "each pixel's rays cross the volume) and computes wrong results for any other calibration, "
                    "camera order or image size; export again (tools/export.py --calibration FILE) for another rig")


@dataclass
class RigCalibration:
    """The rig a fusion network is exported for, at the export size: camera names in input
    order, K [N, 3, 3] in pixels at image_hw and extrinsics [N, 4, 4] T_rig_cam, both float32
    as the data loaders hand them to the model; source says where they come from."""
    camera_names: List[str]
    K: torch.Tensor
    extrinsics: torch.Tensor
    image_hw: Tuple[int, int]
    source: str
    synthetic: bool = False

    def to_json(self) -> str:
        """The calibration-file format of dataset/rig_folder.py (K in pixels at image_hw, which
        load_rig_calibration reads back), with the camera order and the image size."""
        cameras = {name: {"K": K.tolist(), "T_rig_cam": E.tolist()}
                   for name, K, E in zip(self.camera_names, self.K, self.extrinsics)}
        h, w = self.image_hw
        return json.dumps({"cameras": cameras, "camera_order": list(self.camera_names), "image_hw": [h, w],
                           "image_size": f"{w}x{h}"})

    def metadata(self) -> Dict[str, str]:
        """metadata_props of a graph made for this rig."""
        return {"calibration": self.to_json(), "calibration_source": self.source, "calibration_note": CALIBRATION_NOTE}

    def describe(self) -> str:
        return f"{len(self.camera_names)} cameras ({', '.join(self.camera_names)}) from {self.source}"


def parse_image_size(text: str) -> Tuple[int, int]:
    """'WIDTHxHEIGHT' -> (H, W); ValueError naming the option otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--calibration_size: expected WIDTHxHEIGHT in pixels (e.g. 1936x1216), got {text!r}")
    return int(parts[1]), int(parts[0])


def choose_cameras(available: Sequence[str], wanted: Optional[Sequence[str]], preferred: Optional[Sequence[str]],
                   source: str) -> List[str]:
    """The cameras of a calibration in input order (lower case, as load_rig_calibration keys them):
    ``wanted`` (--cameras) when given; else the config's data.cameras when the calibration has
    them all (the order the model was trained with: camera 0 anchors the overlap groups); else
    the sorted names, the order predict.py gives a rig folder's cameras."""
    from dataset.rig_folder import CalibrationError

    if wanted:
        names = [name.lower() for name in wanted]
        missing = [name for name in names if name not in available]
        if missing:
            raise CalibrationError(f"{source}: no camera {missing} (--cameras); it has {sorted(available)}")
        if len(set(names)) != len(names):
            raise CalibrationError(f"--cameras: a camera is named twice in {list(wanted)}")
        return names
    preferred = [name.lower() for name in preferred or []]
    if preferred and all(name in available for name in preferred):
        return preferred
    return sorted(available)


def calibration_from_file(path: str, image_hw: Sequence[int], measured_hw: Optional[Sequence[int]],
                          cameras: Optional[Sequence[str]], preferred: Optional[Sequence[str]],
                          convention: str) -> RigCalibration:
    """The rig of a calibration file (dataset/rig_folder.py formats) at image_hw. Intrinsics in
    pixels refer to images of measured_hw (--calibration_size) and follow the resize to image_hw
    as the loaders' do (``convention``); normalised intrinsics are scaled to image_hw directly.
    CalibrationError (or FileNotFoundError) naming the file and the camera otherwise."""
    from dataset.image_folder import intrinsics_to_pixels, is_normalised
    from dataset.rig_folder import CalibrationError, load_rig_calibration
    from geometry import resize_intrinsics

    entries = load_rig_calibration(path)
    names = choose_cameras(list(entries), cameras, preferred, path)
    h, w = (int(v) for v in image_hw)
    Ks = []
    for name in names:
        K = entries[name][0]
        if is_normalised(K):
            Ks.append(torch.from_numpy(intrinsics_to_pixels(K, (h, w), True)))
        elif measured_hw is None:
            raise CalibrationError(f"{path}: the intrinsics of camera {name!r} are in pixels of the images they were "
                                   f"measured on: give their size with --calibration_size WIDTHxHEIGHT, so that K can "
                                   f"be scaled to the export size {w}x{h} (normalised intrinsics need no size)")
        else:
            Ks.append(resize_intrinsics(torch.from_numpy(K), measured_hw, (h, w), convention))
    extrinsics = torch.stack([torch.from_numpy(entries[name][1]) for name in names])
    return RigCalibration(names, torch.stack(Ks).float(), extrinsics.float(), (h, w), f"calibration file {path}")


def synthetic_calibration(cfg, image_hw: Sequence[int], cameras: Optional[Sequence[str]] = None) -> RigCalibration:
    """The rig of the config's synthetic world (data.dataset's preset, the cameras of data.cameras
    or ``cameras``) at image_hw, with K as the dataset loader computes it: the preset rendered at
    data.synthetic_hw, then resized to image_hw with data.intrinsics_convention."""
    from dataset.rig_folder import CalibrationError
    from dataset.synthetic.rig import get_rig
    from geometry import resize_intrinsics

    preset = SYNTHETIC_RIGS.get(cfg.data.dataset)
    if preset is None:
        raise CalibrationError(f"data.dataset {cfg.data.dataset!r} has no synthetic rig to export for (those of "
                               f"{sorted(SYNTHETIC_RIGS)} do): give the rig's calibration with --calibration FILE")
    rig = get_rig(preset, tuple(cfg.data.synthetic_hw) if cfg.data.synthetic_hw else None)
    index = {name.lower(): i for i, name in enumerate(rig.camera_names)}
    names = [name.lower() for name in (cameras or cfg.data.cameras)]
    missing = [name for name in names if name not in index]
    if missing:
        raise CalibrationError(f"{'--cameras' if cameras else 'data.cameras'}: {missing} are not cameras of the "
                               f"synthetic {preset} rig {rig.camera_names}; give the rig's calibration with "
                               f"--calibration FILE")
    chosen = [index[name] for name in names]
    K = resize_intrinsics(torch.from_numpy(rig.K[chosen]), rig.image_hw, tuple(image_hw),
                          cfg.data.intrinsics_convention)
    source = (f"the synthetic {preset} rig of data.dataset {cfg.data.dataset!r} (dataset/synthetic/rig.py), "
              f"not a calibration of a real rig")
    return RigCalibration(names, K.float(), torch.from_numpy(rig.T_rig_cam[chosen]).float(),
                          (int(image_hw[0]), int(image_hw[1])), source, synthetic=True)


def example_rig_inputs(batch: int, rig: RigCalibration, generator: torch.Generator, frames: int = 1):
    """``frames`` random image tensors [B, N, 3, H, W] of the rig and its masks [B, N, 1, H, W]:
    ones with a band of zeros of random height at the bottom of each view (an ego vehicle), so that
    a check sees the masks change which voxels are fused."""
    n, (h, w) = len(rig.camera_names), rig.image_hw
    images = [torch.rand(batch, n, 3, h, w, generator=generator) for _ in range(frames)]
    rows = torch.arange(h, dtype=torch.float32)
    top = h * (0.5 + 0.5 * torch.rand(batch, n, generator=generator))
    masks = (rows[None, None, :] < top[..., None]).float()[:, :, None, :, None].expand(batch, n, 1, h, w)
    return (*images, masks.contiguous())


class FusionDepthExport(nn.Module):
    """images [B, N, 3, H, W], masks [B, N, 1, H, W] -> (disparity, depth) [B, N, 1, H, W] of the
    fused depth network on the fixed rig (SurroundFusion.fused_depth_outputs with the rig's K and
    extrinsics for every item)."""

    input_names = ("images", "masks")
    output_names = ("disparity", "depth")

    def __init__(self, depth_net: nn.Module, rig: RigCalibration, min_depth: float, max_depth: float,
                 focal_length_scale: float):
        from network.fusion_export import GRID_SAMPLE_OPSET, FixedRigDepthNet

        super().__init__()
        self.rig = rig
        self.net = FixedRigDepthNet(depth_net, rig.K, rig.extrinsics, rig.image_hw)
        self.register_buffer("K", rig.K.clone())
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.focal_length_scale = float(focal_length_scale)
        self.min_opset = GRID_SAMPLE_OPSET

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        from models.depth_utils import focal_scaled_depth

        disp = self.net(images, masks)
        # Each camera's fx scales its depth range, as SurroundFusion.depth_from_disp does per item.
        return disp, focal_scaled_depth(disp, self.K[None], self.min_depth, self.max_depth, self.focal_length_scale)

    def example_inputs(self, batch: int, height: int, width: int, generator: torch.Generator):
        return example_rig_inputs(batch, self.rig, generator)

    def metadata(self) -> Dict[str, str]:
        return self.rig.metadata()


class FusionPoseExport(nn.Module):
    """image_a, image_b [B, N, 3, H, W], masks [B, N, 1, H, W] -> (axis_angle [B, 3], translation
    [B, 3], transform [B, 4, 4]) of the fused pose network on the fixed rig: the canonical rig
    motion from frame a to frame b (in camera 0's frame), as SurroundFusion.fused_poses builds it
    before inverting backward pairs and spreading it to the cameras."""

    input_names = ("image_a", "image_b", "masks")
    output_names = ("axis_angle", "translation", "transform")

    def __init__(self, pose_net: nn.Module, rig: RigCalibration):
        from network.fusion_export import FixedRigPoseNet

        super().__init__()
        self.rig = rig
        self.net = FixedRigPoseNet(pose_net, rig.K, rig.extrinsics, rig.image_hw)

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor, masks: torch.Tensor):
        from geometry import pose_from_axis_angle_translation

        axis_angle, translation = self.net(image_a, image_b, masks)
        return axis_angle, translation, pose_from_axis_angle_translation(axis_angle, translation)

    def example_inputs(self, batch: int, height: int, width: int, generator: torch.Generator):
        return example_rig_inputs(batch, self.rig, generator, frames=2)

    def metadata(self) -> Dict[str, str]:
        return self.rig.metadata()


# ---------------------------------------------------------------------------------------- model -> wrappers
def fused_networks(cfg) -> List[str]:
    """The networks of the config's model that fuse the cameras through a calibration."""
    if cfg.model.type != "surround_depth":
        return []
    return [name for name, kind in (("depth_net", cfg.model.depth_model), ("pose_net", cfg.model.pose_model))
            if kind == "fusion"]


def export_wrappers(cfg, model, rig: Optional[RigCalibration] = None,
                    names: Optional[Sequence[str]] = None) -> Dict[str, nn.Module]:
    """{network name: wrapper} for the networks `names` of `model` (default: all); the fusion
    networks are built for the fixed rig `rig`. Raises ExportError (with the reason) for what
    cannot be exported."""
    networks = model.networks()
    names = list(names) if names is not None else list(networks)
    t = cfg.training
    if cfg.model.type == "surround_depth":
        fused = fused_networks(cfg)
        if rig is None and any(name in fused for name in names):
            raise ExportError("the fusion networks hold a rig calibration as constants: give one (RigCalibration; "
                              "tools/export.py --calibration FILE, or the config's synthetic rig)")
        builders = {
            "depth_net": lambda: (FusionDepthExport(networks["depth_net"], rig, t.min_depth, t.max_depth,
                                                    t.focal_length_scale) if "depth_net" in fused else
                                  BaselineDepthExport(networks["depth_net"], t.min_depth, t.max_depth,
                                                      t.focal_length_scale)),
            "pose_net": lambda: (FusionPoseExport(networks["pose_net"], rig) if "pose_net" in fused else
                                 BaselinePoseExport(networks["pose_net"])),
        }
        return {name: builders[name]() for name in names}
    if cfg.model.type == "mono_sceneflow":
        from models.mono_sceneflow import sequence_layout

        layout = sequence_layout(cfg.data.frame_ids)
        return {"sceneflow_net": SceneFlowExport(networks["sceneflow_net"], len(layout["frame_ids"]),
                                                 layout["target_step"])}
    raise ExportError(f"model.type {cfg.model.type!r}: no ONNX export is defined for it "
                      f"(supported: surround_depth, mono_sceneflow)")


def graph_opset(wrapper: nn.Module, opset: int) -> int:
    """The opset a wrapper is exported at: `opset`, or more where its graph needs newer operators."""
    return max(int(opset), int(getattr(wrapper, "min_opset", opset)))


def output_paths(out: str, names: Sequence[str]) -> Dict[str, str]:
    """The first network at `out`, the others at <stem>_<name><ext> beside it."""
    stem, ext = os.path.splitext(out)
    ext = ext or ".onnx"
    return {name: (out if i == 0 else f"{stem}_{name}{ext}") for i, name in enumerate(names)}


def export_onnx(wrapper: nn.Module, path: str, height: int, width: int, opset: int = OPSET) -> None:
    """Trace `wrapper` at batch size 2 (so that the batch axis cannot be folded into a constant)
    and write it to `path` with a dynamic batch axis on every input and output, at
    graph_opset(wrapper, opset), with the wrapper's metadata (if it has any) in metadata_props."""
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
        torch.onnx.export(wrapper, example, path, dynamo=False, opset_version=graph_opset(wrapper, opset),
                          input_names=list(wrapper.input_names), output_names=list(wrapper.output_names),
                          dynamic_axes={name: {0: BATCH} for name in names}, do_constant_folding=True)
    normalise_transposes(path)
    if hasattr(wrapper, "metadata"):
        write_metadata(path, wrapper.metadata())


def write_metadata(path: str, props: Dict[str, str]) -> None:
    """Set the entries `props` of the ONNX file's metadata_props (replacing those of the same keys)."""
    import onnx

    model = onnx.load(path)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in kept + list(props.items()):
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, path)


def read_metadata(path: str) -> Dict[str, str]:
    """The metadata_props of an ONNX file as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


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


def output_difference(name: str, got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference of an output: absolute, but relative to the depth (beyond 1 m) for the
    depth in metres, where a disparity rounded differently by 1e-6 moves a far point by ~1e-3 m."""
    scale = expected.abs().clamp(min=1.0) if name == "depth" else 1.0
    return float(((got - expected).abs() / scale).max())


def verify(wrapper: nn.Module, path: str, height: int, width: int, batch_sizes: Sequence[int] = (1, 2),
           seed: int = 1) -> float:
    """Largest difference (output_difference) between onnxruntime and PyTorch over random inputs
    of each batch size."""
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
            worst = max(worst, output_difference(name, torch.from_numpy(g), e))
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
    parser.add_argument("--opset", type=int, default=OPSET,
                        help=f"ONNX opset (>= 17, default {OPSET}; the fusion depth network needs and gets 20 or more)")
    parser.add_argument("--calibration", default=None, metavar="FILE",
                        help="fusion networks: the rig calibration JSON (predict.py's rig-folder format or DGP) the "
                             "graph is made for (default: the config's synthetic rig, with a warning)")
    parser.add_argument("--calibration_size", default=None, metavar="WIDTHxHEIGHT",
                        help="--calibration: size of the images its intrinsics were measured on, when they are in "
                             "pixels (they are scaled to training.width x training.height)")
    parser.add_argument("--cameras", nargs="+", default=None, metavar="NAME",
                        help="fusion networks: the rig's cameras in input order (default: data.cameras when the "
                             "calibration has them all, else its sorted camera names)")
    parser.add_argument("--verify", action="store_true",
                        help="run each file in onnxruntime and compare with PyTorch (batch sizes 1 and 2)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="--verify: largest difference allowed (absolute; relative for depth beyond 1 m)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser


def export_rig(cfg, args, image_hw: Sequence[int]) -> RigCalibration:
    """The rig the fusion networks are exported for: --calibration (with --calibration_size and
    --cameras), else the config's synthetic rig."""
    if args.calibration is None:
        if args.calibration_size:
            raise ValueError("--calibration_size: only with --calibration (the size of its images)")
        return synthetic_calibration(cfg, image_hw, args.cameras)
    measured_hw = parse_image_size(args.calibration_size) if args.calibration_size else None
    return calibration_from_file(args.calibration, image_hw, measured_hw, args.cameras, cfg.data.cameras,
                                 cfg.data.intrinsics_convention)


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

    h, w = int(cfg.training.height), int(cfg.training.width)
    fused = [n for n in names if n in fused_networks(cfg)]
    rig = None
    if fused:
        try:
            rig = export_rig(cfg, args, (h, w))
        except (ValueError, OSError) as err:         # CalibrationError is a ValueError
            return usage_error(str(err))
        if rig.synthetic:
            print(f"warning: no --calibration: {', '.join(fused)} exported for {rig.describe()}; {CALIBRATION_NOTE}",
                  file=sys.stderr)
    elif args.calibration or args.calibration_size or args.cameras:
        return usage_error(f"--calibration/--calibration_size/--cameras: only the fusion networks are exported for a "
                           f"fixed rig; {', '.join(names)} of this model take no calibration")

    def job():
        from trainer.checkpoint import load_networks

        wrappers = export_wrappers(cfg, model, rig, names)   # refuses what cannot be exported, before loading
        load_networks(args.weight_path, model.networks(), names=names, strict=True)
        model.eval()
        for name, path in output_paths(args.out, names).items():
            wrapper = wrappers[name]
            export_onnx(wrapper, path, h, w, args.opset)
            line = f"{name}: {path} (opset {graph_opset(wrapper, args.opset)}; inputs " \
                   f"{', '.join(wrapper.input_names)} at {h}x{w}; outputs {', '.join(wrapper.output_names)}"
            line += f"; rig of {rig.describe()})" if name in fused else ")"
            if args.verify:
                worst = verify(wrapper, path, h, w)
                if not worst <= args.tolerance:
                    raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {worst:.3g} "
                                       f"(more than --tolerance {args.tolerance:g})")
                line += f"; onnxruntime matches PyTorch to {worst:.2g}"
            print(line)

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
