"""Copy a config's DDAD or nuScenes dataset with its camera images replaced by photographs at the real
datasets' size, so that `tools/benchmark.py --loader` times decoding as it costs on the real data.

    python tools/real_size_data.py --config_file=configs/synthetic/ddad_surround_fusion.yaml \
        --photos=../shared/data/dgp_test_scene --out=/tmp/ddad_real_size [KEY=VALUE ...]
    python tools/benchmark.py --config_file=configs/synthetic/ddad_surround_fusion.yaml --loader \
        <the overrides it prints> training.height=384 training.width=640

Why a copy: the synthetic world is ray cast, far too slowly for full-size frames (hours for one
short DDAD scene at 1936x1216 on a laptop), and its smooth renderings compress, hence decode,
unlike photographs. So the config's dataset (rendered on first use at its small size) is copied
with its tables, and every camera image is replaced by a photograph (cycling through the
*.jpg / *.png files under --photos, e.g. the real 1936x1216 DDAD frames of the DGP test scene),
scaled to cover and centre-cropped to the real size, in the real format: DDAD 1936x1216 PNG,
nuScenes 1600x900 JPEG (quality --jpeg_quality). The intrinsics in the tables are scaled to the
new size, so the copy stays consistent for the loader; the pictures do not fit the rig's geometry,
which does not matter for timing. Lidar depth caches are not copied.

Prints the config overrides that point at the copy (one per line), and writes them to
<out>/overrides.txt.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402

from utils.cli import DEFAULT_CONFIG  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402

# data.dataset -> the real dataset's (height, width) and image format
REAL_SIZE = {"ddad": ((1216, 1936), ".png"), "nuscenes": ((900, 1600), ".jpg")}
MARKER = ".sfdepth_real_size.json"
PATH_KEYS = ("data_path", "mask_path", "train_split", "val_split", "test_split")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config_file", default=DEFAULT_CONFIG)
    parser.add_argument("--photos", required=True, help="folder of photographs (*.jpg, *.png, searched recursively)")
    parser.add_argument("--out", required=True, help="folder for the copy (created; replaced if it holds an "
                                                     "earlier copy made by this tool)")
    parser.add_argument("--jpeg_quality", type=int, default=85, help="nuScenes: JPEG quality of the photographs")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Pictures


def find_photos(folder: Path) -> List[Path]:
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise FileNotFoundError(f"--photos: no *.jpg or *.png files under {folder}")
    return photos


def cover_crop(bgr, hw: Sequence[int]):
    """Scale `bgr` so that it covers hw (keeping its aspect), then take the centre hw."""
    h, w = bgr.shape[:2]
    scale = max(hw[0] / h, hw[1] / w)
    size = (max(hw[1], round(w * scale)), max(hw[0], round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(bgr, size, interpolation=interpolation) if size != (w, h) else bgr
    top, left = (scaled.shape[0] - hw[0]) // 2, (scaled.shape[1] - hw[1]) // 2
    return scaled[top:top + hw[0], left:left + hw[1]]


def encoded_photo(path: Path, hw: Sequence[int], ext: str, jpeg_quality: int) -> bytes:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"--photos: cannot decode {path}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, cover_crop(bgr, hw), params)
    if not ok:
        raise ValueError(f"cannot encode {path} as {ext}")
    return data.tobytes()


def camera_images(root: Path, dataset: str) -> List[Path]:
    """Every camera image of a DGP or nuScenes folder, sorted."""
    if dataset == "ddad":
        files = root.glob("*/rgb/*/*.png")
    else:
        files = [p for folder in ("samples", "sweeps") for p in root.glob(f"{folder}/CAM_*/*.jpg")]
    return sorted(files)


# ----------------------------------------------------------------------------------------------
# Tables


def scaled_intrinsics(fx: float, fy: float, cx: float, cy: float, old_hw, new_hw) -> Tuple[float, ...]:
    """Intrinsics of a resize from old_hw to new_hw (half-pixel: pixel centres stay centres)."""
    sx, sy = new_hw[1] / old_hw[1], new_hw[0] / old_hw[0]
    return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


def patch_dgp_calibrations(root: Path, old_hw, new_hw) -> None:
    for path in root.glob("*/calibration/*.json"):
        calibration = json.loads(path.read_text())
        for intrinsics in calibration["intrinsics"]:
            if intrinsics.get("fx", 0.0) > 0:              # the lidar has zero intrinsics
                values = scaled_intrinsics(intrinsics["fx"], intrinsics["fy"], intrinsics["cx"], intrinsics["cy"],
                                           old_hw, new_hw)
                intrinsics.update(zip(("fx", "fy", "cx", "cy"), values))
        path.write_text(json.dumps(calibration, indent=2, sort_keys=True))


def patch_nuscenes_tables(tables: Path, old_hw, new_hw) -> None:
    path = tables / "calibrated_sensor.json"
    sensors = json.loads(path.read_text())
    for record in sensors:
        if record["camera_intrinsic"]:
            K = record["camera_intrinsic"]
            fx, fy, cx, cy = scaled_intrinsics(K[0][0], K[1][1], K[0][2], K[1][2], old_hw, new_hw)
            record["camera_intrinsic"] = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
    path.write_text(json.dumps(sensors, indent=2))
    path = tables / "sample_data.json"
    records = json.loads(path.read_text())
    for record in records:
        if record["fileformat"] == "jpg":
            record["height"], record["width"] = int(new_hw[0]), int(new_hw[1])
    path.write_text(json.dumps(records, indent=2))


# ----------------------------------------------------------------------------------------------
# The copy


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f"--out {out} exists, is not empty and was not made by this tool; "
                                  "choose another folder")
        shutil.rmtree(out)


def overrides_for(cfg, source_root: Path, out: Path) -> List[str]:
    """The data.* path keys of cfg that lie in source_root, moved into out; data.synthetic off."""
    overrides = ["data.synthetic=false"]
    source = os.path.abspath(source_root)
    for key in PATH_KEYS:
        value = getattr(cfg.data, key) and os.path.abspath(getattr(cfg.data, key))
        if value and (value == source or value.startswith(source + os.sep)):
            overrides.append(f"data.{key}={os.path.normpath(out / os.path.relpath(value, source))}")
    return overrides


def make_real_size_copy(cfg, photos_dir: Path, out: Path, jpeg_quality: int = 85) -> Dict:
    """Write the copy (see the module docstring); returns what was done and the overrides."""
    from dataset.build import ensure_synthetic_data
    from dataset.image_io import image_size

    if cfg.data.dataset not in REAL_SIZE:
        raise ValueError(f"data.dataset={cfg.data.dataset!r}: only {sorted(REAL_SIZE)} have a real size here")
    if cfg.data.synthetic:
        ensure_synthetic_data(cfg)
    source = Path(cfg.data.synthetic_root)
    real_hw, ext = REAL_SIZE[cfg.data.dataset]
    photos = find_photos(photos_dir)
    out = out.resolve()
    _prepare_out(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("depth", "*.lock"))
    images = camera_images(out, cfg.data.dataset)
    if not images:
        raise FileNotFoundError(f"no camera images found in the copy of {source}")
    old_hw = image_size(images[0])
    encoded = [encoded_photo(p, real_hw, ext, jpeg_quality) for p in photos]
    for i, path in enumerate(images):
        path.write_bytes(encoded[i % len(encoded)])
    if cfg.data.dataset == "ddad":
        patch_dgp_calibrations(out, old_hw, real_hw)
    else:
        patch_nuscenes_tables(out / cfg.data.nusc_version, old_hw, real_hw)
    overrides = overrides_for(cfg, source, out)
    summary = {"source": str(source), "out": str(out), "images": len(images), "photos": len(photos),
               "real_hw": list(real_hw), "source_hw": list(old_hw), "format": ext,
               "mean_file_bytes": sum(len(encoded[i % len(encoded)]) for i in range(len(images))) // len(images),
               "overrides": overrides}
    (out / MARKER).write_text(json.dumps(summary, indent=2))
    (out / "overrides.txt").write_text("\n".join(overrides) + "\n")
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = make_real_size_copy(cfg, Path(args.photos), Path(args.out), args.jpeg_quality)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "overrides"}), file=sys.stderr)
    print("\n".join(summary["overrides"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
