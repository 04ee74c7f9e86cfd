"""Writers of rendered synthetic sequences in the real on-disk dataset formats.

Each ``write_<format>(sequences, out_dir, ...)`` takes a list (or a generator, consumed once) of
:class:`~dataset.synthetic.sequence.SyntheticSequence`, writes one dataset under ``out_dir``
deterministically (same input -> byte-identical files) and returns a summary dict with the
relative paths it wrote. Each module's docstring gives the exact layout and the extra,
non-standard ground-truth files it adds.

| format      | writer             | preset to render with | module       |
|-------------|--------------------|-----------------------|--------------|
| ddad (DGP)  | write_dgp          | "ddad"                | dgp.py       |
| nuscenes    | write_nuscenes     | "nuscenes"            | nuscenes.py  |
| kitti_raw   | write_kitti_raw    | "kitti"               | kitti_raw.py |
| kitti_2015  | write_kitti_2015   | "kitti"               | kitti_2015.py|
| davis       | write_davis        | "kitti"               | davis.py     |
"""
from .davis import write_davis
from .dgp import write_dgp
from .kitti_2015 import write_kitti_2015
from .kitti_raw import write_kitti_raw
from .nuscenes import write_nuscenes

WRITERS = {
    "ddad": write_dgp,
    "nuscenes": write_nuscenes,
    "kitti_raw": write_kitti_raw,
    "kitti_2015": write_kitti_2015,
    "davis": write_davis,
}

PRESET_OF_FORMAT = {
    "ddad": "ddad",
    "nuscenes": "nuscenes",
    "kitti_raw": "kitti",
    "kitti_2015": "kitti",
    "davis": "kitti",
}

__all__ = ["WRITERS", "PRESET_OF_FORMAT", "write_dgp", "write_nuscenes", "write_kitti_raw", "write_kitti_2015", "write_davis"]

from .generate import ensure_synthetic_dataset, generate_synthetic_dataset  # noqa: E402  (needs WRITERS above)

__all__ += ["ensure_synthetic_dataset", "generate_synthetic_dataset"]
