"""DAVIS writer: one camera of synthetic sequences -> DAVIS 2017 480p folders (video only, no
calibration, as DAVIS).

Layout (``<scene>`` = ``synthetic-<sequence name>``)::

    <out>/JPEGImages/480p/<scene>/%05d.jpg     RGB JPEG, resized to 854x480 unless told otherwise
    <out>/Annotations/480p/<scene>/%05d.png    uint8 object labels: 0 background, 1..n the cars of
                                               the sequence (numbered by increasing object id, the
                                               same number in every frame); single-channel PNG, which
                                               reads like DAVIS's palette PNGs as an index array
    <out>/ImageSets/2017/train.txt  val.txt    scene names, one per line (default: the last scene
                                               is val; a single scene is in both)
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dataset.synthetic.sequence import SyntheticSequence

from ._common import FileLog, JPEG_QUALITY, iterate_sequences, train_val_split, write_jpeg_rgb, write_png_gray, write_text

__all__ = ["write_davis", "DAVIS_SIZE"]

DAVIS_SIZE = (854, 480)  # (width, height)


def write_davis(
    sequences: Iterable[SyntheticSequence],
    out_dir: str,
    size: Optional[Tuple[int, int]] = DAVIS_SIZE,
    camera: int = 0,
    val_scenes: Optional[Sequence] = None,
    jpeg_quality: int = JPEG_QUALITY,
    write_annotations: bool = True,
) -> Dict:
    """Writes camera ``camera`` of each sequence as a DAVIS scene.

    Args:
        size: (width, height) of the written frames; None keeps the rendered size.
        val_scenes: sequence names or list positions of the val scenes.
    Returns:
        {"format": "davis", "root", "files", "scenes", "train", "val", "size": (W, H)}
    """
    log = FileLog(out_dir)
    names: List[str] = []
    by_sequence_name: Dict[str, str] = {}
    out_size = None
    for _, seq in iterate_sequences(sequences):
        if not 0 <= camera < seq.num_cameras:
            raise ValueError(f"sequence '{seq.name}': camera {camera} out of range ({seq.num_cameras} cameras)")
        scene = f"synthetic-{seq.name}"
        H, W = seq.image_hw
        width, height = (W, H) if size is None else (int(size[0]), int(size[1]))
        out_size = (width, height)
        shrink = width * height < W * H
        ids = np.asarray(seq.object_ids[:, camera])
        labels = np.zeros(int(ids.max()) + 1 if ids.size else 1, dtype=np.int64)
        objects = np.unique(ids[ids > 0])
        if len(objects) > 255:
            raise ValueError(f"sequence '{seq.name}': {len(objects)} objects do not fit a uint8 annotation")
        labels[objects] = np.arange(1, len(objects) + 1)
        for t in range(seq.num_frames):
            image = seq.images[t, camera]
            annotation = labels[np.maximum(ids[t], 0)].astype(np.uint8)
            if (width, height) != (W, H):
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
                annotation = cv2.resize(annotation, (width, height), interpolation=cv2.INTER_NEAREST)
            write_jpeg_rgb(log.path("JPEGImages", "480p", scene, f"{t:05d}.jpg"), image, jpeg_quality)
            if write_annotations:
                write_png_gray(log.path("Annotations", "480p", scene, f"{t:05d}.png"), annotation)
        names.append(scene)
        by_sequence_name[seq.name] = scene
    if val_scenes is not None:
        val_scenes = [by_sequence_name.get(v, v) if isinstance(v, str) else v for v in val_scenes]
    train, val = train_val_split(names, val_scenes)
    write_text(log.path("ImageSets", "2017", "train.txt"), "".join(n + "\n" for n in train))
    write_text(log.path("ImageSets", "2017", "val.txt"), "".join(n + "\n" for n in val))
    return log.summary("davis", scenes=names, train=train, val=val, size=out_size)
