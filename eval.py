"""Evaluate a trained model against ground truth and print the metric tables.

    python eval.py --config_file=configs/ddad/ddad_surround_fusion.yaml --weight_path=results/ddad_surround_fusion/models/weights_19
    python eval.py --config_file=F --weight_path=W --save_vis        # also write vis_results/cam<i>/<index>_depth.png
    python eval.py --config_file=configs/kitti/eval_ft_test.yaml --weight_path=W --save_out   # KITTI 2015 submission PNGs
    python eval.py --config_file=F --print_config eval.eval_batch_size=2

The networks of load.models_to_load are read from --weight_path (default
results/<name>/models/<load.weights>) and run over the whole evaluation split; the table (metric
and/or median-scaled as eval.scale_modes lists, per camera and their mean) is printed and written to
results/<name>/eval/metrics.json. A scene flow model (model.type mono_sceneflow) reports the KITTI
2015 D1, D2, Fl and SF-all outliers instead, writes the submission files with --save_out and, on
DAVIS or folders of frames, depth and scene flow pictures and point clouds (trainer/evaluate_sceneflow.py).
Exit status: 0 done, 1 runtime error, 2 config error.
"""

import sys

from trainer import command_line, run_reporting_errors

SAVE_VIS_HELP = ("write pictures to results/<name>/vis_results/: the colourised predicted depth of every camera; "
                 "for a scene flow model disparity, optical flow and scene flow")
SAVE_OUT_HELP = ("scene flow on KITTI 2015: write the submission files (disp_0/, disp_1/, flow/ 16-bit PNGs) to "
                 "results/<name>/submission/ (also eval.save_out=true)")


def main(argv=None) -> int:
    args, cfg = command_line(__doc__.strip().splitlines()[0], "eval", argv,
                             [("--save_vis", SAVE_VIS_HELP), ("--save_out", SAVE_OUT_HELP)])

    def job():
        from trainer.evaluate import evaluate
        evaluate(cfg, weight_path=args.weight_path, save_vis=args.save_vis, save_out=args.save_out)

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
