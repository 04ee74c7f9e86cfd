"""Config loading: defaults, overrides, derived values, and the error messages users see."""

import glob
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from utils.config import ConfigError, load_config, schema_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.relpath(p, ROOT) for p in SHIPPED])
def test_shipped_configs_load_in_both_modes(path):
    for mode in ("train", "eval"):
        cfg = load_config(path, mode=mode)
        assert cfg.name == os.path.splitext(os.path.basename(path))[0]
        # a stereo rig for KITTI, one camera for DAVIS / custom folders, six around the car otherwise
        expected = 2 if cfg.data.dataset.startswith("kitti") else 1 if cfg.data.dataset in ("davis", "custom") else 6
        assert cfg.data.num_cams == len(cfg.data.cameras) == expected
        assert 0 in cfg.data.frame_ids and len(cfg.data.frame_ids) >= 3


def test_shipped_configs_include_the_reference_set():
    names = {os.path.relpath(p, os.path.join(ROOT, "configs")) for p in SHIPPED}
    for ref in ("ddad/ddad_baseline.yaml", "ddad/ddad_baseline_ddp.yaml", "ddad/ddad_surround_fusion.yaml",
                "ddad/ddad_surround_fusion_augdepth.yaml", "ddad/ddad_surround_fusion_ddp.yaml",
                "nuscenes/nusc_baseline.yaml", "nuscenes/nusc_baseline_ddp.yaml",
                "nuscenes/nusc_surround_fusion.yaml", "nuscenes/nusc_surround_fusion_ddp.yaml"):
        assert ref in names


def test_empty_file_gives_the_complete_schema_of_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "# nothing\n"))
    assert cfg.training.batch_size == 2 and cfg.training.height == 384 and cfg.training.width == 640
    assert cfg.model.voxel_size == [100, 100, 20] and cfg.model.proj_d_bins == 50
    assert cfg.data.frame_ids == [0, -1, 1]
    assert cfg.data.rel_cam_list == [[1, 2], [0, 3], [0, 4], [1, 5], [2, 5], [3, 4]]
    assert cfg.data.log_path == os.path.join("./results/", "exp")
    assert cfg.data.save_weights_root == os.path.join("./results/", "exp", "models")
    assert cfg.data.load_weights_dir == os.path.join("./results/", "exp", "models", "weights_19")
    assert cfg.data.train_requirement_set == ["gt_pose", "mask"]
    assert cfg.data.val_requirement_set == ["gt_depth", "gt_pose", "mask"]
    # every key of the VFDepth reference schema (spec vfdepth.md §1.1) exists
    keys = set(schema_keys())
    for ref_key in ("ddp.ddp_enable", "ddp.world_size", "ddp.gpus", "model.num_layers", "model.weights_init",
                    "model.depth_model", "model.pose_model", "model.fusion_level", "model.fusion_feat_in_dim",
                    "model.use_skips", "model.voxel_unit_size", "model.voxel_size", "model.voxel_str_p",
                    "model.voxel_pre_dim", "model.proj_d_bins", "model.proj_d_str", "model.proj_d_end",
                    "data.data_path", "data.log_dir", "data.dataset", "data.back_context",
                    "data.forward_context", "data.depth_type", "data.cameras", "data.train_requirements",
                    "data.val_requirements", "training.height", "training.width", "training.scales",
                    "training.batch_size", "training.num_workers", "training.learning_rate",
                    "training.num_epochs", "training.scheduler_step_size", "training.min_depth",
                    "training.max_depth", "training.spatio", "training.spatio_temporal",
                    "training.intensity_align", "training.focal_length_scale", "training.aug_depth",
                    "training.aug_angle", "training.syn_visualize", "loss.disparity_smoothness",
                    "loss.spatio_coeff", "loss.spatio_tempo_coeff", "loss.pose_loss_coeff",
                    "loss.depth_con_coeff", "loss.depth_sm_coeff", "eval.eval_batch_size",
                    "eval.eval_num_workers", "eval.eval_min_depth", "eval.eval_max_depth",
                    "eval.eval_visualize", "eval.syn_visualize", "eval.syn_idx", "load.pretrain",
                    "load.weights", "load.models_to_load", "logging.early_phase", "logging.log_frequency",
                    "logging.late_log_frequency", "logging.save_frequency", "model.type"):
        assert ref_key in keys, ref_key


def test_reference_style_file_loads_unchanged(tmp_path):
    # Written as the reference does: training.frame_ids, 1e-4 (a string to PyYAML), `None` strings.
    path = write(tmp_path, """
        model: {depth_model: fsm, pose_model: fsm}
        training:
          learning_rate: 1e-4
          frame_ids: [0, -1, 1]
        data:
          train_requirements: "(gt_pose, mask)"
        eval:
          syn_idx: None
        """)
    cfg = load_config(path)
    assert cfg.training.learning_rate == pytest.approx(1e-4) and isinstance(cfg.training.learning_rate, float)
    assert cfg.data.frame_ids == [0, -1, 1]
    assert cfg.eval.syn_idx is None
    assert cfg.data.train_requirement_set == ["gt_pose", "mask"]


def test_command_line_overrides_are_typed_and_win(tmp_path):
    path = write(tmp_path, "training: {batch_size: 2}\n")
    cfg = load_config(path, ["training.batch_size=4", "ddp.ddp_enable=true", "data.frame_ids=[0, -2, -1, 1, 2]",
                             "training.learning_rate=2e-4", "model.weights_init=false"])
    assert cfg.training.batch_size == 4
    assert cfg.ddp.ddp_enable is True
    assert cfg.data.frame_ids == [0, -2, -1, 1, 2]
    assert (cfg.data.back_context, cfg.data.forward_context) == (2, 2)   # derived from frame_ids
    assert cfg.training.learning_rate == pytest.approx(2e-4)
    assert cfg.model.weights_init is False


def test_frame_ids_default_follows_the_contexts(tmp_path):
    cfg = load_config(write(tmp_path, "data: {back_context: 2, forward_context: 0}\n"))
    assert cfg.data.frame_ids == [0, -1, -2]


def test_eval_mode_forces_one_process_and_the_eval_batch(tmp_path):
    path = write(tmp_path, "ddp: {ddp_enable: true, world_size: 4}\neval: {eval_batch_size: 3}\n")
    cfg = load_config(path, mode="eval", weight_path="ckpt/weights_7")
    assert (cfg.ddp.ddp_enable, cfg.ddp.world_size, cfg.training.batch_size) == (False, 1, 3)
    assert cfg.data.load_weights_dir == "ckpt/weights_7"
    assert cfg.model.mode == "eval"
    assert cfg.model.weights_init is False            # the checkpoint replaces ImageNet weights: none to download
    train = load_config(path, ["eval.syn_visualize=true"])
    assert train.model.weights_init is True
    assert train.eval.syn_visualize is False          # the synthesis sweep only runs in evaluation


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs", "ddad", "ddad_surround_fusion_augdepth.yaml"),
                      ["training.batch_size=1"])
    out = tmp_path / "results" / "config.yaml"
    cfg.save(str(out))
    again = load_config(str(out))
    assert again.to_dict(derived=False) == cfg.to_dict(derived=False)
    assert not list(out.parent.glob("*.tmp*"))       # the temporary file was renamed away


# ---------------------------------------------------------------------------------------------
# Errors: name the file (and line), the dotted key, the expectation, and suggest a fix


def test_typo_in_a_section_name_suggests_the_key(tmp_path):
    path = write(tmp_path, "model:\n  num_layers: 18\ntraning:\n  batch_size: 4\n")
    message = error_of(path)
    assert f"{path}:4" in message
    assert "unknown key 'traning.batch_size'" in message
    assert "did you mean 'training.batch_size'?" in message


def test_typo_on_the_command_line_suggests_the_key(tmp_path):
    message = error_of(write(tmp_path, ""), ["traning.batch_size=4"])
    assert "command line 'traning.batch_size=4'" in message
    assert "did you mean 'training.batch_size'?" in message


def test_key_in_the_wrong_section_points_to_the_right_one(tmp_path):
    message = error_of(write(tmp_path, "training:\n  log_frequency: 10\n"))
    assert "did you mean 'logging.log_frequency'?" in message


def test_wrong_type_names_file_line_key_and_expected_type(tmp_path):
    path = write(tmp_path, "training:\n  height: 384\n  batch_size: two\n")
    message = error_of(path)
    assert f"{path}:3: training.batch_size: expected an integer >= 1, got 'two'" in message


@pytest.mark.parametrize("text, expected", [
    ("model:\n  depth_model: fusio\n", "model.depth_model: expected one of 'fusion', 'fsm', got 'fusio'; did you mean 'fusion'?"),
    ("model:\n  voxel_size: [100, 100]\n", "model.voxel_size: expected a list of 3 items, each an integer >= 1, got [100, 100] (2 items)"),
    ("training:\n  spatio: 'yes'\n", "training.spatio: expected a boolean (true/false), got 'yes'"),
    ("training:\n  amp: fp8\n", "training.amp: expected one of 'off', 'bf16', 'fp16', got 'fp8'"),
    ("training:\n  min_depth: 5\n  max_depth: 2\n", "training.min_depth (5.0) must be smaller than training.max_depth (2.0)"),
    ("data:\n  train_requirements: (gt_pose, masks)\n", "data.train_requirements: unknown requirement(s) ['masks']"),
    ("data:\n  frame_ids: [-1, 1]\n", "data.frame_ids: expected distinct offsets including 0"),
    ("data:\n  back_context: 1\n  frame_ids: [0, -2, 2]\n", "data.back_context: 1 is too small"),
    ("data:\n  rel_cam_list: [[1], [0], [0]]\n", "data.rel_cam_list: expected one list per camera (6), got 3"),
    ("data:\n  num_cams: 6\n", "'data.num_cams' is derived"),
    ("training: 5\n", "section 'training' must be a mapping of keys"),
    ("data:\n  frame_ids: [0, 1]\ntraining:\n  frame_ids: [0, -1]\n", "is also set at"),
])
def test_invalid_values_are_explained(tmp_path, text, expected):
    assert expected in error_of(write(tmp_path, text))


def test_all_problems_are_reported_together(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: x\n  heigth: 3\nmodel:\n  num_layers: 19\n")
    problems = pytest.raises(ConfigError, load_config, path).value.problems
    assert len(problems) == 3


def test_missing_config_file_is_named_with_a_suggestion(tmp_path):
    write(tmp_path, "", name="ddad_surround_fusion.yaml")
    message = error_of(str(tmp_path / "ddad_surround_fusoin.yaml"))
    assert "ddad_surround_fusoin.yaml: config file not found" in message
    assert "did you mean" in message and "ddad_surround_fusion.yaml" in message


def test_invalid_yaml_is_named(tmp_path):
    path = write(tmp_path, "training: {batch_size: 2\n")
    assert f"{path}: not valid YAML" in error_of(path)


def test_missing_paths_are_errors_only_when_a_run_starts(tmp_path):
    path = write(tmp_path, f"data:\n  data_path: {tmp_path / 'nowhere'}\n  mask_path: {tmp_path}\n")
    load_config(path)                                    # printing the config needs no data
    message = error_of(path, check_paths=True)
    assert "data.data_path: path not found" in message and "nowhere" in message
    assert "mask_path" not in message                    # that one exists
    message = error_of(path, mode="eval", weight_path=str(tmp_path / "no_ckpt"), check_paths=True)
    assert "--weight_path: checkpoint folder not found" in message
    # the synthetic world is rendered into data_path on first use: paths inside it need not exist yet
    synthetic = [f"data.data_path={tmp_path / 'syn' / 'ddad.json'}", f"data.mask_path={tmp_path / 'syn' / 'masks'}",
                 "data.synthetic=true"]
    cfg = load_config(path, synthetic, check_paths=True)
    assert cfg.data.synthetic_root == str(tmp_path / "syn")
    message = error_of(path, synthetic + [f"data.train_split={tmp_path / 'elsewhere.txt'}"], check_paths=True)
    assert "data.train_split: file not found" in message and "mask_path" not in message


# ---------------------------------------------------------------------------------------------
# Entry points


def run_entry(script, *args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_print_config_shows_the_resolved_values_with_overrides(tmp_path):
    result = run_entry("train.py", "--config_file=configs/ddad/ddad_surround_fusion.yaml", "--print_config",
                       "training.batch_size=4", "ddp.ddp_enable=true")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["training"]["batch_size"] == 4 and printed["ddp"]["ddp_enable"] is True
    result = run_entry("eval.py", "--config_file=configs/nuscenes/nusc_surround_fusion.yaml", "--print_config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["training"]["batch_size"] == printed["eval"]["eval_batch_size"] == 4
    assert printed["training"]["height"] == 352


def test_entry_point_reports_config_errors_before_touching_anything(tmp_path):
    config = write(tmp_path, f"data:\n  log_dir: {tmp_path / 'results'}\n")
    result = run_entry("train.py", f"--config_file={config}", "traning.batch_size=4", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean 'training.batch_size'?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_command_line_overrides_may_surround_the_flags(tmp_path):
    from utils.cli import config_from_command_line
    path = write(tmp_path, f"data:\n  data_path: {tmp_path}\n", name="exp.yaml")
    args, cfg = config_from_command_line("test", "eval", ["--config_file", path, "training.height=64",
                                                          "--weight_path", str(tmp_path), "training.width=96"])
    assert (cfg.training.height, cfg.training.width) == (64, 96) and args.weight_path == str(tmp_path)


def test_describe_names_the_networks_only_where_they_apply():
    from utils.cli import describe
    fusion = describe(load_config(os.path.join(ROOT, "configs", "ddad", "ddad_surround_fusion.yaml")))
    assert "model.type=surround_depth depth_model=fusion pose_model=fusion" in fusion
    flow = describe(load_config(os.path.join(ROOT, "configs", "kitti", "selfsup.yaml")))
    assert "model.type=mono_sceneflow dataset=kitti_raw" in flow and "depth_model" not in flow
