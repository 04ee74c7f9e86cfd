"""The complete config schema: every key, its type, its default and its allowed values.

Sections and key names follow the VFDepth reference (`model`, `data`, `training`, `loss`, `eval`,
`ddp`, `load`, `logging`) so that its users recognise their files; keys the monocular scene flow
system needs are added to the same sections. Defaults are the DDAD surround-fusion values.

A key is declared with `key(default, ...)`; its Python annotation is its type. Keys marked
`derived=True` are computed by `utils.config` after loading and cannot be set from a file.
Keys marked `reference=...` switch to a documented quirk of a reference implementation.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Union

# Choices shared with other modules (kept here so that `utils` depends on nothing of ours).
MODEL_TYPES = ("surround_depth", "mono_sceneflow")
DATASETS = ("ddad", "nuscenes", "kitti_raw", "kitti_2015", "kitti_finetune", "davis", "custom")
DATA_REQUIREMENTS = ("gt_pose", "gt_depth", "mask")
AMP_MODES = ("off", "bf16", "fp16")
SCHEDULERS = ("step", "multistep", "none")
INTRINSICS_CONVENTIONS = ("half_pixel", "reference")
DDP_BACKENDS = ("auto", "nccl", "gloo")
SCALE_MODES = ("metric", "median")

# VFDepth's fixed neighbour table for its 6-camera order F, FL, FR, RL, RR, R (spec vfdepth §2).
REFERENCE_SIX_CAMERA_NEIGHBOURS = [[1, 2], [0, 3], [0, 4], [1, 5], [2, 5], [3, 4]]


def key(default, *, choices=None, length=None, minimum=None, maximum=None, path=None,
        derived=False, help=""):
    """Declare a config key. `path` is 'file', 'dir' or 'any': the value must exist on disk
    when paths are checked (a run is started); None or empty disables the check."""
    meta = dict(choices=choices, length=length, minimum=minimum, maximum=maximum, path=path,
                derived=derived, help=help)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    type: str = key("surround_depth", choices=MODEL_TYPES,
                    help="algorithm: surround_depth (VFDepth fusion or FSM baseline, chosen by "
                         "depth_model/pose_model) or mono_sceneflow (multi-frame monocular scene flow)")
    num_layers: int = key(18, choices=(18, 34, 50), help="ResNet depth of the encoders")
    weights_init: Union[bool, str] = key(
        True, help="true: ImageNet weights through torchvision; a path: load that .pth file; false: random")
    depth_model: str = key("fusion", choices=("fusion", "fsm"))
    pose_model: str = key("fusion", choices=("fusion", "fsm"))
    fusion_level: int = key(2, minimum=0, maximum=4, help="ResNet level fused into the voxel grid (2 = 1/8)")
    fusion_feat_in_dim: int = key(256, minimum=1, help="channels after the 1x1 aggregation conv")
    use_skips: bool = key(False, help="skip connections in the fusion depth decoder")
    voxel_unit_size: List[float] = key([1.0, 1.0, 1.5], length=3, help="voxel edge lengths x, y, z in metres")
    voxel_size: List[int] = key([100, 100, 20], length=3, minimum=1, help="voxel counts along x, y, z")
    voxel_str_p: List[float] = key([-50.0, -50.0, -15.0], length=3,
                                   help="centre of the first voxel in the rig frame, metres")
    voxel_pre_dim: List[int] = key([64], minimum=1, help="output width of the voxel 1x1 conv")
    proj_d_bins: int = key(50, minimum=1, help="depth samples per ray when projecting the volume to views")
    proj_d_str: float = key(2.0, minimum=0.0, help="first depth sample, metres")
    proj_d_end: float = key(50.0, minimum=0.0, help="last depth sample, metres")
    reference_max_two_overlap: bool = key(
        False, help="reference behaviour: zero voxels seen by three or more cameras and use the "
                    "hard-wired two overlap groups of the six-camera order")
    # multi-mono-sf (spec multi-mono-sf §2, §10)
    sequence_length: int = key(4, minimum=2, help="scene flow: frames per chunk; samples hold sequence_length + 1 frames")
    search_range: int = key(4, minimum=1, help="scene flow: correlation displacement radius (4 -> 9x9 = 81 channels)")
    output_level: int = key(3, minimum=0, maximum=4, help="scene flow: finest decoder level (3 -> 1/4 resolution)")
    max_disparity: float = key(0.3, minimum=0.0, help="scene flow: disparity = sigmoid * max_disparity (fraction of the width)")
    conv_padding_mode: str = key("zeros", choices=("zeros", "reflect", "replicate", "circular"))
    calculate_disparity_scale: bool = key(False, help="scene flow: stereo least-squares disparity scale for in-the-wild data")
    reference_unscaled_state_flow: bool = key(
        False, help="reference behaviour: the flow that splats the ConvLSTM state is resized to a level but not rescaled")
    reference_shared_cell_state: bool = key(
        False, help="reference behaviour: the forward and backward ConvLSTM share one cell state")
    reference_frozen_validity_gate: bool = key(
        False, help="reference behaviour: the state validity gate is thresholded and never learns")
    mode: str = key("train", derived=True, help="train or eval, from the entry point")


@dataclass
class DataConfig:
    data_path: str = key("./input_data/DDAD/ddad_train_val/ddad.json", path="any",
                         help="dataset root (or the DGP dataset json for DDAD)")
    log_dir: str = key("./results/", help="outputs go to <log_dir>/<config name>/")
    dataset: str = key("ddad", choices=DATASETS)
    back_context: int = key(1, minimum=0, help="frames before the target frame")
    forward_context: int = key(1, minimum=0, help="frames after the target frame")
    frame_ids: Optional[List[int]] = key(
        None, help="frame offsets in sample order, 0 first (default [0, -1..-back, 1..forward]); "
                   "the reference spells it training.frame_ids, which is accepted")
    depth_type: str = key("lidar", choices=("lidar", "none"))
    cameras: List[str] = key(["camera_01", "camera_05", "camera_06", "camera_07", "camera_08", "camera_09"],
                             help="camera names in rig order (index 0 is the reference camera)")
    train_requirements: Union[str, List[str]] = key(
        "(gt_pose, mask)", help=f"what training samples carry, from {DATA_REQUIREMENTS}")
    val_requirements: Union[str, List[str]] = key("(gt_pose, gt_depth, mask)")
    mask_path: Optional[str] = key(None, path="dir", help="self-occlusion mask sets; none: all pixels valid")
    train_split: Optional[str] = key(None, path="file", help="split file for training samples")
    val_split: Optional[str] = key(None, path="file", help="split file for validation samples")
    test_split: Optional[str] = key(None, path="file", help="split file for evaluation samples")
    nusc_version: str = key("v1.0-trainval", help="nuScenes table version")
    intrinsics_path: Optional[str] = key(None, path="file", help="custom data: 3x3 intrinsics (pixels or normalised)")
    assumed_focal_px: float = key(700.0, minimum=0.0, help="custom data / DAVIS: focal length in pixels at the "
                                                          "original resolution when no intrinsics are given")
    assumed_hfov_deg: Optional[float] = key(None, minimum=0.0, maximum=180.0,
                                            help="custom data: assumed horizontal field of view in degrees "
                                                 "(instead of assumed_focal_px)")
    intrinsics_convention: str = key(
        "half_pixel", choices=INTRINSICS_CONVENTIONS,
        help="how intrinsics follow a resize or flip: half_pixel is exact for pixel-centre images; "
             "reference multiplies rows and flips cx to W - cx as both reference codes do")
    rel_cam_list: Optional[List[List[int]]] = key(
        None, help="neighbouring cameras of each camera (default: the reference table for six cameras, "
                   "the other camera for a pair; otherwise derived from calibration by the model)")
    kitti2015_train_split: str = key("train", choices=("train", "full"),
                                     help="KITTI 2015 scenes that training (kitti_2015, kitti_finetune) reads: train = "
                                          "multi-mono-sf's 160 (the other 40 validate), full = all 200 (fine-tuning stage 2)")
    cache_dir: Optional[str] = key(
        None, help="ddad / nuscenes: folder of an on-disk cache of the decoded frames resized to training.height "
                   "x width (uint8, about H*W*3 bytes a frame), filled as frames are first read and used from "
                   "then on: later epochs decode nothing. Entries are keyed by the image's path, size and "
                   "modification time, the size and the decoding method, so an entry is never used for a "
                   "changed image; created on use, safe to delete. null: no cache")
    color_aug_on_device: bool = key(
        True, help="ddad / nuscenes training: the loader sends each sample's colour-jitter draws "
                   "(training.color_jitter; the same draws, seeded per sample and epoch) instead of image_aug, "
                   "and the trainer makes image_aug on the training device after moving the batch there; "
                   "false: image_aug is made in the loader workers")
    synthetic: bool = key(False, help="render the synthetic world into data_path on first use "
                                      "(the embedded default: nothing to download)")
    synthetic_scenes: int = key(2, minimum=1, help="synthetic world: scenes (drives) to render")
    synthetic_frames: int = key(20, minimum=3, help="synthetic world: frames per scene")
    synthetic_hw: Optional[List[int]] = key(None, length=2, minimum=1,
                                            help="synthetic world: rendered [height, width]; default: the preset's native size")
    synthetic_seed: int = key(0, minimum=0)
    synthetic_root: str = key("", derived=True, help="folder the synthetic world is written to: data_path, "
                                                       "or its folder when data_path names a dataset json")
    log_path: str = key("", derived=True, help="<log_dir>/<config name>")
    save_weights_root: str = key("", derived=True, help="<log_path>/models")
    load_weights_dir: str = key("", derived=True, help="--weight_path, or <log_path>/models/<load.weights>")
    num_cams: int = key(0, derived=True)
    train_requirement_set: List[str] = key([], derived=True)
    val_requirement_set: List[str] = key([], derived=True)


@dataclass
class TrainingConfig:
    height: int = key(384, minimum=1)
    width: int = key(640, minimum=1)
    scales: List[int] = key([0], minimum=0, help="loss scales (0 = full resolution)")
    batch_size: int = key(2, minimum=1, help="per process")
    num_workers: int = key(8, minimum=0)
    learning_rate: float = key(1e-4, minimum=0.0)
    weight_decay: float = key(0.0, minimum=0.0)
    num_epochs: int = key(20, minimum=1)
    max_steps: Optional[int] = key(None, minimum=1, help="step budget; stops early when reached")
    scheduler: str = key("step", choices=SCHEDULERS, help="step: StepLR; multistep: MultiStepLR")
    scheduler_step_size: int = key(15, minimum=1, help="StepLR period in epochs")
    scheduler_gamma: float = key(0.1, minimum=0.0)
    scheduler_milestones: List[int] = key([], minimum=0, help="MultiStepLR milestones in epochs")
    min_depth: float = key(1.5, minimum=0.0)
    max_depth: float = key(200.0, minimum=0.0)
    spatio: bool = key(True, help="spatial loss between neighbouring cameras")
    spatio_temporal: bool = key(True, help="spatio-temporal loss between neighbouring cameras")
    intensity_align: bool = key(True)
    focal_length_scale: float = key(300.0, minimum=0.0, help="depth *= fx / focal_length_scale")
    aug_depth: bool = key(False, help="novel-view depth synthesis branch")
    aug_angle: List[float] = key([15.0, 15.0, 40.0], length=3, minimum=0.0,
                                 help="full range of the random view rotation, degrees (roll, pitch, yaw)")
    reference_aug_angle_radians: bool = key(
        False, help="reference behaviour: use aug_angle without degree-to-radian conversion")
    syn_visualize: bool = key(False)
    color_jitter: List[float] = key([0.2, 0.2, 0.2, 0.05], length=4, minimum=0.0,
                                    help="brightness, contrast, saturation, hue")
    photometric_prob: float = key(0.5, minimum=0.0, maximum=1.0, help="scene flow: photometric augmentation probability")
    crop_scale_range: List[float] = key([0.93, 1.0], length=2, minimum=0.0, help="scene flow: random scale of the crop")
    finetuning: bool = key(False, help="scene flow: semi-supervised fine-tuning on KITTI 2015")
    detach_disp_epochs: int = key(2, minimum=0, help="scene flow: detach disparity in the scene flow loss up to this epoch")
    seed: int = key(42, minimum=0)
    amp: str = key("off", choices=AMP_MODES, help="mixed precision")
    grad_clip: float = key(0.0, minimum=0.0, help="max gradient norm; 0 disables clipping")
    channels_last: bool = key(False)
    activation_checkpointing: bool = key(
        False, help="surround models: recompute the activations of the encoders, the fusion depth decoder and "
                    "the photometric loss terms in the backward pass instead of keeping them; less memory, "
                    "more time per step, the same results (see the README's performance section)")
    compile: bool = key(False, help="torch.compile the networks")
    max_nonfinite_steps: int = key(10, minimum=1, help="stop after this many consecutive non-finite losses")
    freeze_bn: bool = key(False, help="keep every BatchNorm layer in eval mode while training: the running "
                                      "statistics (e.g. ImageNet's) normalise and are not updated; the affine "
                                      "weights still train. Makes the step independent of how the batch is "
                                      "split over processes (no SyncBatchNorm on the CPU)")


@dataclass
class LossConfig:
    disparity_smoothness: float = key(0.001, minimum=0.0)
    spatio_coeff: float = key(0.03, minimum=0.0)
    spatio_tempo_coeff: float = key(0.1, minimum=0.0)
    pose_loss_coeff: float = key(0.0, minimum=0.0, help="FSM pose consistency (fsm pose model only)")
    depth_con_coeff: float = key(0.03, minimum=0.0, help="depth synthesis consistency")
    depth_sm_coeff: float = key(0.05, minimum=0.0, help="depth synthesis smoothness")
    ssim_weight: float = key(0.85, minimum=0.0, maximum=1.0, help="photometric error = w*SSIM + (1-w)*L1")
    reference_overlap_mask_sum: bool = key(
        False, help="reference behaviour: sum neighbour warp masks (values up to 2) instead of their union")
    # multi-mono-sf (spec multi-mono-sf §3)
    scale_weights: List[float] = key([4.0, 2.0, 1.0, 1.0], minimum=0.0, help="scene flow: weight per output scale")
    sf_disp_smooth_coeff: float = key(0.1, minimum=0.0)
    sf_pts_coeff: float = key(0.2, minimum=0.0)
    sf_smooth_coeff: float = key(1000.0, minimum=0.0)
    sf_edge_weight: float = key(150.0, minimum=0.0)


@dataclass
class EvalConfig:
    eval_batch_size: int = key(4, minimum=1)
    eval_num_workers: int = key(8, minimum=0)
    eval_min_depth: float = key(0.0, minimum=0.0)
    eval_max_depth: float = key(200.0, minimum=0.0)
    eval_visualize: bool = key(False)
    syn_visualize: bool = key(False)
    syn_idx: Optional[int] = key(None, minimum=0, help="sample of the evaluation split for the novel-view "
                                                        "synthesis sweep (default 0)")
    syn_stride: int = key(1, minimum=1, help="render every syn_stride-th of the sweep's 767 frames")
    scale_modes: List[str] = key(["metric", "median"], choices=SCALE_MODES)
    crop: Optional[str] = key(None, choices=("garg", "eigen"), help="evaluation crop (KITTI)")
    flip_post_process: bool = key(True, help="scene flow: average with the flipped pass")
    save_out: bool = key(False, help="scene flow: write KITTI submission PNGs")
    kitti_split: str = key("full", choices=("full", "train", "val", "test"),
                           help="KITTI 2015 scenes of the eval split: full = the 200 training scenes (with "
                                "ground truth), train / val = multi-mono-sf's 160 / 40 of them, test = the "
                                "200 testing scenes (no ground truth: for --save_out / --save_vis)")
    save_vis: bool = key(False)


@dataclass
class DdpConfig:
    ddp_enable: bool = key(False)
    world_size: int = key(1, minimum=1, help="processes on this machine")
    gpus: List[int] = key([0], minimum=0, help="GPU index of each rank")
    backend: str = key("auto", choices=DDP_BACKENDS, help="auto: nccl on GPUs, gloo on the CPU")
    master_addr: Optional[str] = key(None, help="default: $MASTER_ADDR, else localhost")
    master_port: Optional[int] = key(None, minimum=1, maximum=65535, help="default: $MASTER_PORT, else a free port")
    sync_bn: bool = key(True)


@dataclass
class LoadConfig:
    pretrain: bool = key(False, help="resume from data.load_weights_dir")
    weights: str = key("weights_19")
    models_to_load: List[str] = key(["depth_net"])


@dataclass
class LoggingConfig:
    early_phase: int = key(2000, minimum=0)
    log_frequency: int = key(100, minimum=1)
    late_log_frequency: int = key(1000, minimum=1)
    save_frequency: int = key(1, minimum=1, help="save a checkpoint every this many epochs")
    save_step_frequency: int = key(0, minimum=0, help="also save every this many steps; 0 disables")
    tensorboard: bool = key(True)


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "loss": LossConfig,
    "eval": EvalConfig,
    "ddp": DdpConfig,
    "load": LoadConfig,
    "logging": LoggingConfig,
}

# Keys the reference keeps in another section: (section, key) as written -> canonical location.
ALIASES = {
    ("training", "frame_ids"): ("data", "frame_ids"),
}
