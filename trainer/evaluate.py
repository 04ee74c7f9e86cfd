"""Depth evaluation against ground truth: the whole "eval" split, every sample counted.

Protocol (spec vfdepth §6, with the differences utils/depth_metrics.py documents): the predicted
depth of every camera is resized to the ground truth, pixels count where eval_min < gt < eval_max
and the self-occlusion mask is set (and inside eval.crop), and the metrics are computed per image
and camera, raw ("metric") and median-scaled per image ("median"), then averaged over images per
camera and over cameras. No sample is dropped: the last batch may be smaller. The printed table,
metrics.json and the validation scalars of training report the modes of eval.scale_modes only.

Outputs: the printed table, <data.log_path>/eval/metrics.json (written atomically) and, with
save_vis, <data.log_path>/vis_results/cam<i>/<index>_depth.png.

The helpers at the top (moving a batch, autocast, one-batch metrics) are shared with the trainer.
"""

import contextlib
import json
import math
import os
from typing import Dict, Mapping, Optional, Sequence

import torch
from torch.utils.data import DataLoader

PNG_INDEX_DIGITS = 3     # vis_results/cam0/007_depth.png, as the reference's NNN_disp.jpg


# ----------------------------------------------------------------------------------------------
# Shared with the training loop


def to_device(batch: Mapping, device: torch.device) -> Dict:
    """The batch with its tensors on `device`; everything else (the `meta` dict) left alone."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(cfg, device: torch.device):
    """The mixed-precision context of training.amp (a no-op context when it is off)."""
    if cfg.training.amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[cfg.training.amp])


def metrics_accumulator(cfg, num_cameras: Optional[int] = None):
    """A DepthMetricsAccumulator with the config's evaluation protocol, for the first num_cameras
    cameras of data.cameras (default all: a model may predict depth for fewer cameras than the
    sample carries, e.g. the scene-flow model for the left camera of a stereo pair)."""
    from utils.depth_metrics import DepthMetricsAccumulator
    return DepthMetricsAccumulator(list(cfg.data.cameras)[:num_cameras], min_depth=cfg.eval.eval_min_depth,
                                   max_depth=cfg.eval.eval_max_depth, crop=cfg.eval.crop)


def update_metrics(accumulator, batch: Mapping, depth: torch.Tensor) -> None:
    """Add one batch: predicted depth [B, N', 1, H, W] against the ground truth (and masks) of
    the first N' cameras of batch["depth_gt"]."""
    if "depth_gt" not in batch:
        raise RuntimeError("the evaluation samples carry no ground-truth depth: add gt_depth to "
                           "data.val_requirements (and check data.depth_type)")
    n = depth.shape[1]
    mask = batch.get("mask")
    accumulator.update(depth.float(), batch["depth_gt"][:, :n], mask[:, :n] if mask is not None else None)


def summary_scalars(accumulator, modes: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """{"<mode>/<metric>": mean over cameras for each mode of `modes` (eval.scale_modes; None:
    all), "scale/<camera>": median scale} for TensorBoard (entries without data left out)."""
    from utils.depth_metrics import METRIC_NAMES, resolve_modes
    result = accumulator.compute()
    values = {}
    for mode in resolve_modes(modes):
        for k, name in enumerate(METRIC_NAMES):
            values[f"{mode}/{name}"] = float(result[mode]["all"][k])
    for camera, stats in result["scale"].items():
        values[f"scale/{camera}"] = float(stats["median"])
    return {k: v for k, v in values.items() if math.isfinite(v)}


# ----------------------------------------------------------------------------------------------
# The evaluation run


def evaluate(cfg, weight_path: Optional[str] = None, save_vis: bool = False, save_out: bool = False) -> Dict:
    """Evaluate the networks of load.models_to_load from `weight_path` (default
    data.load_weights_dir) on the "eval" split; returns the metrics dict written to metrics.json.
    A mono_sceneflow model goes to trainer/evaluate_sceneflow.py (KITTI 2015 D1/D2/Fl/SF,
    submission files with `save_out`, DAVIS point clouds)."""
    if cfg.model.type == "mono_sceneflow":
        from trainer.evaluate_sceneflow import run_sceneflow_evaluation
        return run_sceneflow_evaluation(cfg, weight_path, save_vis=save_vis, save_out=save_out)

    from tqdm import tqdm

    from dataset.build import build_dataset
    from trainer.distributed import Launch, device_for
    from utils.atomic import write_text_atomic
    from utils.depth_metrics import resolve_modes

    modes = resolve_modes(cfg.eval.scale_modes)      # a bad list fails now, not after the whole split
    device = device_for(cfg, Launch())
    folder = weight_path or cfg.data.load_weights_dir
    model = load_model_for_eval(cfg, folder, device)
    dataset = build_dataset(cfg, "eval")
    loader = DataLoader(dataset, batch_size=cfg.eval.eval_batch_size, shuffle=False, drop_last=False,
                        num_workers=cfg.eval.eval_num_workers, pin_memory=device.type == "cuda")
    accumulator = metrics_accumulator(cfg)
    save_vis = save_vis or cfg.eval.eval_visualize or cfg.eval.save_vis
    index = 0
    for batch in tqdm(loader, desc=f"eval {cfg.name}", unit="batch", dynamic_ncols=True):
        batch = to_device(batch, device)
        with torch.no_grad(), autocast(cfg, device):
            depth = model.predict(batch, model(batch)).depth
        update_metrics(accumulator, batch, depth)
        if save_vis:
            save_depth_pictures(cfg, depth, index)
        index += depth.shape[0]
    print(f"{cfg.name}: {index} samples, weights {folder}")
    print(accumulator.format_table(modes=modes))
    result = {"config": cfg.name, "weights": folder, "num_samples": index, "cameras": list(cfg.data.cameras),
              "scale_modes": modes, **accumulator.to_dict(modes=modes)}
    path = os.path.join(cfg.data.log_path, "eval", "metrics.json")
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    print(f"metrics written to {path}")
    if cfg.eval.syn_visualize:
        render_synthesis_sweep(cfg, model, dataset, device)
    return result


def render_synthesis_sweep(cfg, model, dataset, device: torch.device):
    """The novel-view depth sweep of camera 0 (roll, pitch, focal length, a full yaw turn; spec
    vfdepth §3.6) for sample eval.syn_idx, into <data.log_path>/syn_results/ as NNN_syndepth.png
    and synthesis.gif. Runs after the full-set metrics, so it cannot change them."""
    from torch.utils.data import default_collate

    from models.depth_synthesis import render_sweep

    if not getattr(model, "fused_depth", False):
        raise ValueError("eval.syn_visualize: novel-view depth synthesis needs the fusion depth network "
                         f"(model.depth_model: fusion), not {cfg.model.depth_model!r}")
    index = cfg.eval.syn_idx or 0
    if not 0 <= index < len(dataset):
        raise ValueError(f"eval.syn_idx: {index} is not a sample of the evaluation split (0..{len(dataset) - 1})")
    batch = to_device(default_collate([dataset[index]]), device)
    with torch.no_grad(), autocast(cfg, device):
        volume = model(batch)["volume"]
    image_hw = tuple(batch["image"].shape[-2:])

    def render(K, E):
        with autocast(cfg, device):
            return model.render_depth(volume, K.to(device), E.to(device), image_hw)[1].float()
    out_dir = os.path.join(cfg.data.log_path, "syn_results")
    paths = render_sweep(render, batch["K"][0, 0].cpu(), batch["extrinsics"][0, 0].cpu(), image_hw, out_dir,
                         stride=cfg.eval.syn_stride)
    print(f"novel-view synthesis of sample {index}: {len(paths) - 1} frames and {os.path.basename(paths[-1])} "
          f"written to {out_dir}")
    return paths


def load_model_for_eval(cfg, folder: str, device: torch.device):
    """The algorithm of the config with the networks of load.models_to_load read from `folder`
    (the others keep their initialisation), in eval mode."""
    from models import build_model       # importing the package registers every algorithm
    from trainer.checkpoint import load_networks

    model = build_model(cfg, device)
    names = list(cfg.load.models_to_load) or list(model.network_names)
    unknown = [n for n in names if n not in model.network_names]
    if unknown:
        raise ValueError(f"load.models_to_load: {unknown} are not networks of this model "
                         f"(it has {list(model.network_names)})")
    load_networks(folder, model.networks(), names=names, strict=True)
    return model.eval()


def save_depth_pictures(cfg, depth: torch.Tensor, first_index: int) -> None:
    """vis_results/cam<i>/<index>_depth.png: the colourised predicted depth of every camera."""
    import cv2

    from utils.atomic import write_bytes_atomic
    from utils.visualization import colorize_depth

    root = os.path.join(cfg.data.log_path, "vis_results")
    depth = depth.detach().float().cpu()
    for b in range(depth.shape[0]):
        for cam in range(depth.shape[1]):
            picture = colorize_depth(depth[b, cam, 0])
            ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError("could not encode a depth picture as PNG")
            name = f"{first_index + b:0{PNG_INDEX_DIGITS}d}_depth.png"
            write_bytes_atomic(os.path.join(root, f"cam{cam}", name), png.tobytes())
