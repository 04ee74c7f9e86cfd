"""TensorBoard logging of a run: <data.log_path>/train and <data.log_path>/val, as the reference.

Only rank 0 logs; every other rank (and a run with logging.tensorboard off) gets a NullLogger with
the same methods, so the loop never asks who it is before logging.
"""

import os
from typing import Dict, Mapping, Optional

import numpy as np
import torch

SPLITS = ("train", "val")


class NullLogger:
    """Accepts everything, writes nothing."""

    enabled = False

    def scalars(self, split: str, values: Mapping[str, float], step: int) -> None:
        pass

    def image(self, split: str, tag: str, image_hwc: np.ndarray, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger(NullLogger):
    """One SummaryWriter per split under `log_path`/<split>."""

    enabled = True

    def __init__(self, log_path: str):
        from torch.utils.tensorboard import SummaryWriter  # imported on use: tensorboard is slow to import
        self.writers = {split: SummaryWriter(os.path.join(log_path, split)) for split in SPLITS}

    def scalars(self, split: str, values: Mapping[str, float], step: int) -> None:
        writer = self.writers[split]
        for tag, value in values.items():
            writer.add_scalar(tag, float(value), step)

    def image(self, split: str, tag: str, image_hwc: np.ndarray, step: int) -> None:
        self.writers[split].add_image(tag, image_hwc, step, dataformats="HWC")

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def build_logger(cfg, is_main: bool) -> NullLogger:
    if is_main and cfg.logging.tensorboard:
        return TensorBoardLogger(cfg.data.log_path)
    return NullLogger()


# ----------------------------------------------------------------------------------------------
# What gets logged


def loss_scalars(losses: Mapping[str, torch.Tensor]) -> Dict[str, float]:
    """{"loss/<term>": value} of the named loss terms (the total included)."""
    return {f"loss/{name}": float(value.detach()) for name, value in losses.items()
            if isinstance(value, torch.Tensor) and value.numel() == 1}


def depth_scalars(depth: torch.Tensor) -> Dict[str, float]:
    """Mean / min / max of a predicted depth batch (the reference's depth statistics)."""
    d = depth.detach().float()
    return {"depth/mean": float(d.mean()), "depth/min": float(d.min()), "depth/max": float(d.max())}


def batch_picture(batch: Mapping, depth: torch.Tensor, max_width: int = 1600) -> np.ndarray:
    """One picture of the first sample of a batch, at half size: the target-frame input of every
    camera above its colourised predicted depth."""
    from utils.visualization import colorize_depth, tile_images, to_uint8_rgb

    image = batch["image"][0, 0]                        # [N, 3, H, W] of the target frame (frame 0 first)
    pred = depth[0].detach().float()                    # [N, 1, H, W]
    half = (max(1, image.shape[-2] // 2), max(1, image.shape[-1] // 2))
    image = torch.nn.functional.interpolate(image.float(), size=half, mode="area")
    pred = torch.nn.functional.interpolate(pred, size=half, mode="nearest")
    inputs = [to_uint8_rgb(image[n].clamp(0, 1)) for n in range(image.shape[0])]
    depths = [colorize_depth(pred[n, 0]) for n in range(pred.shape[0])]
    return tile_images([inputs, depths], max_width=max_width)


def visual_pictures(visuals: Mapping[str, torch.Tensor], max_width: int = 1600) -> Dict[str, np.ndarray]:
    """{name: picture} of an algorithm's visuals (models.base.Algorithm.visuals: [B, N, C, H, W],
    C 1 or 3, in [0, 1]): the first item, its cameras side by side, at half size as batch_picture
    (grey maps drawn in grey)."""
    from utils.visualization import tile_images, to_uint8_rgb

    pictures = {}
    for name, images in visuals.items():
        if images.dim() != 5 or images.shape[2] not in (1, 3):
            raise ValueError(f"visuals()[{name!r}] must be [B, N, C, H, W] with C 1 or 3, got {tuple(images.shape)}")
        first = images[0].detach().float()                         # [N, C, H, W]
        half = (max(1, first.shape[-2] // 2), max(1, first.shape[-1] // 2))
        first = torch.nn.functional.interpolate(first, size=half, mode="area").expand(-1, 3, -1, -1)
        pictures[name] = tile_images([[to_uint8_rgb(first[n].clamp(0, 1)) for n in range(first.shape[0])]],
                                     max_width=max_width)
    return pictures


def log_batch(logger: NullLogger, split: str, step: int, losses: Optional[Mapping[str, torch.Tensor]] = None,
              depth: Optional[torch.Tensor] = None, batch: Optional[Mapping] = None,
              extra: Optional[Mapping[str, float]] = None,
              visuals: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Scalars (loss terms, depth statistics, `extra`), the picture of one batch and one picture
    per entry of `visuals` (tag visuals/<name>)."""
    if not logger.enabled:
        return
    values: Dict[str, float] = {}
    if losses:
        values.update(loss_scalars(losses))
    if depth is not None:
        values.update(depth_scalars(depth))
    if extra:
        values.update(extra)
    logger.scalars(split, values, step)
    if depth is not None and batch is not None:
        logger.image(split, "inputs_and_depth", batch_picture(batch, depth), step)
    for name, picture in visual_pictures(visuals or {}).items():
        logger.image(split, f"visuals/{name}", picture, step)
