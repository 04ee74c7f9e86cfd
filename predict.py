"""Predict depth (and, for the scene flow model, optical flow and scene flow) on one's own images.

    python predict.py --config_file=F --weight_path=W --input photo.jpg [--intrinsics K.json | --fov 90]
    python predict.py --config_file=F --weight_path=W --input frames/ --colorbar --depth_format npy
    python predict.py --config_file=F --weight_path=W --input video.mp4 --batch_size 8
    python predict.py --config_file=configs/ddad/ddad_surround_fusion.yaml --weight_path=W --input my_rig/

--input is an image, a folder of images, a folder of such folders, a video file, or for a surround
model (model.type surround_depth) a rig folder: one sub-folder per camera plus a calibration JSON
(README "Use on your own data"). Outputs go to --output (default results/<config name>/predict/
<input name>/): colourised and raw depth, point clouds, flow pictures, animations
(trainer/predict.py lists them). Runs on CUDA when available. Exit status: 0 done, 1 runtime error
(one line; SFDEPTH_DEBUG=1 prints the traceback), 2 config or argument error.
"""

import sys

from trainer import run_reporting_errors


def build_parser():
    from utils.cli import build_parser as config_parser
    from trainer.predict import DEPTH_FORMATS

    parser = config_parser(__doc__.strip().splitlines()[0], "eval")
    parser.add_argument("--input", required=True, help="image, folder of images, video file, or rig folder")
    parser.add_argument("--intrinsics", default=None,
                        help="3x3 intrinsics file (.json: [[...]], flat 9, {'K': ...} or {fx, fy, cx, cy}; .txt; "
                             ".npy) in pixels of the original images or normalised by width / height")
    parser.add_argument("--fov", type=float, default=None,
                        help="no intrinsics file: assume this horizontal field of view in degrees "
                             "(default: data.assumed_focal_px, 700 px)")
    parser.add_argument("--calibration", default=None,
                        help="rig folder: the calibration JSON (default <input>/calibration.json or its only *.json)")
    parser.add_argument("--output", default=None, help="output folder (default results/<name>/predict/<input name>)")
    parser.add_argument("--colorbar", action="store_true", help="add a colour bar in metres to the depth pictures")
    parser.add_argument("--depth_format", default="png16", choices=DEPTH_FORMATS,
                        help="raw depth as uint16 PNG (metres x 256, 0 = none) or float32 .npy (metres)")
    parser.add_argument("--batch_size", type=int, default=4, help="frames per forward pass (default 4)")
    parser.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--no_animation", action="store_true", help="do not write depth.gif / depth.mp4")
    parser.add_argument("--num_workers", type=int, default=0, help="data loader processes (default 0)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    from utils.config import ConfigError, load_config

    args = build_parser().parse_intermixed_args(argv)
    try:
        # The config's data paths are not used here: only the model section and the input size matter.
        cfg = load_config(args.config_file, args.overrides, mode="eval", weight_path=args.weight_path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0

    def job():
        from trainer.predict import predict
        predict(cfg, args.weight_path, args.input, intrinsics=args.intrinsics, fov_deg=args.fov,
                calibration=args.calibration, output=args.output, colorbar=args.colorbar,
                depth_format=args.depth_format, batch_size=args.batch_size, device=args.device,
                animate=not args.no_animation, num_workers=args.num_workers, progress=not args.no_progress)

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
