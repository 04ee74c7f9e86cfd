"""Split files: which samples a dataset adapter serves, plus the alternating batch sampler of the
multi-mono-sf fine-tuning combination.

Formats (blank lines and lines starting with ``#`` are ignored everywhere):

- **frames** (monodepth2 style, spec formats.md §1): ``<folder> <frame> <side>`` per line, e.g.
  ``2011_09_26/2011_09_26_drive_0023_sync 3 l``. The frame is an integer, possibly zero-padded
  (``0000000069``); the side is ``l`` (image_02) or ``r`` (image_03) and may be left out (then
  ``l``). The packnet-sfm style, whose first token is an image path such as
  ``2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000001.png`` (further tokens are
  ignored), is read into the same entries.
- **scenes** (multi-mono-sf scene lists; DDAD/DAVIS scene names): one name per line, e.g.
  ``2011_09_26_drive_0023_sync``.
- **tokens** (nuScenes sample tokens): one 32-digit lower-case hexadecimal token per line.

Every reading error is a :class:`SplitFileError` naming the file and the line number.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from torch.utils.data import Sampler

from utils.atomic import write_text_atomic

PathLike = Union[str, os.PathLike]

__all__ = [
    "SplitFileError",
    "FrameEntry",
    "read_frame_split",
    "write_frame_split",
    "read_scene_list",
    "write_scene_list",
    "read_token_list",
    "write_token_list",
    "detect_split_format",
    "AlternatingBatchSampler",
]

_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SIDE_OF_FOLDER = {"image_02": "l", "image_03": "r"}


class SplitFileError(ValueError):
    """A split file that cannot be read; the message names the file and, for a bad line, its number."""


@dataclass(frozen=True)
class FrameEntry:
    """One line of a frames split: ``folder`` relative to the dataset root, ``frame`` index, ``side``
    ``"l"`` or ``"r"``."""

    folder: str
    frame: int
    side: str = "l"

    @property
    def date(self) -> str:
        """The KITTI date folder (first path component)."""
        return PurePosixPath(self.folder).parts[0]

    @property
    def drive(self) -> str:
        """The drive folder name (last path component)."""
        return PurePosixPath(self.folder).name


def _lines(path: PathLike) -> Iterator[Tuple[int, List[str], str]]:
    """(line number, tokens, raw line) of the non-blank, non-comment lines of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise SplitFileError(f"split file not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.strip()
            if line and not line.startswith("#"):
                yield number, line.split(), line


def _frame_from_image_path(token: str) -> Optional[FrameEntry]:
    """packnet-sfm style ``<folder>/image_0X/data/<frame>.png`` -> FrameEntry, None otherwise."""
    p = PurePosixPath(token.replace("\\", "/"))
    if p.suffix.lower() not in _IMAGE_SUFFIXES or len(p.parts) < 4 or p.parts[-2] != "data":
        return None
    camera = p.parts[-3]
    if camera not in _SIDE_OF_FOLDER or not p.stem.isdigit():
        return None
    return FrameEntry(str(PurePosixPath(*p.parts[:-3])), int(p.stem), _SIDE_OF_FOLDER[camera])


def read_frame_split(path: PathLike) -> List[FrameEntry]:
    """Read a frames split (monodepth2 or packnet-sfm style, see the module docstring)."""
    entries: List[FrameEntry] = []
    for number, tokens, line in _lines(path):
        where = f"{path}, line {number}: '{line}'"
        from_image = _frame_from_image_path(tokens[0])
        if from_image is not None:
            entries.append(from_image)
            continue
        if len(tokens) not in (2, 3):
            raise SplitFileError(
                f"{where}: expected '<folder> <frame> [l|r]' (e.g. '2011_09_26/2011_09_26_drive_0023_sync 3 l') "
                f"or an image path '<folder>/image_02/data/0000000003.png'")
        folder, frame = tokens[0], tokens[1]
        side = tokens[2] if len(tokens) == 3 else "l"
        try:
            index = int(frame)
        except ValueError:
            raise SplitFileError(f"{where}: the frame '{frame}' is not an integer") from None
        if index < 0:
            raise SplitFileError(f"{where}: the frame {index} is negative")
        if side not in ("l", "r"):
            raise SplitFileError(f"{where}: the side '{side}' must be 'l' (image_02) or 'r' (image_03)")
        entries.append(FrameEntry(folder.replace("\\", "/").rstrip("/"), index, side))
    return entries


def write_frame_split(path: PathLike, entries: Iterable[FrameEntry], zero_pad: bool = False) -> None:
    """Write a monodepth2-style frames split (atomically); ``zero_pad`` writes 10-digit frames as
    the eigen test split does."""
    lines = []
    for e in entries:
        frame = f"{e.frame:010d}" if zero_pad else str(e.frame)
        lines.append(f"{e.folder} {frame} {e.side}\n")
    write_text_atomic(path, "".join(lines))


def read_scene_list(path: PathLike) -> List[str]:
    """Read a scene list: one scene (drive) name per line, no whitespace inside a name."""
    names: List[str] = []
    for number, tokens, line in _lines(path):
        if len(tokens) != 1:
            raise SplitFileError(f"{path}, line {number}: '{line}': expected one scene name per line, got {len(tokens)} tokens")
        names.append(tokens[0].replace("\\", "/").rstrip("/"))
    return names


def write_scene_list(path: PathLike, names: Iterable[str]) -> None:
    """Write a scene list (atomically)."""
    names = list(names)
    for name in names:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"scene name '{name}' is empty or contains whitespace")
    write_text_atomic(path, "".join(f"{n}\n" for n in names))


def read_token_list(path: PathLike) -> List[str]:
    """Read a nuScenes sample-token list (32 lower-case hexadecimal digits per line)."""
    tokens: List[str] = []
    for number, parts, line in _lines(path):
        if len(parts) != 1 or not _TOKEN.match(parts[0]):
            raise SplitFileError(
                f"{path}, line {number}: '{line}': expected one nuScenes sample token (32 lower-case hex digits)")
        tokens.append(parts[0])
    return tokens


def write_token_list(path: PathLike, tokens: Iterable[str]) -> None:
    """Write a nuScenes sample-token list (atomically)."""
    tokens = list(tokens)
    for t in tokens:
        if not _TOKEN.match(t):
            raise ValueError(f"'{t}' is not a nuScenes token (32 lower-case hex digits)")
    write_text_atomic(path, "".join(f"{t}\n" for t in tokens))


def detect_split_format(path: PathLike) -> str:
    """``"frames"``, ``"scenes"`` or ``"tokens"`` from the first non-comment line of ``path``
    (SplitFileError for an empty file)."""
    for _, tokens, _ in _lines(path):
        if len(tokens) == 1 and _frame_from_image_path(tokens[0]) is None:
            return "tokens" if _TOKEN.match(tokens[0]) else "scenes"
        return "frames"
    raise SplitFileError(f"split file {path} holds no entries")


class AlternatingBatchSampler(Sampler):
    """Batches that alternate between two datasets, as multi-mono-sf fine-tunes on KITTI 2015 (even
    steps, supervised) and KITTI raw (odd steps, self-supervised).

    Use it with ``torch.utils.data.ConcatDataset([first, second])`` as ``batch_sampler``: indices
    ``< len(first)`` are the first dataset's, the others the second's shifted by ``len(first)``;
    each batch holds indices of one dataset only. An epoch has ``num_batches`` batches (default
    ``2 * ceil(len(first) / batch_size)``: every first-dataset sample once, as the reference's
    2 x |KITTI 2015| iterations with batch size 1). The first dataset is reshuffled each epoch; the
    second is drawn without replacement from successive permutations, continuing across its end.
    Deterministic given (seed, epoch): call :meth:`set_epoch` each epoch. With ``num_replicas`` > 1
    (DDP) each rank takes every ``num_replicas``-th index of the shared permutations.
    """

    def __init__(self, len_first: int, len_second: int, batch_size: int = 1, num_batches: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        if len_first <= 0 or len_second <= 0:
            raise ValueError(f"both datasets must be non-empty, got lengths {len_first} and {len_second}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        self.len_first, self.len_second = int(len_first), int(len_second)
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        per_rank_first = math.ceil(self.len_first / self.num_replicas)
        self.num_batches = int(num_batches) if num_batches is not None else 2 * math.ceil(per_rank_first / self.batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _stream(self, rng: np.random.Generator, length: int) -> Iterator[int]:
        """Endless indices of one dataset for this rank: successive (shuffled) permutations."""
        while True:
            order = rng.permutation(length) if self.shuffle else np.arange(length)
            for i in order[self.rank::self.num_replicas] if length >= self.num_replicas else order:
                yield int(i)

    def __iter__(self) -> Iterator[List[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        first = self._stream(np.random.default_rng(rng.integers(2**63)), self.len_first)
        second = self._stream(np.random.default_rng(rng.integers(2**63)), self.len_second)
        for step in range(self.num_batches):
            if step % 2 == 0:
                yield [next(first) for _ in range(self.batch_size)]
            else:
                yield [self.len_first + next(second) for _ in range(self.batch_size)]

    def __len__(self) -> int:
        return self.num_batches
