"""Evaluation of a scene flow model (model.type mono_sceneflow): KITTI 2015 figures, submission
files, pictures and point clouds.

    evaluate_sceneflow(cfg, model, dataset_or_loader, save_vis=..., save_out=...)   # any Algorithm
    run_sceneflow_evaluation(cfg, weight_path, ...)    # what eval.py runs (trainer.evaluate.evaluate)

What the model provides (models.base.Predictions of predict(batch, outputs); camera 0 of each map
is used, the target frame's left camera): extras["disparity"] [B, 1, 1, H, W] (KITTI disp_0),
extras["disparity_next"] [B, 1, 1, H, W] (disp_1: the disparity at t+1 of the point seen at each
target pixel), extras["optical_flow"] [B, 1, 2, H, W] (t -> t+1), all pixels at the input
resolution (H, W); scene_flow["fwd"] [B, 1, 3, H, W] metres in the camera frame; depth
[B, 1, 1, H, W] metres. Flip post-processing, where configured (eval.flip_post_process), is the
model's business.

KITTI 2015 (samples whose meta["dataset"] is "kitti_2015"; eval.kitti_split chooses the scenes):

* Resolution (spec multi-mono-sf §6): every map is resized bilinearly from the input resolution to
  the original image resolution (the ground truth's); disparities are multiplied by W_orig / W and
  the flow's u by W_orig / W, v by H_orig / H (pixels scale with the image). The resize follows
  data.intrinsics_convention: "half_pixel" resizes pixel areas (align_corners=False), "reference"
  (and "align_corners") map corner pixel centres onto corner pixel centres (align_corners=True,
  as the reference's interpolate2d_as).
* With ground truth (training scenes): utils.sceneflow_metrics.KittiSceneFlowAccumulator gives D1
  (disp_occ_0), D2 (disp_occ_1), Fl (flow_occ) and SF-all (outlier in any, on the pixels valid in
  all three), over bg / fg / all with the object map, as the benchmark pools them (total outliers /
  total valid pixels), the flow EPE, and the depth metrics (abs_rel, sq_rel, rmse, rmse_log,
  a1..a3) of depth = fx * baseline / disparity on the valid disp_0 pixels with the original K and
  the scene's stereo baseline, clamped to [eval.eval_min_depth, eval.eval_max_depth] (the
  reference: [1e-3, 80] m). The table is printed and written atomically to
  <data.log_path>/eval/metrics.json.
* save_out (eval.py --save_out, eval.save_out): the KITTI submission files, 16-bit PNGs in the
  official encoding (utils/kitti_io.py) at the original resolution, named by the KITTI scene index
  (meta["scene"]), in exactly this folder:
      <data.log_path>/submission/disp_0/<scene>_10.png    disparity of frame 10 (uint16 d * 256)
      <data.log_path>/submission/disp_1/<scene>_10.png    disparity at frame 11, at frame-10 pixels
      <data.log_path>/submission/flow/<scene>_10.png      optical flow 10 -> 11 (u, v * 64 + 2^15, valid 1)
  (<data.log_path> is results/<config name>/); zip disp_0/, disp_1/ and flow/ for the benchmark.
* save_vis (--save_vis, eval.save_vis, eval.eval_visualize): pictures at the original resolution,
  in the colour codings of utils/flow_vis.py:
      <data.log_path>/vis_results/disp_0/<scene>_10.png     disparity (plasma, linear in disparity)
      <data.log_path>/vis_results/disp_1/<scene>_10.png     same scale as disp_0
      <data.log_path>/vis_results/flow/<scene>_10.png       optical flow, Middlebury colour wheel
      <data.log_path>/vis_results/sceneflow/<scene>_10.png  scene flow, CIE-Lab coding
  On the testing scenes (no ground truth) there is nothing to measure: save_out or save_vis is
  required.

DAVIS and custom image folders (no ground truth), and any other dataset without KITTI 2015 ground
truth: per sequence (meta["scene"]) and target frame (meta["name"]), at the input resolution:
      <data.log_path>/vis_results/<sequence>/<frame>_depth.png       depth (utils.visualization.colorize_depth)
      <data.log_path>/vis_results/<sequence>/<frame>_sceneflow.png   scene flow, CIE-Lab coding
      <data.log_path>/vis_results/<sequence>/<frame>.ply             coloured point cloud (binary PLY)
The point cloud holds one point per pixel with a finite positive depth: X = depth * K^-1 (u, v, 1)
in the camera frame (OpenCV axes, metres) with K = batch["K"] at the input resolution, coloured
with the target image. These outputs are the purpose of evaluating on such data, so they are
always written.
"""

import json
import math
import os
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from trainer.evaluate import autocast, load_model_for_eval, to_device

KITTI_2015 = "kitti_2015"
SUBMISSION_DIR = "submission"
VIS_DIR = "vis_results"
SUBMISSION_FOLDERS = ("disp_0", "disp_1", "flow")
KITTI_GT_KEYS = ("kitti2015_disp0", "kitti2015_disp1", "kitti2015_flow", "kitti2015_flow_valid", "kitti2015_obj_map")
# Predictions the KITTI evaluation and submission need: key in Predictions.extras -> what it is.
KITTI_ESTIMATES = {"disparity": "disp_0: disparity of the target frame",
                   "disparity_next": "disp_1: disparity at t+1 of the point at each target pixel",
                   "optical_flow": "optical flow t -> t+1"}


# ----------------------------------------------------------------------------------------------
# Entry points


def run_sceneflow_evaluation(cfg, weight_path: Optional[str] = None, save_vis: bool = False,
                             save_out: bool = False) -> Dict:
    """eval.py for model.type mono_sceneflow: the networks of load.models_to_load (an empty list:
    all) from `weight_path` (default data.load_weights_dir), on the "eval" split."""
    from dataset.build import build_dataset
    from trainer.distributed import Launch, device_for

    device = device_for(cfg, Launch())
    folder = weight_path or cfg.data.load_weights_dir
    model = load_model_for_eval(cfg, folder, device)
    dataset = build_dataset(cfg, "eval")
    return evaluate_sceneflow(cfg, model, dataset, weights=folder, device=device,
                              save_vis=save_vis or cfg.eval.save_vis or cfg.eval.eval_visualize,
                              save_out=save_out or cfg.eval.save_out)


def evaluate_sceneflow(cfg, model, data, *, weights: str = "", save_vis: bool = False, save_out: bool = False,
                       device: Optional[torch.device] = None, output_root: Optional[str] = None,
                       progress: bool = True) -> Dict:
    """Run `model` (an Algorithm) over `data` (a Dataset, batched with eval.eval_batch_size and
    collate_ragged, or a ready DataLoader) and produce what the module docstring lists under
    `output_root` (default data.log_path). Returns the summary: for KITTI 2015 with ground truth
    the dict written to metrics.json (figures under "metrics"), otherwise the counts and folders."""
    from tqdm import tqdm

    output_root = output_root or cfg.data.log_path
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    loader = data if isinstance(data, DataLoader) else make_eval_loader(cfg, data, device)
    dataset = loader.dataset
    _check_something_to_do(cfg, dataset, save_vis, save_out)

    writer = _Writer(cfg, output_root, save_vis=save_vis, save_out=save_out)
    accumulator = None
    input_hw = None
    model.eval()
    total = len(dataset) if hasattr(dataset, "__len__") else None
    bar = tqdm(total=total, desc=f"eval {cfg.name}", unit="img", dynamic_ncols=True, disable=not progress)
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with torch.no_grad(), autocast(cfg, device):
                predictions = model.predict(batch, model(batch))
            maps = prediction_maps(predictions)
            input_hw = tuple(maps["depth"].shape[-2:])
            if _meta_value(batch, "dataset", 0) == KITTI_2015:
                if "kitti2015_disp0" in batch and accumulator is None:
                    accumulator = _accumulator(cfg)
                _kitti_batch(cfg, batch, maps, accumulator, writer)
            else:
                writer.sequence_outputs(batch, maps)
            bar.update(int(maps["depth"].shape[0]))
    finally:
        bar.close()

    result = {"config": cfg.name, "weights": weights, "num_samples": writer.num_samples,
              "input_hw": list(input_hw) if input_hw else None, "outputs": writer.folders()}
    if writer.sequences:
        result["sequences"] = dict(writer.sequences)
    if accumulator is not None:
        split = getattr(dataset, "split", None)
        print(f"{cfg.name}: {writer.num_samples} KITTI 2015 images"
              + (f" (split {split})" if split else "") + f", weights {weights or '(given model)'}")
        print(accumulator.format_table())
        print(_depth_line(accumulator.compute()))
        result.update({"split": split, **accumulator.to_dict()})
        _write_metrics(output_root, result)
    else:
        print(f"{cfg.name}: {writer.num_samples} samples, weights {weights or '(given model)'}; no ground truth")
    for folder in writer.folders():
        print(f"written: {folder}")
    return result


def make_eval_loader(cfg, dataset: Dataset, device: torch.device) -> DataLoader:
    """The evaluation DataLoader: every sample once, in order, eval.eval_batch_size per batch,
    collate_ragged (KITTI 2015's ground truth differs in size between recording dates)."""
    return DataLoader(dataset, batch_size=cfg.eval.eval_batch_size, shuffle=False, drop_last=False,
                      num_workers=cfg.eval.eval_num_workers, pin_memory=device.type == "cuda",
                      collate_fn=collate_ragged)


def collate_ragged(samples: Sequence[Mapping]) -> Dict:
    """default_collate, except that a tensor key whose shapes differ between the samples becomes a
    list of the samples' tensors (KITTI 2015 ground truth is at the original resolution, 1242,
    1238, 1241, 1226 or 1224 pixels wide, while the images are resized to one input size)."""
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor) and len({tuple(v.shape) for v in values}) > 1:
            out[key] = values
        else:
            out[key] = default_collate(values)
    return out


# ----------------------------------------------------------------------------------------------
# Predictions


def prediction_maps(predictions) -> Dict[str, torch.Tensor]:
    """Camera 0 of the prediction maps as float32 [B, C, H, W]: depth, and where the model gives
    them disparity, disparity_next, optical_flow (extras) and scene_flow (scene_flow["fwd"])."""
    maps = {"depth": predictions.depth}
    for key in KITTI_ESTIMATES:
        if key in predictions.extras:
            maps[key] = predictions.extras[key]
    if "fwd" in predictions.scene_flow:
        maps["scene_flow"] = predictions.scene_flow["fwd"]
    channels = {"depth": 1, "disparity": 1, "disparity_next": 1, "optical_flow": 2, "scene_flow": 3}
    out = {}
    for key, value in maps.items():
        if value.dim() == 5:                          # [B, N, C, H, W]: the target's left camera
            value = value[:, 0]
        if value.dim() != 4 or value.shape[1] != channels[key]:
            raise ValueError(f"model.predict(): {key} must be [B, N, {channels[key]}, H, W], got {tuple(value.shape)}")
        out[key] = value.float()
    return out


def _require(maps: Mapping[str, torch.Tensor], keys, what: str) -> None:
    missing = [k for k in keys if k not in maps]
    if missing:
        needs = "; ".join(f"extras['{k}'] ({KITTI_ESTIMATES.get(k, 'scene flow')})" if k != "scene_flow"
                          else "scene_flow['fwd']" for k in missing)
        raise KeyError(f"{what} needs from model.predict(): {needs}; the model returned extras "
                       f"{sorted(k for k in maps if k in KITTI_ESTIMATES)}")


def resize_map(x: torch.Tensor, hw: Tuple[int, int], convention: str, kind: str) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, hw]: bilinear resize (module docstring: align_corners from the
    intrinsics convention); "disparity" values are multiplied by W'/W, "flow" u by W'/W and v by
    H'/H (pixel units follow the image), anything else (depth, scene flow) is resized only."""
    h, w = x.shape[-2:]
    hw = (int(hw[0]), int(hw[1]))
    if (h, w) != hw:
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=convention != "half_pixel")
    if kind == "disparity":
        return x * (hw[1] / w)
    if kind == "flow":
        return x * torch.tensor([hw[1] / w, hw[0] / h], dtype=x.dtype, device=x.device).view(1, 2, 1, 1)
    return x


# ----------------------------------------------------------------------------------------------
# KITTI 2015


def _accumulator(cfg):
    from utils.sceneflow_metrics import KittiSceneFlowAccumulator
    return KittiSceneFlowAccumulator(min_depth=cfg.eval.eval_min_depth or None,
                                     max_depth=cfg.eval.eval_max_depth or None)


def _meta_value(batch: Mapping, key: str, b: int, default=None):
    meta = batch.get("meta") or {}
    if key not in meta:
        return default
    value = meta[key]
    if isinstance(value, torch.Tensor):
        return value[b].item() if value.dim() else value.item()
    if isinstance(value, (list, tuple)):
        return value[b]
    return value


def _original_hw(batch: Mapping, b: int) -> Tuple[int, int]:
    """The original image size of sample b: its ground truth's, else the target image file's."""
    if "kitti2015_disp0" in batch:
        return tuple(int(s) for s in batch["kitti2015_disp0"][b].shape[-2:])
    files = (batch.get("meta") or {}).get("files")
    if not files:
        raise KeyError("a KITTI 2015 sample without ground truth must name its image in meta['files'] "
                       "(the original resolution of the submission files is read from it)")
    from dataset.image_io import image_size
    return tuple(int(s) for s in image_size(files[0][b]))


def _stack(value, index: List[int]) -> torch.Tensor:
    """Samples `index` of a batch entry (a stacked tensor, or collate_ragged's list) as one tensor."""
    if isinstance(value, torch.Tensor):
        return value[index]
    return torch.stack([value[i] for i in index])


def _kitti_batch(cfg, batch: Mapping, maps: Mapping[str, torch.Tensor], accumulator, writer: "_Writer") -> None:
    """Bring a KITTI 2015 batch to the original resolution, score it against the ground truth (when
    there) and write its submission files / pictures."""
    has_gt = accumulator is not None and "kitti2015_disp0" in batch
    if has_gt or writer.save_out:
        _require(maps, KITTI_ESTIMATES, "the KITTI 2015 evaluation" if has_gt else "--save_out")
    convention = cfg.data.intrinsics_convention
    batch_size = maps["depth"].shape[0]
    sizes = [_original_hw(batch, b) for b in range(batch_size)]
    # One resize for the whole batch when its images share a size (one recording date), else per sample.
    groups = [(list(range(batch_size)), sizes[0])] if len(set(sizes)) == 1 else [([b], sizes[b]) for b in range(batch_size)]
    for index, hw in groups:
        full = {}
        for key, kind in (("disparity", "disparity"), ("disparity_next", "disparity"), ("optical_flow", "flow"),
                          ("scene_flow", "other")):
            if key in maps:
                full[key] = resize_map(maps[key][index], hw, convention, kind)
        if has_gt:
            gt = {k: _stack(batch[k], index) for k in KITTI_GT_KEYS}
            accumulator.update(disp0_est=full["disparity"], disp0_gt=gt["kitti2015_disp0"],
                               disp1_est=full["disparity_next"], disp1_gt=gt["kitti2015_disp1"],
                               flow_est=full["optical_flow"], flow_gt=gt["kitti2015_flow"],
                               flow_valid=gt["kitti2015_flow_valid"], obj_map=gt["kitti2015_obj_map"],
                               focal_length=_stack(batch["kitti2015_K"], index)[:, 0, 0],
                               baseline=_baselines(batch, index))
        for j, b in enumerate(index):
            scene = _meta_value(batch, "scene", b)
            if scene is None:
                raise KeyError("KITTI 2015 samples must carry meta['scene'] (the scene index that names the files)")
            writer.kitti_outputs(str(scene), {k: v[j] for k, v in full.items()})


def _baselines(batch: Mapping, index: List[int]) -> torch.Tensor:
    """Stereo baseline (metres) of samples `index`: meta["baseline"], else the rig's extrinsics."""
    meta = batch.get("meta") or {}
    if "baseline" in meta:
        value = meta["baseline"]
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        return value.reshape(-1)[index].double()
    t = _stack(batch["extrinsics"], index)[:, :, :3, 3]
    return torch.linalg.vector_norm(t[:, 1] - t[:, 0], dim=-1).double()


def _check_something_to_do(cfg, dataset, save_vis: bool, save_out: bool) -> None:
    if getattr(dataset, "load_gt", True) is False and not (save_vis or save_out):
        raise ValueError(f"eval.kitti_split={cfg.eval.kitti_split!r}: these KITTI 2015 scenes have no ground truth "
                         f"({getattr(dataset, 'root', '?')}), so there is nothing to measure; pass --save_out "
                         f"(eval.save_out=true) for the submission files and/or --save_vis for pictures, or use "
                         f"eval.kitti_split=full for the figures")


def _depth_line(result: Mapping[str, float]) -> str:
    from utils.depth_metrics import METRIC_NAMES
    return "depth: " + "  ".join(f"{m} {result[m]:.4f}" for m in METRIC_NAMES if m in result)


def _write_metrics(root: str, result: Mapping) -> None:
    from utils.atomic import write_text_atomic

    def plain(value):          # JSON has no NaN: write null, as accumulator.to_dict does
        return None if isinstance(value, float) and not math.isfinite(value) else value
    result = {k: ({kk: plain(vv) for kk, vv in v.items()} if isinstance(v, dict) else plain(v))
              for k, v in result.items()}
    path = os.path.join(root, "eval", "metrics.json")
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    print(f"metrics written to {path}")


# ----------------------------------------------------------------------------------------------
# Files


class _Writer:
    """Writes the submission files, pictures and point clouds of one evaluation run."""

    def __init__(self, cfg, root: str, save_vis: bool, save_out: bool):
        self.cfg = cfg
        self.root = root
        self.save_vis = save_vis
        self.save_out = save_out
        self.num_samples = 0
        self.sequences: Counter = Counter()
        self._folders = set()

    def folders(self) -> List[str]:
        return sorted(self._folders)

    def _png(self, path: str, rgb: np.ndarray) -> None:
        import cv2

        from utils.atomic import write_bytes_atomic
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"could not encode {path} as PNG")
        write_bytes_atomic(path, png.tobytes())

    def kitti_outputs(self, scene: str, full: Mapping[str, torch.Tensor]) -> None:
        """Submission files and pictures of one KITTI 2015 scene; `full` holds its maps [C, H, W]
        at the original resolution."""
        from utils.flow_vis import colorize_disparity, flow_to_color, sceneflow_to_color
        from utils.kitti_io import write_disparity_png, write_flow_png

        self.num_samples += 1
        if not (self.save_out or self.save_vis):
            return
        name = f"{scene}_10.png"
        cpu = {k: v.detach().cpu().numpy() for k, v in full.items()}
        if self.save_out:
            base = os.path.join(self.root, SUBMISSION_DIR)
            self._folders.add(base)
            # kitti_io writes in the official encoding; a temporary name then a rename keeps a
            # half-written PNG from ever standing under the final name.
            for folder, write, value in (("disp_0", write_disparity_png, cpu["disparity"][0]),
                                         ("disp_1", write_disparity_png, cpu["disparity_next"][0]),
                                         ("flow", write_flow_png, cpu["optical_flow"])):
                path = os.path.join(base, folder, name)
                tmp = os.path.join(base, folder, f".{os.getpid()}.{name}")
                write(tmp, value)
                os.replace(tmp, path)
        if self.save_vis:
            base = os.path.join(self.root, VIS_DIR)
            self._folders.add(base)
            if "disparity" in cpu:
                top = float(np.nanmax(cpu["disparity"])) if np.isfinite(cpu["disparity"]).any() else None
                self._png(os.path.join(base, "disp_0", name), colorize_disparity(cpu["disparity"][0], max_disp=top))
                if "disparity_next" in cpu:
                    self._png(os.path.join(base, "disp_1", name), colorize_disparity(cpu["disparity_next"][0], max_disp=top))
            if "optical_flow" in cpu:
                self._png(os.path.join(base, "flow", name), flow_to_color(cpu["optical_flow"]))
            if "scene_flow" in cpu:
                self._png(os.path.join(base, "sceneflow", name), sceneflow_to_color(cpu["scene_flow"]))

    def sequence_outputs(self, batch: Mapping, maps: Mapping[str, torch.Tensor]) -> None:
        """Depth and scene flow pictures and the point cloud of each sample of a batch without
        ground truth (DAVIS, image folders), at the input resolution."""
        from geometry import backproject, invert_intrinsics
        from utils.flow_vis import sceneflow_to_color
        from utils.ply import write_ply
        from utils.visualization import colorize_depth

        depth = maps["depth"]
        points = backproject(depth, invert_intrinsics(batch["K"][:, 0].float()))     # [B, 3, H, W]
        frame_ids = batch["frame_ids"]
        for b in range(depth.shape[0]):
            target = int((frame_ids[b] == 0).nonzero()[0, 0])                         # sample order of frame 0
            image = batch["image"][b, target, 0].float()                               # [3, H, W] in [0, 1]
            sequence = str(_meta_value(batch, "scene", b, "sequence"))
            frame = _meta_value(batch, "name", b)
            if frame is None:
                frame = f"{int(_meta_value(batch, 'frame', b, self.num_samples)):06d}"
            folder = os.path.join(self.root, VIS_DIR, sequence)
            self._folders.add(folder)
            d = depth[b, 0]
            valid = torch.isfinite(d) & (d > 0)
            self._png(os.path.join(folder, f"{frame}_depth.png"), colorize_depth(d.cpu()))
            if "scene_flow" in maps:
                self._png(os.path.join(folder, f"{frame}_sceneflow.png"), sceneflow_to_color(maps["scene_flow"][b].cpu()))
            xyz = points[b].permute(1, 2, 0)[valid]                                    # [M, 3], row-major pixels
            rgb = image.permute(1, 2, 0)[valid]
            write_ply(os.path.join(folder, f"{frame}.ply"), xyz.cpu().numpy(), rgb.cpu().numpy(),
                      comments=(f"{self.cfg.name}: sequence {sequence}, frame {frame}; camera frame, metres",))
            self.sequences[sequence] += 1
            self.num_samples += 1
