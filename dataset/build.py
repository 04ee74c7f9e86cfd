"""Build the dataset a config asks for: one function, chosen by `data.dataset`.

`build_dataset(cfg, split)` returns a torch Dataset that yields samples of the data contract
(dataset/contract.py). With `data.synthetic: true` the synthetic world is rendered into
`data.data_path` on first use (dataset/synthetic), so the demo configs need nothing downloaded.
"""

import os
import warnings
from typing import Callable, Dict

from torch.utils.data import ConcatDataset, Dataset

SPLITS = ("train", "val", "eval")
# data.dataset -> synthetic world format written for it
SYNTHETIC_FORMATS = {"ddad": "ddad", "nuscenes": "nuscenes", "kitti_raw": "kitti_raw",
                     "kitti_2015": "kitti_2015", "davis": "davis"}


def build_dataset(cfg, split: str) -> Dataset:
    """The dataset of `cfg` for `split` ("train", "val" or "eval"). Training samples carry the
    training requirements and augmentation; "val" and "eval" carry the validation requirements
    (ground truth) and no augmentation."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.data.synthetic:
        ensure_synthetic_data(cfg)
    builder = _BUILDERS.get(cfg.data.dataset)
    if builder is None:
        raise ValueError(f"data.dataset: no adapter for {cfg.data.dataset!r}; known: {sorted(_BUILDERS)}")
    return builder(cfg, split)


def ensure_synthetic_data(cfg) -> str:
    """Render the synthetic world for `cfg` unless it is already there with the same parameters."""
    from dataset.synthetic.writers import ensure_synthetic_dataset  # the renderer is heavy: import on use

    if cfg.data.dataset == "kitti_finetune":
        return _ensure_synthetic_finetune(cfg, ensure_synthetic_dataset)
    fmt = SYNTHETIC_FORMATS.get(cfg.data.dataset)
    if fmt is None:
        raise ValueError(f"data.synthetic: the synthetic world has no {cfg.data.dataset!r} format; "
                         f"it writes {sorted(SYNTHETIC_FORMATS)}")
    height, width = cfg.data.synthetic_hw or (None, None)
    return ensure_synthetic_dataset(fmt, cfg.data.synthetic_root, scenes=cfg.data.synthetic_scenes,
                                    frames=cfg.data.synthetic_frames, height=height, width=width,
                                    seed=cfg.data.synthetic_seed, progress=True)


def _ensure_synthetic_finetune(cfg, ensure_synthetic_dataset) -> str:
    """kitti_finetune reads `<data_path>/KITTI_flow` (KITTI 2015) and `<data_path>/KITTI_raw`: render
    the synthetic world in both formats there, with the same parameters."""
    height, width = cfg.data.synthetic_hw or (None, None)
    root = cfg.data.synthetic_root
    for folder, fmt in (("KITTI_flow", "kitti_2015"), ("KITTI_raw", "kitti_raw")):
        ensure_synthetic_dataset(fmt, os.path.join(root, folder), scenes=cfg.data.synthetic_scenes,
                                 frames=cfg.data.synthetic_frames, height=height, width=width,
                                 seed=cfg.data.synthetic_seed, progress=True)
    return root


# ----------------------------------------------------------------------------------------------
# One builder per dataset: translate config keys into the adapter's arguments.


def _requirements(cfg, split):
    return cfg.data.train_requirement_set if split == "train" else cfg.data.val_requirement_set


def _image_hw(cfg):
    return (cfg.training.height, cfg.training.width)


def _jitter(cfg, split):
    return tuple(cfg.training.color_jitter) if split == "train" else None


def _split_file(cfg, split):
    return {"train": cfg.data.train_split, "val": cfg.data.val_split, "eval": cfg.data.test_split}[split]


def _dgp_split(split):
    return "train" if split == "train" else "val"


def _fast_path(cfg):
    """The rig datasets' fast data path: the resized-frame cache and where colour jitter runs."""
    return {"frame_cache_dir": cfg.data.cache_dir, "color_aug_on_device": cfg.data.color_aug_on_device}


def _build_ddad(cfg, split):
    from dataset.ddad import DDADDataset
    return DDADDataset(cfg.data.data_path, _dgp_split(split), cameras=cfg.data.cameras, frame_ids=cfg.data.frame_ids,
                       image_hw=_image_hw(cfg), requirements=_requirements(cfg, split), mask_path=cfg.data.mask_path,
                       convention=cfg.data.intrinsics_convention, color_jitter=_jitter(cfg, split),
                       seed=cfg.training.seed, **_fast_path(cfg))


def _build_nuscenes(cfg, split):
    from dataset.nuscenes import NuScenesDataset
    return NuScenesDataset(cfg.data.data_path, version=cfg.data.nusc_version, split=_dgp_split(split),
                           split_file=_split_file(cfg, split), cameras=cfg.data.cameras,
                           frame_ids=cfg.data.frame_ids, image_hw=_image_hw(cfg),
                           requirements=_requirements(cfg, split), mask_path=cfg.data.mask_path,
                           convention=cfg.data.intrinsics_convention, color_jitter=_jitter(cfg, split),
                           seed=cfg.training.seed, **_fast_path(cfg))


def _build_kitti_raw(cfg, split, root=None):
    from dataset.kitti_raw import KittiRawDataset
    train = split == "train"
    return KittiRawDataset(root or cfg.data.data_path, split=_split_file(cfg, split), frame_ids=cfg.data.frame_ids,
                           image_hw=_image_hw(cfg), requirements=_requirements(cfg, split),
                           convention=cfg.data.intrinsics_convention, augment=train,
                           crop_scale=tuple(cfg.training.crop_scale_range), color_jitter_prob=cfg.training.photometric_prob,
                           color_jitter_strengths=tuple(cfg.training.color_jitter), seed=cfg.training.seed,
                           cameras=tuple(cfg.data.cameras))


def _build_kitti_2015(cfg, split, root=None):
    from dataset.kitti_2015 import Kitti2015Dataset
    train = split == "train"
    # eval.kitti_split: the 200 training scenes with ground truth ("full"), or the testing scenes
    # ("test", images only: for the submission files)
    kitti_split = {"train": cfg.data.kitti2015_train_split, "val": "val", "eval": cfg.eval.kitti_split}[split]
    # The fine-tuning scale crop (reference U[0.94, 1]) crops the ground truth too, whose size then
    # varies from sample to sample: only batches of one can be collated (the reference's batch size).
    crop_scale = (1.0, 1.0)
    if train and tuple(cfg.training.crop_scale_range) != (1.0, 1.0):
        if cfg.training.batch_size == 1:
            crop_scale = tuple(cfg.training.crop_scale_range)
        else:
            warnings.warn(f"training.crop_scale_range={list(cfg.training.crop_scale_range)} is not applied to "
                          f"KITTI 2015 with training.batch_size={cfg.training.batch_size}: its cropped ground "
                          f"truth has a different size per sample and batches larger than one cannot be "
                          f"collated", RuntimeWarning, stacklevel=2)
    return Kitti2015Dataset(root or cfg.data.data_path, split=kitti_split, frame_ids=cfg.data.frame_ids,
                            image_hw=_image_hw(cfg), requirements=_requirements(cfg, split),
                            convention=cfg.data.intrinsics_convention, augment=train, crop_scale=crop_scale,
                            color_jitter_prob=cfg.training.photometric_prob,
                            color_jitter_strengths=tuple(cfg.training.color_jitter), seed=cfg.training.seed)


def _build_kitti_finetune(cfg, split):
    """Semi-supervised fine-tuning: KITTI 2015 (with ground truth) and KITTI raw side by side, as
    `<data_path>/KITTI_flow` and `<data_path>/KITTI_raw`; batches alternate between the two
    (dataset.splits.AlternatingBatchSampler over `parts`). Validation is on KITTI 2015 alone."""
    flow = _build_kitti_2015(cfg, split, os.path.join(cfg.data.data_path, "KITTI_flow"))
    if split != "train":
        return flow
    raw = _build_kitti_raw(cfg, split, os.path.join(cfg.data.data_path, "KITTI_raw"))
    return AlternatingParts([flow, raw])


class AlternatingParts(ConcatDataset):
    """ConcatDataset of two datasets whose batches alternate (trainer/loop.py uses
    dataset.splits.AlternatingBatchSampler when a dataset has `parts`): `parts` = their lengths, and
    set_epoch reaches both, so that their augmentation draws change with the epoch."""

    def __init__(self, datasets):
        super().__init__(datasets)
        self.parts = tuple(len(d) for d in self.datasets)

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)


def _build_image_folder(cfg, split):
    from dataset.image_folder import ImageFolderDataset
    return ImageFolderDataset(cfg.data.data_path, frame_ids=cfg.data.frame_ids, image_hw=_image_hw(cfg),
                              split=_split_file(cfg, split), intrinsics=cfg.data.intrinsics_path,
                              assumed_focal_px=cfg.data.assumed_focal_px, assumed_hfov_deg=cfg.data.assumed_hfov_deg,
                              convention=cfg.data.intrinsics_convention)


_BUILDERS: Dict[str, Callable] = {
    "ddad": _build_ddad,
    "nuscenes": _build_nuscenes,
    "kitti_raw": _build_kitti_raw,
    "kitti_2015": _build_kitti_2015,
    "kitti_finetune": _build_kitti_finetune,
    "davis": _build_image_folder,
    "custom": _build_image_folder,
}
