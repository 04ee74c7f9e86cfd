"""dataset.build: every `data.dataset` value builds its adapter from a config, for every split,
and the samples follow the data contract. The data is the synthetic world rendered on first use
(tiny, into a temporary folder), so this also checks the config -> generation -> loader chain."""

import os

import pytest
import torch

from dataset.build import build_dataset
from dataset.contract import check_sample
from dataset.synthetic.writers import ensure_synthetic_dataset
from utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["data.synthetic_scenes=2", "training.height=48", "training.width=80", "data.synthetic_hw=[48, 80]"]


def tiny_config(tmp_path, name, overrides=()):
    """A shipped synthetic config whose data goes to tmp_path, rendered at a tiny size."""
    text = open(os.path.join(ROOT, "configs", "synthetic", name)).read()
    path = tmp_path / name
    path.write_text(text.replace("data/synthetic/", f"{tmp_path}/"))
    return load_config(str(path), TINY + list(overrides), check_paths=True)


@pytest.mark.parametrize("name, frames, cams, extra", [
    ("ddad_surround_fusion.yaml", 3, 6, ["data.synthetic_frames=4"]),
    ("nusc_surround_fusion.yaml", 3, 6, ["data.synthetic_frames=13"]),
    ("kitti_selfsup.yaml", 5, 2, ["data.synthetic_frames=6", "data.synthetic_hw=[48, 160]", "training.width=160"]),
])
def test_synthetic_configs_build_every_split(tmp_path, name, frames, cams, extra):
    cfg = tiny_config(tmp_path, name, extra)
    for split in ("train", "val", "eval"):
        dataset = build_dataset(cfg, split)
        assert len(dataset) > 0, (name, split)
        sample = dataset[0]
        check_sample(sample, num_frames=frames, num_cams=cams)
        assert sample["image"].shape[-2:] == (cfg.training.height, cfg.training.width)
        # colour jitter in training only (ddad / nuscenes: its draws, for the device, data.color_aug_on_device)
        assert ("image_aug" in sample or "color_jitter" in sample) == (split == "train")
        if split != "train":   # validation carries the ground truth its requirements ask for
            assert (sample["depth_gt"] > 0).any()
    # a second build finds the generated data and does not render again
    marker = os.path.join(cfg.data.synthetic_root, ".sfdepth_synthetic.json")
    mtime = os.stat(marker).st_mtime_ns
    build_dataset(cfg, "val")
    assert os.stat(marker).st_mtime_ns == mtime


def test_kitti_2015_davis_and_finetune_build(tmp_path):
    kitti_config = ["data.synthetic=false", "training.height=48", "training.width=160", "data.frame_ids=[0, 1]",
                    "data.train_split=null", "data.val_split=null", "data.train_requirements=()",
                    "data.val_requirements=()"]
    ensure_synthetic_dataset("kitti_2015", str(tmp_path / "KITTI_flow"), scenes=3, frames=3, height=48, width=160)
    ensure_synthetic_dataset("kitti_raw", str(tmp_path / "KITTI_raw"), scenes=1, frames=4, height=48, width=160)
    ensure_synthetic_dataset("davis", str(tmp_path / "davis"), scenes=1, frames=4, height=48, width=160)
    path = os.path.join(ROOT, "configs", "synthetic", "kitti_selfsup.yaml")

    cfg = load_config(path, kitti_config + ["data.dataset=kitti_2015", f"data.data_path={tmp_path / 'KITTI_flow'}"])
    sample = build_dataset(cfg, "eval")[0]
    check_sample(sample, num_frames=2, num_cams=2)
    assert "kitti2015_flow" in sample and sample["kitti2015_flow"].shape[0] == 2

    cfg = load_config(path, kitti_config + ["data.dataset=kitti_finetune", f"data.data_path={tmp_path}"])
    combined = build_dataset(cfg, "train")
    flow_items, raw_items = combined.parts
    assert flow_items > 0 and raw_items > 0 and len(combined) == flow_items + raw_items
    assert "kitti2015_disp0" in combined[0] and "kitti2015_disp0" not in combined[flow_items]
    # the fine-tuning scale crop reaches KITTI 2015 for batches of one, and is refused loudly otherwise
    flow_part = combined.datasets[0]
    assert flow_part.crop_scale == tuple(cfg.training.crop_scale_range) != (1.0, 1.0)
    with pytest.warns(RuntimeWarning, match="crop_scale_range"):
        batched = build_dataset(load_config(path, kitti_config + ["data.dataset=kitti_finetune",
                                                                  f"data.data_path={tmp_path}",
                                                                  "training.batch_size=2"]), "train")
    assert batched.datasets[0].crop_scale == (1.0, 1.0)

    davis_root = tmp_path / "davis" / "JPEGImages" / "480p"
    cfg = load_config(path, kitti_config + ["data.dataset=davis", f"data.data_path={davis_root}",
                                            "data.cameras=[davis]", "data.frame_ids=[0, -1, 1]"])
    sample = build_dataset(cfg, "eval")[0]
    check_sample(sample, num_frames=3, num_cams=1)
    assert torch.allclose(sample["K"][0, 0, 0], torch.tensor(700.0 * 160 / 854), rtol=1e-4)
    # an assumed field of view instead: fx = (W / 2) / tan(hfov / 2) at the output width
    cfg = load_config(path, kitti_config + ["data.dataset=custom", f"data.data_path={davis_root}",
                                            "data.cameras=[cam]", "data.assumed_hfov_deg=90"])
    assert torch.allclose(build_dataset(cfg, "eval")[0]["K"][0, 0, 0], torch.tensor(80.0), rtol=1e-3)


def test_unknown_synthetic_format_is_refused(tmp_path):
    path = os.path.join(ROOT, "configs", "synthetic", "kitti_selfsup.yaml")
    cfg = load_config(path, ["data.dataset=custom", f"data.data_path={tmp_path}"])
    with pytest.raises(ValueError, match="synthetic world has no 'custom' format"):
        build_dataset(cfg, "train")
