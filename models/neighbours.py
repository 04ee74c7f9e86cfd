"""Neighbouring cameras of a rig (data.rel_cam_list) as fixed slots, so that the warps of every
camera and every neighbour run as one batched operation."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

NeighbourLists = Optional[Sequence[Optional[Sequence[int]]]]


def neighbour_lists(neighbours: NeighbourLists, num_cams: int) -> List[List[int]]:
    """Checked neighbour lists, one per camera (None, or a None / empty entry: no neighbour)."""
    if neighbours is None:
        return [[] for _ in range(num_cams)]
    if len(neighbours) != num_cams:
        raise ValueError(f"data.rel_cam_list has {len(neighbours)} entries but the batch has {num_cams} cameras")
    lists = [list(row) if row is not None else [] for row in neighbours]
    for c, row in enumerate(lists):
        bad = [j for j in row if j == c or not 0 <= j < num_cams]
        if bad:
            raise ValueError(f"data.rel_cam_list: camera {c} cannot have neighbour(s) {bad} "
                             f"(cameras are 0..{num_cams - 1})")
    return lists


def lists_to_slots(lists: Sequence[Sequence[int]], device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-camera lists of camera indices -> index [S, N] long (camera c's k-th entry in slot k;
    c itself where its list is shorter, such slots being invalid) and valid [S, N] float in {0, 1}.
    S is the longest list (0 when every list is empty)."""
    num_cams = len(lists)
    slots = max((len(row) for row in lists), default=0)
    index = torch.tensor([[row[k] if k < len(row) else c for c, row in enumerate(lists)] for k in range(slots)],
                         dtype=torch.long, device=device).reshape(slots, num_cams)
    valid = torch.tensor([[1.0 if k < len(row) else 0.0 for row in lists] for k in range(slots)],
                         device=device).reshape(slots, num_cams)
    return index, valid


def neighbour_slots(neighbours: NeighbourLists, num_cams: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The neighbours of every camera as slots (:func:`lists_to_slots` of :func:`neighbour_lists`)."""
    return lists_to_slots(neighbour_lists(neighbours, num_cams), device)
