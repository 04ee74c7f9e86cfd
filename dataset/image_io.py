"""Image and mask reading for every dataset adapter: OpenCV decoding, reduced-size JPEG/PNG decoding,
clear errors.

Decoding is the usual bottleneck of surround-view training (DESIGN.md, "What users ask for" 6: a
1936x1216 PNG takes ~80 ms on one core and a DDAD sample has 18 of them). When the caller only needs
a much smaller image, :func:`read_image` decodes it reduced by an integer factor f = 2, 4 or 8:
- JPEG: OpenCV's reduced decode (``IMREAD_REDUCED_COLOR_2/4/8``): libjpeg runs the inverse DCT at
  1/f scale, which is several times faster than a full decode.
- PNG and everything else: a full decode, then an exact f x f box average (cv2 INTER_AREA at an
  integer factor). No faster to decode, but it saves the caller's full-size resize. (OpenCV's own
  reduced path for non-JPEG files resizes with INTER_LINEAR_EXACT, which for f = 4, 8 averages only
  the middle 2 x 2 pixels of each block: aliased. Its geometry is the same.)

Geometry. Both reductions average f x f pixel blocks, so reduced pixel i covers original pixels
[f i, f (i + 1)): a half-pixel-consistent resize by exactly 1/f. A later half-pixel-consistent resize
(cv2 INTER_AREA / INTER_LINEAR, or :func:`dataset.transforms.resize_views`) to the target size
composes with it into the single resize original size -> target size, so the intrinsics follow from
``geometry.resize_intrinsics(K, original_hw, target_hw)`` alone. That is only exact when f divides both
the height and the width (a partial last block would stretch the grid), so a factor is only used when
it does; e.g. 1936x1216 (DDAD) allows 8, 1600x900 (nuScenes) allows 4, 1242x375 (KITTI) none.

Orientation: EXIF orientation tags are ignored (``IMREAD_IGNORE_ORIENTATION``): the returned pixels
are the stored sensor grid, which is what calibrations refer to.

:class:`FrameReader` is what the rig datasets read camera frames with: the decode above plus the
resize to the training size, optionally through :class:`FrameCache`, an on-disk cache of the resized
frames (``data.cache_dir``) that makes later epochs skip decoding altogether.
"""
from __future__ import annotations

import hashlib
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from utils.atomic import atomic_open, save_npz_atomic

PathLike = Union[str, os.PathLike]

# Reduced-decode flag for each factor (colour; 3 channels, BGR).
_REDUCED_COLOR = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def _read_bytes(path: PathLike) -> np.ndarray:
    """The file's bytes as a uint8 array (np.fromfile also works on non-ASCII paths, unlike cv2.imread)."""
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise FileNotFoundError(f"image path is not a file: {path}")
        raise FileNotFoundError(f"image file not found: {path}")
    return np.fromfile(str(path), dtype=np.uint8)


def _png_size(data: bytes) -> Optional[Tuple[int, int]]:
    # 8-byte signature, then the IHDR chunk: length (4), type (4), width (4), height (4).
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(height), int(width)
    return None


# JPEG start-of-frame markers (baseline, progressive, lossless, ...); not DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) from the first SOF segment, walking the marker segments of the header."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return int(height), int(width)
        if marker == 0xDA:  # start of scan before any SOF: malformed
            return None
        pos += 2 + length
    return None


def image_size(path: PathLike) -> Tuple[int, int]:
    """(height, width) of an image file, from its header for PNG and JPEG (no decode), otherwise by
    decoding it. Errors as :func:`read_image`."""
    data = _read_bytes(path)
    size = _header_size(data)
    if size is None:
        size = _decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, path).shape[:2]
    return size


def _header_size(data: np.ndarray) -> Optional[Tuple[int, int]]:
    head = data[:65536].tobytes()
    size = _png_size(head) or _jpeg_size(head)
    if size is None and head[:2] == b"\xff\xd8":
        size = _jpeg_size(data.tobytes())  # a JPEG whose header (e.g. EXIF thumbnail) exceeds 64 KiB
    if size is not None and min(size) <= 0:
        return None
    return size


def _decode(data: np.ndarray, flags: int, path: PathLike) -> np.ndarray:
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ValueError(f"could not decode {path} as an image (corrupt, empty or an unsupported format)")
    return image


def reduction_factor(original_hw: Sequence[int], target_hw: Optional[Sequence[int]]) -> int:
    """The reduced-decode factor :func:`read_image` uses: the largest f in (8, 4, 2) such that the
    reduced image H/f x W/f is still at least ``target_hw`` and f divides both H and W (so the
    reduction is an exact resize); 1 when there is none or no target."""
    if target_hw is None:
        return 1
    (h, w), (th, tw) = original_hw, target_hw
    for factor in (8, 4, 2):
        if h % factor == 0 and w % factor == 0 and h // factor >= th and w // factor >= tw:
            return factor
    return 1


def read_image(path: PathLike, target_hw: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Read an image as RGB.

    Args:
        path: image file (anything OpenCV decodes: PNG, JPEG, ...; grey images become 3 channels,
            16-bit ones 8-bit).
        target_hw: (H, W) the caller will resize to. When it is at most half the original size in
            both dimensions, the image is decoded at 1/2, 1/4 or 1/8 size (see
            :func:`reduction_factor`); the result is still >= target_hw and the caller resizes it.
    Returns:
        (rgb, original_hw): rgb uint8 [h, w, 3] (the possibly reduced decode), original_hw the full
        (H, W) of the file. Intrinsics follow ``resize_intrinsics(K, original_hw, final_hw)``.
    Raises:
        FileNotFoundError naming the path when it does not exist; ValueError naming the path when it
        cannot be decoded as an image.
    """
    data = _read_bytes(path)
    original_hw = _header_size(data)
    factor = reduction_factor(original_hw, target_hw) if original_hw is not None else 1
    if factor > 1:
        reduced_hw = (original_hw[0] // factor, original_hw[1] // factor)
        if data[:2].tobytes() == b"\xff\xd8":  # JPEG: reduced-size IDCT
            bgr = _decode(data, _REDUCED_COLOR[factor] | cv2.IMREAD_IGNORE_ORIENTATION, path)
        else:
            bgr = _decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, path)
            if bgr.shape[:2] == tuple(original_hw):
                bgr = cv2.resize(bgr, (reduced_hw[1], reduced_hw[0]), interpolation=cv2.INTER_AREA)
        if bgr.shape[:2] != reduced_hw:
            # Should not happen (f divides the size); never return a silently inconsistent grid.
            bgr = _decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, path)
            original_hw = bgr.shape[:2]
    else:
        bgr = _decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, path)
        if original_hw is None or tuple(bgr.shape[:2]) != tuple(original_hw):
            original_hw = bgr.shape[:2]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb, (int(original_hw[0]), int(original_hw[1]))


def resize_rgb(rgb: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """Resize a uint8 [h, w, C] image to ``out_hw`` with a half-pixel-consistent filter: INTER_AREA
    (exact box filter) when shrinking, INTER_LINEAR when enlarging; a no-op at the same size."""
    h, w = rgb.shape[:2]
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if (h, w) == (oh, ow):
        return rgb
    interpolation = cv2.INTER_AREA if (oh <= h and ow <= w) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (ow, oh), interpolation=interpolation)


def read_mask(path: PathLike, target_hw: Optional[Sequence[int]] = None) -> np.ndarray:
    """Read a validity mask (1 = the pixel shows the scene, 0 = ego vehicle / invalid).

    Accepts 8-bit masks with values 0/255 (VFDepth's DDAD masks, this project's synthetic masks),
    colour or RGBA masks (nuScenes; the colour channels are converted to grey, alpha is ignored),
    16-bit masks (divided by 65535) and masks stored as 0/1 (maximum value 1: taken as is).

    Args:
        target_hw: (H, W) to resize to with INTER_AREA. Pixels at the mask's edges then get soft
            values in (0, 1), the fraction of the pixel that is valid, as VFDepth's antialiased
            resize does; losses use them as weights, so they are kept, not thresholded.
    Returns:
        float32 [H, W] in [0, 1].
    """
    data = _read_bytes(path)
    raw = _decode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION, path)
    if raw.ndim == 3:
        colour = raw[..., :3] if raw.shape[2] >= 3 else raw[..., :1]
        raw = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY) if colour.shape[2] == 3 else colour[..., 0]
    if raw.dtype == np.uint8:
        scale = 1.0 if raw.max() <= 1 else 255.0
    elif raw.dtype == np.uint16:
        scale = 1.0 if raw.max() <= 1 else 65535.0
    else:
        scale = 1.0
    mask = np.clip(raw.astype(np.float32) / scale, 0.0, 1.0)
    if target_hw is not None and tuple(mask.shape) != tuple(target_hw):
        h, w = mask.shape
        interpolation = cv2.INTER_AREA if (target_hw[0] <= h and target_hw[1] <= w) else cv2.INTER_LINEAR
        mask = cv2.resize(mask, (int(target_hw[1]), int(target_hw[0])), interpolation=interpolation)
        mask = np.clip(mask, 0.0, 1.0)
    return np.ascontiguousarray(mask, dtype=np.float32)


# ----------------------------------------------------------------------------- resized frames and their cache
# Bump when read_image or resize_rgb change the pixels they produce: every cached frame then misses.
FRAME_CACHE_VERSION = 1
_FRAME_MAGIC = b"SFDFRAME"
# magic, sha1 of the entry's key, version, original height and width, cached height and width,
# crc32 of the pixels; then the 3 x height x width uint8 pixels, channels first (R, G, B planes):
# the contract's layout, so that the conversion to float reads them in order.
_FRAME_HEADER = struct.Struct("<8s20sIIIIII")


class FrameCache:
    """An on-disk cache of resized frames: uint8 RGB at one size, one file per source image.

    An entry is named after the sha1 of its key: the decoding method (``method``: decode mode,
    target size, resize filter, OpenCV version, cache version) and the source file's absolute path,
    size and modification time (ns). A changed, replaced or touched image therefore gets a new
    entry; an old entry is never served for it (old entries just stay unused: the folder can be
    deleted at any time). Layout: ``<folder>/<2 hex digits>/<40 hex digits>.frame``, a 52-byte
    header (see ``_FRAME_HEADER``) followed by the raw pixels, so a hit is one read and a
    checksum, no decoding. A hit is returned as an [h, w, 3] view of channels-first pixels.

    Several DataLoader workers (or DDP ranks) may fill it at once: every write goes to a temporary
    file that is renamed over the entry (utils/atomic.py), so a reader sees a whole entry or none,
    and two writers of one entry write the same bytes. An entry that fails its checks (truncated,
    foreign, wrong size, checksum) is reported with a warning and rebuilt from the source. When the
    folder cannot be written, a warning says so once and frames are decoded without caching.
    """

    def __init__(self, folder: PathLike, method: str):
        self.folder = Path(folder)
        self.method = str(method)
        self._writable = True

    def key(self, source: PathLike) -> Optional[bytes]:
        """sha1 of the entry key of ``source``; None when the source cannot be stat'ed (the decode
        then raises the error that names it)."""
        try:
            stat = os.stat(source)
        except OSError:
            return None
        text = f"{self.method}\n{os.path.abspath(source)}\n{stat.st_size}\n{stat.st_mtime_ns}"
        return hashlib.sha1(text.encode("utf-8", "surrogateescape")).digest()

    def entry_path(self, digest: bytes) -> Path:
        name = digest.hex()
        return self.folder / name[:2] / f"{name}.frame"

    def load(self, digest: bytes, source: PathLike) -> Optional[Tuple[np.ndarray, Tuple[int, int]]]:
        """(rgb uint8 [h, w, 3], original_hw) of a valid entry; None for a missing one or, with a
        warning, a corrupt one."""
        path = self.entry_path(digest)
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except (FileNotFoundError, NotADirectoryError):     # not cached (yet)
            return None
        except OSError as exc:
            self._report_corrupt(path, source, f"unreadable: {exc}")
            return None
        entry = _parse_frame(data, digest)
        if isinstance(entry, str):
            self._report_corrupt(path, source, entry)
            return None
        return entry

    def save(self, digest: bytes, rgb: np.ndarray, original_hw: Sequence[int]) -> None:
        if not self._writable:
            return
        planes = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
        header = _FRAME_HEADER.pack(_FRAME_MAGIC, digest, FRAME_CACHE_VERSION, int(original_hw[0]),
                                    int(original_hw[1]), planes.shape[1], planes.shape[2], zlib.crc32(planes))
        path = self.entry_path(digest)
        try:
            with atomic_open(path, "wb") as f:
                f.write(header)
                f.write(planes.data)
        except OSError as exc:
            self._writable = False
            warnings.warn(f"cannot write the frame cache (data.cache_dir={self.folder}: {path}: {exc}); "
                          "decoding frames without caching them", RuntimeWarning, stacklevel=2)

    def read(self, source: PathLike, build) -> Tuple[np.ndarray, Tuple[int, int]]:
        """The cached frame of ``source``, or ``build(source)`` -> (rgb, original_hw), stored."""
        digest = self.key(source)
        if digest is None:
            return build(source)
        entry = self.load(digest, source)
        if entry is None:
            entry = build(source)
            self.save(digest, *entry)
        return entry

    def _report_corrupt(self, path: Path, source: PathLike, reason: str) -> None:
        warnings.warn(f"frame cache entry {path} (of {source}) is corrupt ({reason}); decoding the image "
                      "again and rewriting the entry", RuntimeWarning, stacklevel=3)


def _parse_frame(data: np.ndarray, digest: bytes):
    """(rgb, original_hw) from the bytes of a cache entry, or a string saying what is wrong."""
    if data.size < _FRAME_HEADER.size:
        return f"{data.size} bytes, shorter than the header"
    magic, stored, version, oh, ow, h, w, crc = _FRAME_HEADER.unpack(data[:_FRAME_HEADER.size].tobytes())
    if magic != _FRAME_MAGIC:
        return "not a frame cache file"
    if stored != digest or version != FRAME_CACHE_VERSION:
        return "it holds another frame"
    pixels = data[_FRAME_HEADER.size:]
    if pixels.size != h * w * 3:
        return f"{pixels.size} bytes of pixels for a {h}x{w} frame"
    if zlib.crc32(pixels) != crc:
        return "checksum mismatch"
    return pixels.reshape(3, h, w).transpose(1, 2, 0), (int(oh), int(ow))


class FrameReader:
    """Reads camera frames as uint8 RGB [H, W, 3] at ``target_hw``, with the original size (the
    intrinsics follow ``resize_intrinsics(K, original_hw, target_hw)`` whatever the path).

    reduced_decode: decode at 1/2, 1/4 or 1/8 size where that is exact (:func:`read_image`), then
        resize (:func:`resize_rgb`); False decodes at full size first: the plain path that
        ``tools/benchmark.py --loader`` compares with (the pixels differ slightly: a reduced JPEG
        decode runs the inverse DCT at the small size).
    cache_dir: a :class:`FrameCache` folder (``data.cache_dir``), or None for no cache.
    """

    def __init__(self, target_hw: Sequence[int], reduced_decode: bool = True,
                 cache_dir: Optional[PathLike] = None):
        self.target_hw = (int(target_hw[0]), int(target_hw[1]))
        self.reduced_decode = bool(reduced_decode)
        self.cache = None if cache_dir is None else FrameCache(cache_dir, self.method)

    @property
    def method(self) -> str:
        """Everything besides the source file that decides the pixels (the cache key's method)."""
        decode = "reduced" if self.reduced_decode else "full"
        h, w = self.target_hw
        return (f"sfdepth-frame-v{FRAME_CACHE_VERSION} {decode}-decode resize_rgb(area-down,linear-up) "
                f"{h}x{w} opencv-{cv2.__version__}")

    def decode(self, path: PathLike) -> Tuple[np.ndarray, Tuple[int, int]]:
        rgb, original_hw = read_image(path, self.target_hw if self.reduced_decode else None)
        return resize_rgb(rgb, self.target_hw), original_hw

    def read(self, path: PathLike) -> Tuple[np.ndarray, Tuple[int, int]]:
        if self.cache is None:
            return self.decode(path)
        return self.cache.read(path, self.decode)


# ----------------------------------------------------------------------------- depth-map cache
# Written into every cache file, so that a depth map cached by another tool under the same path
# (packnet-sfm / VFDepth write DDAD's to the same <scene>/depth/lidar/ folders, with truncated pixel
# coordinates and last-write-wins) is never mistaken for ours.
DEPTH_CACHE_METHOD = "sfdepth:nearest-pixel-centre,nearest-return"


class DepthCache:
    """Cache of computed depth maps as npz files (key ``depth``, float32 [H, W], 0 = no
    measurement, plus a ``method`` tag).

    ``load`` returns None for a missing, unreadable, differently sized or foreign file (one
    without our tag; it is then left alone: ``save`` does not overwrite it). ``save`` writes
    atomically; when the folder cannot be written (read-only data) it warns once and then stops
    trying. ``enabled=False`` turns the cache off.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)
        self._writable = True
        self._warned_foreign = False

    def load(self, path: PathLike, expected_hw: Optional[Sequence[int]] = None) -> Optional[np.ndarray]:
        if not self.enabled or not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if "depth" not in data.files:
                    return None
                method = str(data["method"]) if "method" in data.files else None
                depth = np.asarray(data["depth"], dtype=np.float32)
        except Exception:  # a corrupt file (e.g. an interrupted foreign write): recompute
            return None
        if method != DEPTH_CACHE_METHOD:
            if not self._warned_foreign:
                warnings.warn(
                    f"depth cache {path} was not written by this project (method {method!r}; packnet-sfm and "
                    "VFDepth cache lidar depth with truncated pixels and last-write-wins); ignoring such files "
                    "and computing the depth in memory", stacklevel=2)
                self._warned_foreign = True
            return None
        if expected_hw is not None and tuple(depth.shape) != tuple(expected_hw):
            return None
        return depth

    def is_foreign(self, path: PathLike) -> bool:
        """True when ``path`` holds a depth file without our tag (so it must not be overwritten)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return "method" not in data.files or str(data["method"]) != DEPTH_CACHE_METHOD
        except Exception:
            return False

    def save(self, path: PathLike, depth: np.ndarray) -> None:
        if not (self.enabled and self._writable):
            return
        if os.path.isfile(path) and self.is_foreign(path):
            return
        try:
            save_npz_atomic(path, depth=np.asarray(depth, dtype=np.float32), method=np.array(DEPTH_CACHE_METHOD))
        except OSError as exc:
            self._writable = False
            warnings.warn(f"cannot write the depth cache ({path}: {exc}); continuing without writing it", stacklevel=2)
