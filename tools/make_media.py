"""`make media`: the README's pictures and animations, made by the project's own code.

    python tools/make_media.py [--out media] [--weight_path W] [--sf_weight_path W] [--shared_data DIR]
                               [--only synthetic_ddad,real_ddad,synthetic_kitti,real_sceneflow]

Writes into --out (default media/):

    synthetic_ddad_depth.jpg        a synthetic DDAD validation sample: the six camera images, the
                                    depth the surround fusion model predicts, the rendered depth
    synthetic_ddad_cloud.jpg        all six cameras fused into one coloured point cloud in the rig
                                    frame, seen obliquely from above: ground-truth depth | predicted
    synthetic_ddad_synthesis.gif    novel-view depth synthesis: camera 0's viewpoint swept through
                                    roll, pitch, focal length and a full turn (models/depth_synthesis)
    synthetic_kitti_sceneflow.gif   the scene flow model on a synthetic KITTI drive: image, disparity,
                                    optical flow and scene flow, prediction above ground truth
    real_ddad_depth.jpg             the same as the first two on the real DGP (DDAD format) test
    real_ddad_cloud.jpg             scene of ../shared/data, with its lidar as the reference
    real_kitti_sceneflow.gif        the scene flow model on real KITTI raw frames
    real_davis_sceneflow.gif        ... on the real DAVIS frames (no calibration: 700 px assumed)

Models. The surround fusion model is the demo's: configs/synthetic/ddad_surround_fusion.yaml
trained for its 8 epochs (about 3 minutes on 2 CPU cores, exactly what `make demo` trains); the
scene flow model is configs/synthetic/kitti_selfsup.yaml trained for its 2 epochs (about 2.5
minutes). Without --weight_path / --sf_weight_path they are trained into results/media/<config
name>/ on the first run and reused afterwards. Both are short CPU runs on the synthetic world, not
converged models: the pictures show what the code produces after that, not the papers' figures.

The real samples (DESIGN.md: ../shared/data, SFDEPTH_SHARED_DATA elsewhere) are only read; the
DDAD lidar depth cache goes to a temporary folder. Pictures that need a missing sample are skipped
with a message. Run time once the models exist: 3.7 minutes on 2 CPU cores shared with other
jobs (2.7 minutes of CPU time).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FUSION_CONFIG = os.path.join("configs", "synthetic", "ddad_surround_fusion.yaml")
FUSION_OVERRIDES = ["model.weights_init=false"]          # the demo's: nothing to download
SCENEFLOW_CONFIG = os.path.join("configs", "synthetic", "kitti_selfsup.yaml")
SCENEFLOW_LOAD = ["load.models_to_load=[]"]              # all its networks (the default [depth_net] is not one)
TRAIN_LOG_DIR = os.path.join("results", "media")
SHARED_DATA = os.environ.get("SFDEPTH_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))

JPEG_QUALITY = 88
GIF_FRAME_MS = 300               # sequences: slow enough to follow the motion frame by frame
SWEEP_STRIDE = 8                 # 96 of the sweep's 767 viewpoints (the demo's eval.syn_stride): GIF < 2 MB
SWEEP_FRAME_MS = 60
GRID_MAX_WIDTH = 1500            # pixels: six camera tiles side by side
STRIP_MAX_WIDTH = 1200           # pixels: image | disparity | optical flow | scene flow
DEPTH_COLOUR_MAX = 80.0          # metres: far end of the depth colours (the scene flow model's cap)
DEPTH_COLOUR_MIN = 1.0
FLOW_SCALE_PERCENTILE = 98.0     # colour scales of disparity, optical and scene flow (see flow_scales)

# The point-cloud view: a virtual camera behind, left of and above the rig, looking ahead and down.
CLOUD_HW = (420, 640)
CLOUD_FOCAL = 420.0              # pixels: about 75 degrees horizontal field of view
CLOUD_EYE = (-30.0, 12.0, 45.0)  # rig frame (x forward, y left, z up), metres
CLOUD_TARGET = (4.0, -1.0, 0.0)
CLOUD_MAX_RANGE = 40.0           # metres from the rig origin (drops the far backdrop and sky)
CLOUD_MAX_HEIGHT = 12.0          # metres above the rig origin
CLOUD_BACKGROUND = (24, 24, 28)
NEAR_PLANE = 0.1

# The real DDAD sample: scene_02 is the DGP test scene with all six DDAD cameras.
DGP_SCENE = "scene_02/scene_fe9f29d3bde25d182dcf88caf1011acd8cc13624.json"
DDAD_CAMERAS = ["CAMERA_01", "CAMERA_05", "CAMERA_06", "CAMERA_07", "CAMERA_08", "CAMERA_09"]


# ----------------------------------------------------------------------------------------------
# Point clouds: depth -> coloured points in the rig frame -> a picture from a virtual camera


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """T_view_rig [4, 4] of a camera (OpenCV axes: x right, y down, z forward) at `eye` looking at
    `target`, with `up` (rig frame) pointing up in its picture."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError(f"look_at: the up vector {tuple(up)} is parallel to the viewing direction")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, forward])        # rows: the view's axes in the rig frame
    T[:3, 3] = -T[:3, :3] @ eye
    return T


def depth_to_points(depth: np.ndarray, K: np.ndarray, T_rig_cam: np.ndarray, image: np.ndarray,
                    valid: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(points [M, 3] in the rig frame, colours [M, 3] uint8) of the pixels of `depth` [H, W]
    (metres; 0 or non-finite = none) with a depth, X = T_rig_cam (depth K^-1 (u, v, 1)) for K at
    the depth's resolution. The colour of each point is the pixel of `image` (uint8 [h, w, 3],
    any size: pixel centres are scaled) where it was seen: sparse lidar depth at the sensor's
    resolution takes its colours from a far smaller picture this way."""
    ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= valid > 0
    v, u = np.nonzero(ok)
    z = depth[v, u].astype(np.float64)
    rays = np.linalg.inv(K) @ np.stack([u, v, np.ones_like(u)]).astype(np.float64)     # [3, M]
    points = (T_rig_cam[:3, :3] @ (rays * z) + T_rig_cam[:3, 3:4]).T
    h, w = depth.shape
    ih, iw = image.shape[:2]
    iu = np.clip(np.rint((u + 0.5) * iw / w - 0.5), 0, iw - 1).astype(np.intp)
    iv = np.clip(np.rint((v + 0.5) * ih / h - 0.5), 0, ih - 1).astype(np.intp)
    return points, image[iv, iu]


def rig_cloud(depths: Sequence[np.ndarray], Ks: Sequence[np.ndarray], extrinsics: Sequence[np.ndarray],
              images: Sequence[np.ndarray], masks: Optional[Sequence[np.ndarray]] = None,
              max_range: float = CLOUD_MAX_RANGE,
              max_height: float = CLOUD_MAX_HEIGHT) -> Tuple[np.ndarray, np.ndarray]:
    """All cameras' points fused in the rig frame, kept within `max_range` metres (horizontally)
    of the rig origin and below `max_height`: the far backdrop would otherwise shrink the street
    to a few pixels."""
    parts = [depth_to_points(d, K, T, img, None if masks is None else masks[n])
             for n, (d, K, T, img) in enumerate(zip(depths, Ks, extrinsics, images))]
    points = np.concatenate([p for p, _ in parts])
    colours = np.concatenate([c for _, c in parts])
    keep = (np.hypot(points[:, 0], points[:, 1]) <= max_range) & (points[:, 2] <= max_height)
    return points[keep], colours[keep]


def render_points(points: np.ndarray, colours: np.ndarray, K: np.ndarray, T_view_rig: np.ndarray,
                  hw: Sequence[int], radius: int = 1, background=CLOUD_BACKGROUND) -> np.ndarray:
    """uint8 RGB [H, W, 3]: the coloured `points` [M, 3] (rig frame) seen by a pinhole camera K
    [3, 3] at T_view_rig, each drawn as a (2 radius + 1)^2 pixel square (so that a sparse cloud
    still reads as surfaces), with a z-buffer: where squares overlap the nearest point shows.
    Vectorised: the squares' pixels are sorted by (pixel, depth) and the first of each pixel wins."""
    h, w = int(hw[0]), int(hw[1])
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = np.asarray(background, np.uint8)
    cam = points.astype(np.float64) @ T_view_rig[:3, :3].T + T_view_rig[:3, 3]
    front = cam[:, 2] > NEAR_PLANE
    cam, colours = cam[front], colours[front]
    if not len(cam):
        return canvas
    pix = cam @ K.T
    u = np.rint(pix[:, 0] / pix[:, 2]).astype(np.int64)
    v = np.rint(pix[:, 1] / pix[:, 2]).astype(np.int64)
    offsets = np.arange(-radius, radius + 1)
    du, dv = (a.ravel() for a in np.meshgrid(offsets, offsets))
    source = np.repeat(np.arange(len(cam)), du.size)          # which point each square pixel shows
    us = (u[:, None] + du[None]).ravel()
    vs = (v[:, None] + dv[None]).ravel()
    inside = (us >= 0) & (us < w) & (vs >= 0) & (vs < h)
    source, flat = source[inside], vs[inside] * w + us[inside]
    order = np.lexsort((cam[source, 2], flat))                  # by pixel, nearest first
    first = np.ones(order.size, bool)
    first[1:] = flat[order][1:] != flat[order][:-1]
    winners = order[first]
    canvas.reshape(-1, 3)[flat[winners]] = colours[source[winners]]
    return canvas


def mark_cameras(picture: np.ndarray, extrinsics: Sequence[np.ndarray], K: np.ndarray,
                 T_view_rig: np.ndarray) -> np.ndarray:
    """The rig's camera centres drawn as white dots: where the cloud was seen from."""
    import cv2

    centres = np.stack([T[:3, 3] for T in extrinsics]) @ T_view_rig[:3, :3].T + T_view_rig[:3, 3]
    for x, y, z in centres:
        if z > NEAR_PLANE:
            u, v = K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]
            cv2.circle(picture, (int(round(u)), int(round(v))), 3, (255, 255, 255), -1, cv2.LINE_AA)
    return picture


def cloud_view_K(hw: Sequence[int] = CLOUD_HW, focal: float = CLOUD_FOCAL) -> np.ndarray:
    return np.array([[focal, 0.0, (hw[1] - 1) / 2.0], [0.0, focal, (hw[0] - 1) / 2.0], [0.0, 0.0, 1.0]])


def cloud_picture(depths, Ks, extrinsics, images, masks=None, radius: int = 1) -> np.ndarray:
    """The fused cloud of a rig rendered from the fixed oblique viewpoint, cameras marked."""
    points, colours = rig_cloud(depths, Ks, extrinsics, images, masks)
    K, T = cloud_view_K(), look_at(CLOUD_EYE, CLOUD_TARGET)
    return mark_cameras(render_points(points, colours, K, T, CLOUD_HW, radius=radius), extrinsics, K, T)


# ----------------------------------------------------------------------------------------------
# Grids and strips


def depth_grid(images: Sequence[np.ndarray], predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray],
               camera_names: Sequence[str], reference_label: str, sparse_reference: bool = False,
               masks: Optional[Sequence[np.ndarray]] = None, max_width: int = GRID_MAX_WIDTH) -> np.ndarray:
    """One picture: the cameras' images (top row), predicted depth (middle) and reference depth
    (bottom; lidar dots on the image when `sparse_reference`), one column per camera. Prediction
    and reference of a camera share one colour range (the reference's, capped at
    DEPTH_COLOUR_MAX), so equal colours mean equal depth. `masks` (1 = scene, 0 = ego vehicle,
    at each depth map's resolution) blacks out the ego body, which is no part of the task."""
    from utils.visualization import colorize_depth, depth_range, draw_sparse_depth, tile_images

    rows: List[List[np.ndarray]] = [[], [], []]
    for n, (image, pred, ref) in enumerate(zip(images, predicted, reference)):
        mask = None if masks is None else masks[n]
        shown = resized_mask(mask, ref.shape)
        lo = (depth_range(np.where(ref <= DEPTH_COLOUR_MAX, ref, 0), shown) or (DEPTH_COLOUR_MIN,))[0]
        lo, hi = max(lo, DEPTH_COLOUR_MIN), DEPTH_COLOUR_MAX
        rows[0].append(image)
        rows[1].append(colorize_depth(pred, resized_mask(mask, pred.shape), min_depth=lo, max_depth=hi))
        rows[2].append(draw_sparse_depth(image, ref, radius=1, valid=shown, min_depth=lo, max_depth=hi)
                       if sparse_reference else colorize_depth(ref, shown, min_depth=lo, max_depth=hi))
    labels = [list(camera_names), ["predicted depth"] * len(images), [reference_label] * len(images)]
    return tile_images(rows, labels=labels, max_width=max_width)


def resized_mask(mask: Optional[np.ndarray], hw: Sequence[int]) -> Optional[np.ndarray]:
    """`mask` at another resolution (nearest neighbour), or None."""
    import cv2

    if mask is None or tuple(mask.shape) == tuple(hw):
        return mask
    return cv2.resize(mask.astype(np.uint8), (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_NEAREST)


def flow_scales(frames: Sequence[Dict[str, np.ndarray]], percentile: float = FLOW_SCALE_PERCENTILE) -> Dict[str, float]:
    """One colour scale per map over a whole sequence, so that the animation does not flicker: a
    high percentile of the disparity and of the optical and scene flow magnitudes over all frames
    (not the maximum: a pole next to the camera would leave the rest of the picture one colour)."""
    def scale(values: List[np.ndarray]) -> float:
        values = np.concatenate([v.ravel() for v in values])
        values = values[np.isfinite(values)]
        return max(float(np.percentile(values, percentile)), 1e-6) if values.size else 1.0

    return {"disparity": scale([f["disparity"] for f in frames]),
            "optical_flow": scale([np.linalg.norm(f["optical_flow"], axis=0) for f in frames]),
            "scene_flow": scale([np.linalg.norm(f["scene_flow"], axis=0) for f in frames])}


def flow_row(image: np.ndarray, maps: Dict[str, np.ndarray], scales: Dict[str, float]) -> List[np.ndarray]:
    """[image, disparity, optical flow, scene flow] pictures of one frame; `maps` holds disparity
    [1, H, W] (pixels), optical_flow [2, H, W] (pixels) and scene_flow [3, H, W] (metres), coloured
    with utils/flow_vis.py's codings at the given scales."""
    from utils.flow_vis import colorize_disparity, flow_to_color, sceneflow_to_color

    return [image, colorize_disparity(maps["disparity"][0], max_disp=scales["disparity"]),
            flow_to_color(maps["optical_flow"], max_flow=scales["optical_flow"]),
            sceneflow_to_color(maps["scene_flow"], max_sf=scales["scene_flow"])]


def flow_strip(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str],
               max_width: int = STRIP_MAX_WIDTH, display_hw: Optional[Sequence[int]] = None) -> np.ndarray:
    """Rows of flow_row pictures as one picture, the first tile of each row labelled with the
    row's name, the others with what they show. `display_hw` resizes the tiles first (e.g. back
    to the input's aspect ratio when the network ran on a squashed image)."""
    import cv2

    from utils.visualization import tile_images

    if display_hw is not None:
        rows = [[cv2.resize(t, (int(display_hw[1]), int(display_hw[0])), interpolation=cv2.INTER_AREA) for t in r]
                for r in rows]
    labels = [[name, "disparity", "optical flow", "scene flow"] for name in row_labels]
    return tile_images(rows, labels=labels, max_width=max_width)


def side_by_side(pictures: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    from utils.visualization import tile_images
    return tile_images([list(pictures)], labels=[list(labels)], max_width=sum(p.shape[1] for p in pictures) + 8)


# ----------------------------------------------------------------------------------------------
# Files


def save_jpeg(path: str, picture: np.ndarray) -> None:
    import cv2

    from utils.atomic import write_bytes_atomic

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"could not encode {path} as JPEG")
    write_bytes_atomic(path, data.tobytes())
    report(path)


def save_gif(path: str, frames: Sequence[np.ndarray], frame_ms: int) -> None:
    """A looping GIF; one palette for the whole animation (taken from a mosaic of its frames) keeps
    colours from flickering between frames and the file small."""
    from PIL import Image

    from utils.atomic import atomic_open

    step = max(1, len(frames) // 8)
    mosaic = Image.fromarray(np.concatenate(list(frames[::step]), axis=0))
    palette = mosaic.quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    with atomic_open(path, "wb") as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0,
                       optimize=False)
    report(path)


def report(path: str) -> None:
    print(f"  wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)", flush=True)


def to_rgb(image) -> np.ndarray:
    """uint8 [H, W, 3] from a contract image tensor [3, H, W] in [0, 1]."""
    from utils.visualization import to_uint8_rgb
    return to_uint8_rgb(image)


# ----------------------------------------------------------------------------------------------
# Models


def trained_weights(config: str, overrides: Sequence[str], weight_path: Optional[str]) -> str:
    """`weight_path`, or the config's last checkpoint under results/media/, trained now through
    train.py (the demo's code path) when it is not there yet."""
    from utils.config import load_config

    if weight_path:
        return weight_path
    overrides = list(overrides) + [f"data.log_dir={TRAIN_LOG_DIR}"]
    cfg = load_config(config, overrides)
    last = os.path.join(cfg.data.save_weights_root, f"weights_{cfg.training.num_epochs - 1}")
    if not os.path.isdir(last):
        import train as train_entry
        print(f"training {config} for its {cfg.training.num_epochs} epochs into {cfg.data.log_path} "
              "(first run only; a few minutes on the CPU)", flush=True)
        if train_entry.main([f"--config_file={config}"] + overrides):
            raise RuntimeError(f"training {config} failed")
    return last


def load_model(config: str, overrides: Sequence[str], weight_path: str):
    """(cfg, model in eval mode on the CPU) for inference."""
    import torch

    from trainer.evaluate import load_model_for_eval
    from utils.config import load_config

    cfg = load_config(config, list(overrides), mode="eval", weight_path=weight_path)
    return cfg, load_model_for_eval(cfg, weight_path, torch.device("cpu"))


def run_model(model, sample: Dict):
    """(batch, outputs, predictions) of one sample, as a batch of one."""
    import torch
    from torch.utils.data import default_collate

    batch = default_collate([sample])
    with torch.no_grad():
        outputs = model(batch)
        return batch, outputs, model.predict(batch, outputs)


# ----------------------------------------------------------------------------------------------
# Surround fusion: synthetic DDAD


def light_rig(preset: str, image_hw, cameras: Optional[Sequence[int]] = None):
    """The preset rig at image_hw with only the cameras `cameras` (default all) and a token lidar.
    The pictures need neither the lidar nor the other cameras, which cost most of the rendering;
    the world is seeded by (seed, scene_index) alone, so the images come out the same."""
    from dataset.synthetic import get_rig

    rig = get_rig(preset, image_hw)
    if cameras is not None:
        rig.camera_names = [rig.camera_names[n] for n in cameras]
        rig.K, rig.T_rig_cam = rig.K[list(cameras)], rig.T_rig_cam[list(cameras)]
    rig.lidar_rings, rig.lidar_azimuth_samples = 1, 8
    return rig


def synthetic_ddad_truth(cfg, scene_index: int, frame: int):
    """Frames 0..`frame` of synthetic DDAD scene `scene_index` rendered again as the dataset was
    (same seed and size): the SyntheticSequence holds the dense depth the files only keep as lidar.
    One ray per pixel (supersample=1) is enough: depth and flow come from the pixel-centre rays
    whatever the supersampling, which only smooths the colours (taken from the files instead)."""
    from dataset.synthetic import render_sequence

    hw = tuple(cfg.data.synthetic_hw) if cfg.data.synthetic_hw else None
    return render_sequence(light_rig("ddad", hw), frame + 1, seed=cfg.data.synthetic_seed, scene_index=scene_index,
                           supersample=1)


def check_same_view(rendered: np.ndarray, loaded: np.ndarray, what: str) -> None:
    """The re-rendered ground truth must be the frame the loader read: compare the images at the
    loader's size (JPEG/resampling leave a few grey levels of difference, another frame far more)."""
    import cv2

    small = cv2.resize(rendered, (loaded.shape[1], loaded.shape[0]), interpolation=cv2.INTER_AREA)
    error = float(np.abs(small.astype(np.float32) - loaded.astype(np.float32)).mean())
    if error > 12.0:
        raise RuntimeError(f"{what}: the re-rendered ground truth does not match the loaded sample "
                           f"(mean difference {error:.1f} grey levels)")


def synthesis_sweep_frames(model, batch, outputs, image: np.ndarray) -> List[np.ndarray]:
    """Camera 0's novel-view depth sweep (models/depth_synthesis.render_sweep, every SWEEP_STRIDE-th
    viewpoint) at twice the network's size, each frame labelled with its viewpoint, beside `image`
    (camera 0's picture: the real view the sweep turns away from)."""
    import cv2

    from models.depth_synthesis import render_sweep, sweep_frame_indices, sweep_parameters
    from utils.visualization import put_label

    volume = outputs["volume"]
    image_hw = tuple(batch["image"].shape[-2:])

    def render(K, E):
        return model.render_depth(volume, K, E, image_hw)[1].float()

    with tempfile.TemporaryDirectory() as tmp:
        paths = render_sweep(render, batch["K"][0, 0], batch["extrinsics"][0, 0], image_hw, tmp,
                             stride=SWEEP_STRIDE, progress=False, max_depth=DEPTH_COLOUR_MAX)
        depth_frames = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths[:-1]]
    labels = sweep_parameters()[0]
    size = (2 * image_hw[1], 2 * image_hw[0])
    left = put_label(cv2.resize(image, size, interpolation=cv2.INTER_AREA), "camera 0", scale=0.5)
    gap = np.zeros((size[1], 4, 3), np.uint8)
    return [np.concatenate([left, gap, put_label(cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST),
                                                 labels[index], scale=0.5)], axis=1)
            for index, depth in zip(sweep_frame_indices(stride=SWEEP_STRIDE), depth_frames)]


def synthetic_ddad_media(out: str, weight_path: str) -> None:
    """Depth grid, point clouds and novel-view sweep of the first synthetic DDAD validation sample."""
    from dataset.build import build_dataset
    from dataset.image_io import read_image

    cfg, model = load_model(FUSION_CONFIG, FUSION_OVERRIDES, weight_path)
    dataset = build_dataset(cfg, "eval")
    sample = dataset[0]
    batch, outputs, predictions = run_model(model, sample)
    # The writers name scene k "%06d" % k, and a sample's index in its scene is its frame.
    t = int(sample["meta"]["sample_index"])
    seq = synthetic_ddad_truth(cfg, int(sample["meta"]["scene"]), t)
    # The pictures show the image files at their rendered size; the network saw them resized.
    images = [read_image(dataset.root / f)[0] for f in sample["meta"]["files"]]
    check_same_view(seq.images[t, 0], images[0], "synthetic DDAD")
    predicted = predictions.depth[0, :, 0].numpy()                                 # [N, h, w]
    names = [c.upper() for c in cfg.data.cameras]
    save_jpeg(os.path.join(out, "synthetic_ddad_depth.jpg"),
              depth_grid(images, list(predicted), list(seq.depth[t]), names, "rendered depth",
                         masks=list(seq.self_occlusion)))
    truth = cloud_picture(list(seq.depth[t]), list(seq.K), list(seq.T_rig_cam), images, list(seq.self_occlusion))
    guess = cloud_picture(list(predicted), list(batch["K"][0].double().numpy()),
                          list(batch["extrinsics"][0].double().numpy()), images, list(sample["mask"][:, 0].numpy()),
                          radius=2)
    save_jpeg(os.path.join(out, "synthetic_ddad_cloud.jpg"),
              side_by_side([truth, guess], ["from the rendered (true) depth", "from the predicted depth"]))
    save_gif(os.path.join(out, "synthetic_ddad_synthesis.gif"),
             synthesis_sweep_frames(model, batch, outputs, images[0]), SWEEP_FRAME_MS)


# ----------------------------------------------------------------------------------------------
# Surround fusion: the real DDAD sample


def real_ddad_dataset(shared: Path, image_hw: Sequence[int], work: str, requirements=("gt_depth",)):
    """DGP test scene_02 through the DDAD loader, its middle sample only. The shipped dataset json
    lists scene_01 too, which lacks four of the six cameras, so a copy naming scene_02 alone (by
    absolute path) is written to `work`; the lidar depth cache goes there as well, never into the
    read-only samples."""
    from dataset.ddad import DDADDataset

    dataset = json.loads((shared / "dgp_test_scene" / "scene_dataset_v1.0.json").read_text())
    dataset["scene_splits"] = {"1": {"filenames": [str(shared / "dgp_test_scene" / DGP_SCENE)]}}
    path = Path(work) / "scene_dataset_v1.0.json"
    path.write_text(json.dumps(dataset))
    return DDADDataset(path, "val", DDAD_CAMERAS, frame_ids=(0,), image_hw=image_hw, requirements=requirements,
                       depth_cache=work)


def present(path: Path) -> bool:
    """Whether a real sample is there; says so when it is not (its pictures are then skipped)."""
    if not path.exists():
        print(f"  skipped: the real sample {path} is not there (--shared_data)", flush=True)
    return path.exists()


def real_ddad_media(out: str, weight_path: str, shared: Path) -> None:
    """Depth grid and point clouds of the middle sample of the real DGP scene, lidar as reference."""
    from geometry import resize_intrinsics

    if not present(shared / "dgp_test_scene" / DGP_SCENE):
        return

    cfg, model = load_model(FUSION_CONFIG, FUSION_OVERRIDES, weight_path)
    image_hw = (int(cfg.training.height), int(cfg.training.width))
    display_hw = (2 * image_hw[0], 2 * image_hw[1])
    with tempfile.TemporaryDirectory() as work:
        dataset = real_ddad_dataset(shared, image_hw, work)
        middle = len(dataset) // 2
        sample = dataset[middle]
        shown = real_ddad_dataset(shared, display_hw, work, requirements=())[middle]   # sharper pictures
    _, _, predictions = run_model(model, sample)
    images = [to_rgb(img) for img in shown["image"][0]]
    lidar = sample["depth_gt"][:, 0].numpy()                                       # [N, Hg, Wg]
    predicted = predictions.depth[0, :, 0].numpy()
    save_jpeg(os.path.join(out, "real_ddad_depth.jpg"),
              depth_grid(images, list(predicted), list(lidar), DDAD_CAMERAS, "lidar", sparse_reference=True))
    K = sample["K"].double()
    extrinsics = list(sample["extrinsics"].double().numpy())
    K_lidar = resize_intrinsics(K, image_hw, lidar.shape[-2:]).numpy()               # the loader's resize undone
    truth = cloud_picture(list(lidar), list(K_lidar), extrinsics, images, radius=2)
    guess = cloud_picture(list(predicted), list(K.numpy()), extrinsics, images, radius=2)
    save_jpeg(os.path.join(out, "real_ddad_cloud.jpg"),
              side_by_side([truth, guess], ["lidar, coloured from the cameras", "from the predicted depth"]))


# ----------------------------------------------------------------------------------------------
# Scene flow: sequences


def sceneflow_frames(cfg, model, folder: str, intrinsics: Optional[str]) -> List[Tuple[np.ndarray, Dict]]:
    """(image, maps) of every frame of an image folder but the last, through predict.py's data path
    (trainer/predict.build_predict_data: sliding windows of data.frame_ids, the missing context at
    the start replaced by the first frame). The last frame is left out: its flow would be measured
    against itself. maps: disparity [1, H, W], optical_flow [2, H, W], scene_flow [3, H, W]."""
    from trainer.evaluate_sceneflow import prediction_maps
    from trainer.predict import build_predict_data

    data, _ = build_predict_data(cfg, folder, intrinsics=intrinsics)
    target = list(cfg.data.frame_ids).index(0)
    frames = []
    for k in range(len(data) - 1):
        sample = data[k]
        _, _, predictions = run_model(model, sample)
        maps = {key: value[0].numpy() for key, value in prediction_maps(predictions).items()}
        frames.append((to_rgb(sample["image"][target, 0]), maps))
    return frames


def synthetic_kitti_truth(cfg, drive: str, frames: int):
    """The rendered synthetic KITTI drive `drive` (the writers number drive k + 1 for scene k) and
    its ground-truth maps per frame, disparity with the rig's own baseline."""
    from dataset.synthetic import get_rig, render_sequence

    scene_index = int(drive.split("_drive_")[1][:4]) - 1
    T_rig_cam = get_rig("kitti").T_rig_cam
    baseline = float(np.linalg.norm(T_rig_cam[1, :3, 3] - T_rig_cam[0, :3, 3]))
    seq = render_sequence(light_rig("kitti", tuple(cfg.data.synthetic_hw), cameras=[0]), frames,
                          seed=cfg.data.synthetic_seed, scene_index=scene_index, supersample=1)
    truth = []
    for t in range(frames):
        disparity = seq.K[0, 0, 0] * baseline / seq.depth[t, 0]
        truth.append({"disparity": disparity[None], "optical_flow": seq.optical_flow_fwd[t, 0].transpose(2, 0, 1),
                      "scene_flow": seq.scene_flow_fwd[t, 0].transpose(2, 0, 1)})
    return seq, truth


def synthetic_kitti_media(out: str, weight_path: str) -> None:
    """The validation drive of the synthetic KITTI raw world: prediction above the truth, both
    coloured at the truth's scales."""
    from dataset.build import ensure_synthetic_data

    cfg, model = load_model(SCENEFLOW_CONFIG, SCENEFLOW_LOAD, weight_path)
    ensure_synthetic_data(cfg)
    drive = os.path.basename(Path(cfg.data.val_split).read_text().split()[0])    # <date>_drive_<nnnn>_sync
    folder = os.path.join(cfg.data.data_path, drive[:10], drive, "image_02")
    predicted = sceneflow_frames(cfg, model, os.path.join(folder, "data"), os.path.join(folder, "cam.txt"))
    seq, truth = synthetic_kitti_truth(cfg, drive, len(predicted) + 1)
    check_same_view(seq.images[0, 0], predicted[0][0], "synthetic KITTI")
    scales = flow_scales(truth[:-1])
    frames = []
    for t, (image, maps) in enumerate(predicted):
        rows = [flow_row(image, maps, scales), flow_row(image, truth[t], scales)]
        frames.append(flow_strip(rows, [f"frame {t}: predicted", f"frame {t}: truth"]))
    save_gif(os.path.join(out, "synthetic_kitti_sceneflow.gif"), frames, GIF_FRAME_MS)


def real_sequence_media(out: str, cfg, model, name: str, folder: Path, intrinsics: Optional[Path]) -> None:
    """One row per frame (image, disparity, optical flow, scene flow) of a real image folder, at
    scales shared by its frames; a GIF for several frames, a JPEG for one. The network sees every
    frame resized to its input size whatever the aspect ratio (DAVIS's 854x480 squashed to
    416x128); the pictures are stretched back to the frames' own aspect ratio."""
    from dataset.image_folder import IMAGE_EXTENSIONS
    from dataset.image_io import image_size

    predicted = sceneflow_frames(cfg, model, str(folder), None if intrinsics is None else str(intrinsics))
    height, width = image_size(min(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS))
    display_hw = (int(round(cfg.training.width * height / width)), int(cfg.training.width))
    scales = flow_scales([maps for _, maps in predicted])
    frames = [flow_strip([flow_row(image, maps, scales)], [f"frame {t}"], display_hw=display_hw)
              for t, (image, maps) in enumerate(predicted)]
    if len(frames) > 1:
        save_gif(os.path.join(out, f"{name}.gif"), frames, GIF_FRAME_MS)
    else:
        save_jpeg(os.path.join(out, f"{name}.jpg"), frames[0])


def real_sceneflow_media(out: str, weight_path: str, shared: Path) -> None:
    """The scene flow model on the real KITTI raw frames (with their calibration) and on DAVIS."""
    kitti = shared / "kitti_raw_tiny" / "2011_09_26" / "2011_09_26_drive_0023_sync" / "image_02"
    # DAVIS has no calibration: data.assumed_focal_px is assumed.
    samples = [("real_kitti_sceneflow", kitti / "data", kitti / "cam.txt"),
               ("real_davis_sceneflow", shared / "davis_3frames", None)]
    samples = [sample for sample in samples if present(sample[1])]
    if samples:
        cfg, model = load_model(SCENEFLOW_CONFIG, SCENEFLOW_LOAD, weight_path)
        for name, folder, intrinsics in samples:
            real_sequence_media(out, cfg, model, name, folder, intrinsics)


# ----------------------------------------------------------------------------------------------
# Command line

# name: (the model it needs, its function(out, weights, shared)), in the default order.
JOBS = {
    "synthetic_ddad": ("fusion", lambda out, weights, shared: synthetic_ddad_media(out, weights)),
    "real_ddad": ("fusion", lambda out, weights, shared: real_ddad_media(out, weights, shared)),
    "synthetic_kitti": ("sceneflow", lambda out, weights, shared: synthetic_kitti_media(out, weights)),
    "real_sceneflow": ("sceneflow", lambda out, weights, shared: real_sceneflow_media(out, weights, shared)),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", default=os.path.join(ROOT, "media"), help="output folder (default media/)")
    parser.add_argument("--weight_path", default=None,
                        help=f"surround fusion checkpoint for {FUSION_CONFIG} (default: trained into {TRAIN_LOG_DIR}/)")
    parser.add_argument("--sf_weight_path", default=None,
                        help=f"scene flow checkpoint for {SCENEFLOW_CONFIG} (default: trained into {TRAIN_LOG_DIR}/)")
    parser.add_argument("--shared_data", default=SHARED_DATA, help="the real samples (default ../shared/data)")
    parser.add_argument("--only", default=",".join(JOBS),
                        help=f"comma-separated subset of {', '.join(JOBS)} (default all)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    jobs = [j.strip() for j in args.only.split(",") if j.strip()]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        print(f"error: --only: unknown {unknown}; choose from {list(JOBS)}", file=sys.stderr)
        return 2
    # Paths given on the command line are the caller's, taken before moving to the project root.
    out = os.path.abspath(args.out)
    shared = Path(os.path.abspath(args.shared_data))
    given = {name: os.path.abspath(path) if path else None
             for name, path in (("fusion", args.weight_path), ("sceneflow", args.sf_weight_path))}
    os.chdir(ROOT)                       # configs name their data relative to the project root
    os.makedirs(out, exist_ok=True)
    start = time.time()
    kinds = {JOBS[job][0] for job in jobs}
    configs = {"fusion": (FUSION_CONFIG, FUSION_OVERRIDES), "sceneflow": (SCENEFLOW_CONFIG, [])}
    weights = {kind: trained_weights(*configs[kind], given[kind]) if kind in kinds else None for kind in configs}
    trained = time.time()
    for job in jobs:
        print(f"{job}:", flush=True)
        kind, make = JOBS[job]
        make(out, weights[kind], shared)
    done = time.time()
    print(f"media written to {out} in {done - start:.0f} s ({trained - start:.0f} s of it training); "
          f"weights: fusion {weights['fusion']}, scene flow {weights['sceneflow']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
