"""Train a model described by a YAML config.

    python train.py --config_file=configs/ddad/ddad_surround_fusion.yaml [KEY=VALUE ...]
    python train.py --config_file=F ddp.ddp_enable=true ddp.world_size=2     # 2 processes on this machine
    torchrun --nproc_per_node=4 train.py --config_file=F                      # joins the torchrun job
    python train.py --config_file=F --resume                                  # continue a killed run
    python train.py --config_file=F --weight_path=results/<name>/models/weights_N load.pretrain=true
    python train.py --config_file=F --print_config training.batch_size=4

Results go to results/<config name>/ (config.yaml, models/weights_<epoch>/, train/ and val/
TensorBoard logs). A run continues where a checkpoint left it (same step, optimizer, schedule, RNG
and position in the epoch) with load.pretrain=true and the checkpoint folder given by
--weight_path or load.weights; --resume does that with the newest checkpoint of the run's
models/ folder (and starts from scratch when there is none). Exit status: 0 done, 1 runtime error
(one line; SFDEPTH_DEBUG=1 prints the traceback), 2 config error.
"""

import sys

from trainer import command_line, run_reporting_errors

RESUME_HELP = ("continue from the newest checkpoint in results/<name>/models (load.pretrain=true with "
               "that folder); start from scratch when there is none")


def resume_latest(cfg) -> None:
    """Point load.pretrain / data.load_weights_dir at the newest checkpoint of this run."""
    from trainer.checkpoint import latest_checkpoint
    latest = latest_checkpoint(cfg.data.save_weights_root)
    if latest is None:
        print(f"--resume: no checkpoint in {cfg.data.save_weights_root} yet; starting from scratch",
              file=sys.stderr)
        return
    cfg.load.pretrain = True
    cfg.data.load_weights_dir = str(latest)


def main(argv=None) -> int:
    args, cfg = command_line(__doc__.strip().splitlines()[0], "train", argv, [("--resume", RESUME_HELP)])
    if args.resume and args.weight_path:
        print("error: --resume and --weight_path both choose the checkpoint to continue from; give one",
              file=sys.stderr)
        return 2

    def job():
        from trainer.loop import train
        if args.resume:
            resume_latest(cfg)
        train(cfg)

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
