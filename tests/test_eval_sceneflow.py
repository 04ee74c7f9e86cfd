"""Scene flow evaluation (trainer/evaluate_sceneflow.py) with injected models: an oracle on the
synthetic KITTI 2015 world scores zero outliers, a perturbed one the outliers computed here from the
ground-truth files; --save_out writes submission PNGs that decode back to the predictions at the
original resolution; --save_vis pictures; the DAVIS / image-folder path writes point clouds whose
points and colours are checked against depth * K^-1 (u, v, 1) and the frames; the alternating
fine-tuning loader of trainer/loop.py alternates, covers KITTI 2015 once per epoch and resumes."""

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import eval as eval_entry
from dataset.build import AlternatingParts, build_dataset
from dataset.synthetic import get_rig, render_sequence
from dataset.synthetic.writers import ensure_synthetic_dataset
from models.base import Algorithm, Predictions
from trainer.evaluate_sceneflow import collate_ragged, evaluate_sceneflow, resize_map
from trainer.loop import ResumableAlternatingSampler, Trainer
from utils.config import load_config
from utils.kitti_io import read_disparity_png, read_flow_png
from utils.ply import write_ply

REPO = Path(__file__).resolve().parents[1]
KITTI_CONFIG = str(REPO / "configs" / "synthetic" / "kitti2015_eval.yaml")
DAVIS_CONFIG = str(REPO / "configs" / "synthetic" / "davis_eval.yaml")
HW = (40, 128)                        # rendered (original) KITTI 2015 size of the tiny world
SCENES = 2


def light_render(preset, num_frames, image_hw=None, seed=0, scene_index=0):
    """The KITTI rig with a sparse lidar (unused here) and one ray per pixel: a few seconds a scene."""
    rig = replace(get_rig(preset, image_hw), lidar_rings=4, lidar_azimuth_samples=64)
    return render_sequence(rig, num_frames, seed=seed, scene_index=scene_index, supersample=1, num_threads=1)


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sceneflow_eval") / "kitti_2015"
    ensure_synthetic_dataset("kitti_2015", str(root), scenes=SCENES, frames=2, height=HW[0], width=HW[1], seed=0,
                             render_fn=light_render)
    return root


def kitti_cfg(root, log_dir, *extra, input_hw=HW):
    return load_config(KITTI_CONFIG, [f"data.data_path={root}", "data.synthetic=false", "data.frame_ids=[0, 1]",
                                      f"training.height={input_hw[0]}", f"training.width={input_hw[1]}",
                                      f"data.log_dir={log_dir}", "eval.eval_num_workers=0", *extra], mode="eval")


def gt_files(root, scene):
    base = Path(root) / "data_scene_flow" / "training"
    d0, v0 = read_disparity_png(base / "disp_occ_0" / f"{scene}_10.png")
    d1, v1 = read_disparity_png(base / "disp_occ_1" / f"{scene}_10.png")
    f, vf = read_flow_png(base / "flow_occ" / f"{scene}_10.png")
    return d0, v0, d1, v1, f, vf


def five(x):
    """[B, C, H, W] -> the Predictions layout [B, N=1, C, H, W]."""
    return x[:, None]


class OracleSceneFlow(Algorithm):
    """Predicts the KITTI 2015 ground truth of the batch (at the input resolution = the original
    one), optionally perturbed: + disp_offset px on the left half of disp_0, + flow_offset px."""

    def __init__(self, cfg, disp_offset=0.0, flow_offset=(0.0, 0.0)):
        super().__init__(cfg)
        self.anchor = nn.Parameter(torch.zeros(()))      # gives the model a device
        self.disp_offset, self.flow_offset = disp_offset, flow_offset

    def forward(self, batch):
        return {}

    def predict(self, batch, outputs):
        disp0, disp1 = batch["kitti2015_disp0"].clone(), batch["kitti2015_disp1"].clone()
        flow = batch["kitti2015_flow"].clone()
        assert disp0.shape[-2:] == batch["image"].shape[-2:], "the oracle runs at the original resolution"
        w = disp0.shape[-1]
        disp0[..., : w // 2] += self.disp_offset
        flow += torch.tensor(self.flow_offset).view(1, 2, 1, 1)
        fx = batch["K"][:, 0, 0, 0].view(-1, 1, 1, 1)
        depth = torch.where(disp0 > 0, fx * 0.54 / disp0.clamp(min=1e-6), torch.full_like(disp0, 80.0))
        return Predictions(depth=five(depth), scene_flow={"fwd": five(torch.zeros_like(flow[:, :1]).repeat(1, 3, 1, 1))},
                           extras={"disparity": five(disp0), "disparity_next": five(disp1), "optical_flow": five(flow)})


class RampSceneFlow(Algorithm):
    """Smooth predictions at the input resolution with a known value at the original resolution:
    disparity a + b * u, disp_1 a constant, flow a constant, scene flow a constant."""
    A, B, C, FLOW, SF = 5.0, 0.25, 7.5, (2.0, -1.5), (0.1, -0.2, 0.8)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        return {}

    def predict(self, batch, outputs):
        b = batch["image"].shape[0]
        h, w = batch["image"].shape[-2:]
        u = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(b, 1, h, w)
        disp = self.A + self.B * u
        ones = torch.ones(b, 1, h, w)
        flow = torch.cat([ones * self.FLOW[0], ones * self.FLOW[1]], 1)
        sf = torch.cat([ones * s for s in self.SF], 1)
        return Predictions(depth=five(100.0 / disp), scene_flow={"fwd": five(sf)},
                           extras={"disparity": five(disp), "disparity_next": five(ones * self.C),
                                   "optical_flow": five(flow)})


# ----------------------------------------------------------------------------------------------
# KITTI 2015 figures


def test_oracle_scores_zero_outliers_and_writes_metrics_json(kitti_root, tmp_path, capsys):
    cfg = kitti_cfg(kitti_root, tmp_path, "eval.eval_batch_size=2")
    result = evaluate_sceneflow(cfg, OracleSceneFlow(cfg), build_dataset(cfg, "eval"), progress=False)
    m = result["metrics"]
    assert m["num_images"] == SCENES
    for key in ("d1_all", "d2_all", "fl_all", "sf_all", "d1_bg", "sf_fg"):
        assert m[key] == 0.0, key
    assert m["epe_all"] == pytest.approx(0.0, abs=1e-6)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert result["totals"]["sf_all_pixels"] > 0.5 * SCENES * HW[0] * HW[1]
    written = json.loads((Path(cfg.data.log_path) / "eval" / "metrics.json").read_text())
    assert written["metrics"]["sf_all"] == 0.0 and written["num_samples"] == SCENES
    out = capsys.readouterr().out
    assert "D1" in out and "SF" in out and "abs_rel" in out


def test_perturbed_model_scores_the_outliers_of_its_perturbation(kitti_root, tmp_path):
    cfg = kitti_cfg(kitti_root, tmp_path)
    model = OracleSceneFlow(cfg, disp_offset=10.0, flow_offset=(4.0, 0.0))
    m = evaluate_sceneflow(cfg, model, build_dataset(cfg, "eval"), progress=False)["metrics"]
    counts = np.zeros((3, 2))                                  # (D1, Fl, SF) x (outliers, pixels)
    for scene in (f"{s:06d}" for s in range(SCENES)):
        d0, v0, _, v1, f, vf = gt_files(kitti_root, scene)
        left = np.arange(HW[1])[None, :] < HW[1] // 2
        d1_out = v0 & left & (10.0 > 0.05 * d0)                # error 10 px > 3 px and > 5 % of the GT
        fl_out = vf & (4.0 > 0.05 * np.linalg.norm(f, axis=-1))
        all_ok = v0 & v1 & vf
        counts += [[d1_out.sum(), v0.sum()], [fl_out.sum(), vf.sum()], [((d1_out | fl_out) & all_ok).sum(), all_ok.sum()]]
    expected = 100.0 * counts[:, 0] / counts[:, 1]
    assert 5.0 < expected[0] < 95.0 and 5.0 < expected[1] and expected[2] > 5.0     # the test has teeth
    assert m["d1_all"] == pytest.approx(expected[0], rel=1e-9)
    assert m["fl_all"] == pytest.approx(expected[1], rel=1e-9)
    assert m["sf_all"] == pytest.approx(expected[2], rel=1e-9)
    assert m["d2_all"] == 0.0
    assert m["epe_all"] == pytest.approx(4.0, rel=1e-5)


class CroppedGroundTruth(Dataset):
    """The KITTI 2015 samples with the ground truth of odd samples cropped by 16 columns: a batch
    of images of one input size whose original sizes differ (as KITTI's recording dates do)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        sample = self.base[i]
        if i % 2:
            sample = {k: v[..., :-16] if k.startswith("kitti2015_") and k != "kitti2015_K" else v for k, v in sample.items()}
        return sample


def test_batch_of_samples_with_different_original_sizes(kitti_root, tmp_path):
    cfg = kitti_cfg(kitti_root, tmp_path, "eval.eval_batch_size=2", input_hw=(32, 96))

    class Constant(RampSceneFlow):                             # far off everywhere: every valid pixel is an outlier
        A, B, C, FLOW = 150.0, 0.0, 150.0, (400.0, 0.0)
    result = evaluate_sceneflow(cfg, Constant(cfg), CroppedGroundTruth(build_dataset(cfg, "eval")), save_out=True,
                                progress=False)
    valid = [gt_files(kitti_root, f"{s:06d}")[1][:, : HW[1] - 16 * (s % 2)].sum() for s in range(SCENES)]
    assert result["totals"]["d1_all_pixels"] == sum(valid)
    assert result["metrics"]["d1_all"] == 100.0 and result["metrics"]["fl_all"] == 100.0
    for s in range(SCENES):
        disp, _ = read_disparity_png(Path(cfg.data.log_path) / "submission" / "disp_0" / f"{s:06d}_10.png")
        assert disp.shape == (HW[0], HW[1] - 16 * (s % 2))
        np.testing.assert_allclose(disp, 150.0 * disp.shape[1] / 96, atol=0.5 / 256)


# ----------------------------------------------------------------------------------------------
# Submission files and pictures


def test_save_out_and_save_vis_on_the_testing_scenes_at_the_original_resolution(kitti_root, tmp_path):
    input_hw = (32, 96)
    cfg = kitti_cfg(kitti_root, tmp_path, "eval.kitti_split=test", "data.intrinsics_convention=reference",
                    input_hw=input_hw)
    dataset = build_dataset(cfg, "eval")
    assert dataset.split == "test" and not dataset.load_gt
    result = evaluate_sceneflow(cfg, RampSceneFlow(cfg), dataset, save_out=True, save_vis=True, progress=False)
    assert result["num_samples"] == SCENES and "metrics" not in result
    root = Path(cfg.data.log_path)
    sx, sy = HW[1] / input_hw[1], HW[0] / input_hw[0]
    # align_corners=True maps original pixel u onto input position u (W_in - 1) / (W - 1): a ramp stays exact.
    u = np.arange(HW[1])[None, :] * (input_hw[1] - 1) / (HW[1] - 1)
    want_disp = np.broadcast_to((RampSceneFlow.A + RampSceneFlow.B * u) * sx, HW)
    for scene in (f"{s:06d}" for s in range(SCENES)):
        disp0, valid0 = read_disparity_png(root / "submission" / "disp_0" / f"{scene}_10.png")
        disp1, valid1 = read_disparity_png(root / "submission" / "disp_1" / f"{scene}_10.png")
        flow, valid_f = read_flow_png(root / "submission" / "flow" / f"{scene}_10.png")
        assert disp0.shape == disp1.shape == flow.shape[:2] == HW
        assert valid0.all() and valid1.all() and valid_f.all()
        np.testing.assert_allclose(disp0, want_disp, atol=0.5 / 256 + 1e-4)
        np.testing.assert_allclose(disp1, RampSceneFlow.C * sx, atol=0.5 / 256 + 1e-4)
        np.testing.assert_allclose(flow[..., 0], RampSceneFlow.FLOW[0] * sx, atol=0.5 / 64 + 1e-4)
        np.testing.assert_allclose(flow[..., 1], RampSceneFlow.FLOW[1] * sy, atol=0.5 / 64 + 1e-4)
        for kind in ("disp_0", "disp_1", "flow", "sceneflow"):
            picture = cv2.imread(str(root / "vis_results" / kind / f"{scene}_10.png"), cv2.IMREAD_UNCHANGED)
            assert picture is not None and picture.shape == (*HW, 3) and picture.dtype == np.uint8, kind
            assert picture.std() > 0 or kind in ("disp_1", "flow", "sceneflow")   # constant maps give flat pictures
    assert sorted(p.name for p in (root / "submission" / "flow").iterdir()) == [f"{s:06d}_10.png" for s in range(SCENES)]


def test_testing_scenes_without_output_flags_is_a_clear_error(kitti_root, tmp_path):
    cfg = kitti_cfg(kitti_root, tmp_path, "eval.kitti_split=test")
    with pytest.raises(ValueError, match="--save_out"):
        evaluate_sceneflow(cfg, RampSceneFlow(cfg), build_dataset(cfg, "eval"), progress=False)


def test_missing_prediction_names_the_key(kitti_root, tmp_path):
    cfg = kitti_cfg(kitti_root, tmp_path)

    class NoFlow(OracleSceneFlow):
        def predict(self, batch, outputs):
            p = super().predict(batch, outputs)
            del p.extras["optical_flow"]
            return p
    with pytest.raises(KeyError, match="optical_flow"):
        evaluate_sceneflow(cfg, NoFlow(cfg), build_dataset(cfg, "eval"), progress=False)


@pytest.mark.parametrize("convention", ["half_pixel", "reference"])
def test_resize_rescales_disparity_and_flow_by_the_size_ratio(convention):
    x = torch.full((2, 1, 32, 96), 3.0)
    out = resize_map(x, (40, 128), convention, "disparity")
    assert out.shape == (2, 1, 40, 128) and torch.allclose(out, torch.full_like(out, 3.0 * 128 / 96))
    flow = torch.cat([torch.full((1, 1, 32, 96), 2.0), torch.full((1, 1, 32, 96), -1.0)], 1)
    out = resize_map(flow, (40, 128), convention, "flow")
    assert torch.allclose(out[:, 0], torch.full((1, 40, 128), 2.0 * 128 / 96))
    assert torch.allclose(out[:, 1], torch.full((1, 40, 128), -1.0 * 40 / 32))
    depth = resize_map(torch.full((1, 1, 32, 96), 7.0), (40, 128), convention, "other")
    assert torch.allclose(depth, torch.full_like(depth, 7.0))


def test_collate_keeps_ground_truth_of_different_sizes_as_a_list():
    a = {"image": torch.zeros(3, 4, 5), "gt": torch.zeros(1, 6, 8), "meta": {"scene": "000001"}}
    b = {"image": torch.ones(3, 4, 5), "gt": torch.zeros(1, 6, 9), "meta": {"scene": "000002"}}
    batch = collate_ragged([a, b])
    assert batch["image"].shape == (2, 3, 4, 5)
    assert isinstance(batch["gt"], list) and [g.shape[-1] for g in batch["gt"]] == [8, 9]
    assert batch["meta"]["scene"] == ["000001", "000002"]


# ----------------------------------------------------------------------------------------------
# DAVIS / folders of frames: pictures and point clouds


class RampDepth(Algorithm):
    """Depth 2 + 0.1 u + 0.05 v + sample index, one pixel without depth (0), a scene flow."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        return {}

    def predict(self, batch, outputs):
        b, h, w = batch["image"].shape[0], *batch["image"].shape[-2:]
        v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        depth = 2.0 + 0.1 * u + 0.05 * v + batch["meta"]["index"].float().view(b, 1, 1, 1)
        depth[..., 0, 0] = 0.0
        sf = torch.stack([0.01 * u, -0.02 * v, torch.ones_like(u)]).expand(b, 3, h, w)
        return Predictions(depth=five(depth), scene_flow={"fwd": five(sf)})


def read_binary_ply(path):
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    props = [line.split()[1:] for line in header if line.startswith("property")]
    assert props == [["float", "x"], ["float", "y"], ["float", "z"], ["uchar", "red"], ["uchar", "green"], ["uchar", "blue"]]
    table = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    assert len(table) == count
    return np.stack([table["x"], table["y"], table["z"]], 1), np.stack([table["r"], table["g"], table["b"]], 1)


def test_image_folders_give_pictures_and_point_clouds_per_sequence(tmp_path):
    hw, frames = (12, 20), 4
    rng = np.random.default_rng(0)
    for seq in ("seq_a", "seq_b"):
        (tmp_path / "frames" / seq).mkdir(parents=True)
        for i in range(frames):                              # lossless PNGs: the colours must come back exactly
            cv2.imwrite(str(tmp_path / "frames" / seq / f"{i:03d}.png"), rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    cfg = load_config(DAVIS_CONFIG, [f"data.data_path={tmp_path / 'frames'}", "data.synthetic=false", "data.test_split=null",
                                     "data.dataset=custom", "data.frame_ids=[-1, 0, 1]", f"training.height={hw[0]}",
                                     f"training.width={hw[1]}", f"data.log_dir={tmp_path / 'results'}",
                                     "eval.eval_num_workers=0", "eval.eval_batch_size=3"], mode="eval")
    dataset = build_dataset(cfg, "eval")
    result = evaluate_sceneflow(cfg, RampDepth(cfg), dataset, progress=False)
    assert result["sequences"] == {"seq_a": 2, "seq_b": 2}
    vis = Path(cfg.data.log_path) / "vis_results"
    for seq in ("seq_a", "seq_b"):
        assert sorted(p.name for p in (vis / seq).iterdir()) == sorted(
            f"{n}{suffix}" for n in ("001", "002") for suffix in ("_depth.png", "_sceneflow.png", ".ply"))
    for index in range(len(dataset)):
        sample = dataset[index]
        seq, name = sample["meta"]["scene"], sample["meta"]["name"]
        points, colours = read_binary_ply(vis / seq / f"{name}.ply")
        K = sample["K"][0].double().numpy()
        v, u = np.meshgrid(np.arange(hw[0]), np.arange(hw[1]), indexing="ij")
        depth = 2.0 + 0.1 * u + 0.05 * v + index
        rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
        expected = (rays * depth.ravel()).T[1:]                   # pixel (0, 0) has no depth: left out
        np.testing.assert_allclose(points, expected, rtol=1e-5, atol=1e-5)
        image = cv2.cvtColor(cv2.imread(str(tmp_path / "frames" / seq / f"{name}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(colours, image.reshape(-1, 3)[1:])
        for kind in ("depth", "sceneflow"):
            picture = cv2.imread(str(vis / seq / f"{name}_{kind}.png"))
            assert picture.shape == (*hw, 3) and picture.std() > 0


def test_ply_writer_ascii_matches_binary(tmp_path):
    pts = np.array([[0.5, -1.25, 3.0], [1e-3, 2.0, 80.0]], np.float32)
    rgb = np.array([[255, 0, 10], [1, 2, 3]], np.uint8)
    write_ply(tmp_path / "a.ply", pts, rgb, binary=False)
    text = (tmp_path / "a.ply").read_text().splitlines()
    body = text[text.index("end_header") + 1:]
    assert "format ascii 1.0" in text and "element vertex 2" in text
    values = np.array([line.split() for line in body], float)
    np.testing.assert_array_equal(values[:, :3].astype(np.float32), pts)        # 9 digits: float32 exactly
    np.testing.assert_array_equal(values[:, 3:], rgb)
    write_ply(tmp_path / "b.ply", pts, rgb)
    got_pts, got_rgb = read_binary_ply(tmp_path / "b.ply")
    np.testing.assert_array_equal(got_pts, pts)
    np.testing.assert_array_equal(got_rgb, rgb)
    with pytest.raises(ValueError, match="not finite"):
        write_ply(tmp_path / "c.ply", np.array([[np.nan, 0, 1]]))


# ----------------------------------------------------------------------------------------------
# Fine-tuning loader: alternating parts, resume


class Part(Dataset):
    """A dataset of `n` samples carrying `key` (the two parts' samples have different keys, like
    KITTI 2015 with ground truth and KITTI raw)."""

    def __init__(self, n, key):
        self.n, self.key, self.epoch = n, key, None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {self.key: torch.tensor([i]), "image": torch.zeros(2, 3)}

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_finetune_loader_alternates_covers_kitti_2015_and_resumes(monkeypatch, tmp_path):
    first, second = Part(5, "kitti2015_disp0"), Part(7, "raw_only")
    combined = AlternatingParts([first, second])
    assert combined.parts == (5, 7)
    combined.set_epoch(3)
    assert first.epoch == second.epoch == 3
    monkeypatch.setattr("dataset.build.build_dataset", lambda cfg, split: combined)
    cfg = load_config(KITTI_CONFIG, ["training.batch_size=2", "training.num_workers=0", "training.seed=5",
                                     f"data.log_dir={tmp_path}", "data.synthetic=false"], mode="train", check_paths=False)
    fake = type("T", (), {})()
    fake.cfg, fake.device = cfg, torch.device("cpu")
    fake.launch = type("L", (), {"world_size": 1, "rank": 0})()
    dataset, sampler, loader = Trainer._train_loader(fake)
    assert isinstance(sampler, ResumableAlternatingSampler) and dataset is combined
    assert sampler.num_samples // 2 == 6                        # 2 x ceil(5 / 2) steps per epoch

    def epoch(e, start=0):
        sampler.set_epoch(e)
        sampler.set_start(start)
        return [(sorted(b)[0], b[sorted(b)[0]].view(-1).tolist()) for b in
                ({k: v for k, v in batch.items() if k != "image"} for batch in loader)]

    e0 = epoch(0)
    assert [key for key, _ in e0] == ["kitti2015_disp0", "raw_only"] * 3
    assert all(len(ids) == 2 for _, ids in e0)
    seen = [i for key, ids in e0 if key == "kitti2015_disp0" for i in ids]
    assert set(seen) == set(range(5))                          # every KITTI 2015 sample in the epoch
    e1 = epoch(1)
    assert e1 != e0                                            # reshuffled per epoch
    resumed = epoch(1, start=3 * 2)                            # 3 batches of epoch 1 were consumed
    assert resumed == e1[3:] and len(loader) == 3
    assert epoch(1) == e1                                      # deterministic given (seed, epoch)


def test_configs_load_and_eval_cli_passes_save_out(monkeypatch, tmp_path):
    for name, split in (("kitti/eval_selfsup_train.yaml", "full"), ("kitti/eval_ft_test.yaml", "test"),
                        ("davis/eval_davis.yaml", None), ("synthetic/kitti2015_eval.yaml", "full"),
                        ("synthetic/davis_eval.yaml", None)):
        cfg = load_config(str(REPO / "configs" / name), [], mode="eval", check_paths=False)
        assert cfg.model.type == "mono_sceneflow" and cfg.data.frame_ids == [-3, -2, -1, 0, 1], name
        assert list(cfg.load.models_to_load) == [], name
        if split:
            assert cfg.eval.kitti_split == split, name
    assert load_config(str(REPO / "configs" / "kitti" / "eval_ft_test.yaml"), [], mode="eval", check_paths=False).eval.save_out
    calls = []
    monkeypatch.setattr("trainer.evaluate.evaluate", lambda cfg, **kw: calls.append((cfg.eval.kitti_split, kw)))
    args = ["--config_file", KITTI_CONFIG, "--weight_path", str(tmp_path), f"data.log_dir={tmp_path}", "eval.kitti_split=test"]
    assert eval_entry.main([*args, "--save_out"]) == 0 and eval_entry.main([*args, "--save_vis"]) == 0
    assert calls == [("test", {"weight_path": str(tmp_path), "save_vis": False, "save_out": True}),
                     ("test", {"weight_path": str(tmp_path), "save_vis": True, "save_out": False})]
