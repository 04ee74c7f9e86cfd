"""The data contract check: a conforming sample passes, each kind of violation is named."""

import pytest
import torch

from dataset.contract import ContractError, check_sample


def make_sample(n=6, h=8, w=12):
    t = 3
    return {
        "image": torch.rand(t, n, 3, h, w),
        "K": torch.eye(3).repeat(n, 1, 1),
        "extrinsics": torch.eye(4).repeat(n, 1, 1),
        "mask": torch.ones(n, 1, h, w),
        "frame_ids": torch.tensor([0, -1, 1], dtype=torch.int64),
        "depth_gt": torch.zeros(n, 1, 2 * h, 2 * w),
        "pose_gt": torch.eye(4).repeat(t, 1, 1),
    }


def test_conforming_sample_and_batch_pass():
    sample = make_sample()
    check_sample(sample, num_frames=3, num_cams=6)
    batch = {k: torch.stack([v, v]) for k, v in sample.items()}
    check_sample(batch, num_frames=3, num_cams=6, batched=True)


@pytest.mark.parametrize("key, value, message", [
    ("image", torch.rand(3, 6, 1, 8, 12), "expected 3 colour channels"),
    ("image", torch.rand(3, 6, 3, 8, 12) * 2, "values must lie in [0, 1]"),
    ("image", torch.rand(3, 6, 3, 8, 12).double(), "image: expected dtype torch.float32"),
    ("K", torch.eye(3).repeat(5, 1, 1), "K: expected shape (6, 3, 3), got (5, 3, 3)"),
    ("mask", torch.ones(6, 1, 4, 12), "mask: expected shape (6, 1, 8, 12)"),
    ("frame_ids", torch.tensor([0, -1, 1], dtype=torch.int32), "frame_ids: expected dtype torch.int64"),
    ("depth_gt", torch.zeros(6, 16, 24), "depth_gt: expected 4 dimensions"),
    ("pose_gt", torch.eye(4).repeat(2, 1, 1), "pose_gt: expected shape (3, 4, 4)"),
])
def test_violations_are_named(key, value, message):
    sample = make_sample()
    sample[key] = value
    with pytest.raises(ContractError) as info:
        check_sample(sample)
    assert message in str(info.value)


def test_missing_keys_and_wrong_counts_are_named():
    sample = make_sample()
    del sample["extrinsics"]
    with pytest.raises(ContractError, match=r"lacks required key\(s\) \['extrinsics'\]"):
        check_sample(sample)
    with pytest.raises(ContractError, match="expected 5 cameras, got 6"):
        check_sample(make_sample(), num_cams=5)
