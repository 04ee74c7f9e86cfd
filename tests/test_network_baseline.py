"""Networks of the per-camera (FSM-style) baseline: ResNet encoder, depth / pose decoders, mono nets."""
import functools
import math
import os
from urllib.parse import urlparse

import pytest
import torch
import torchvision

from network import (
    Conv3x3,
    DepthDecoder,
    MonoDepthNet,
    MonoPoseNet,
    PoseDecoder,
    ResnetEncoder,
    pack_cameras,
    unpack_cameras,
)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty torch hub cache and a download function that fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    calls = []

    def fail(url, *args, **kwargs):
        calls.append(url)
        raise OSError("[Errno -3] Temporary failure in name resolution (test: no network)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return calls


def resnet_state(num_layers, seed=1):
    """A torchvision ResNet state_dict with random (non-default) values, standing in for a pretrained one."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, f"resnet{num_layers}")(weights=None)
    state = net.state_dict()
    for k, v in state.items():  # make BN statistics non-trivial too
        if v.is_floating_point():
            state[k] = v + 0.1 * torch.rand(v.shape)
    return state


# ----------------------------------------------------------------------------- encoder
@functools.lru_cache(maxsize=None)
def encoder(num_layers):
    """A randomly initialised encoder, built once per test session (ResNet-50 takes a while)."""
    return ResnetEncoder(num_layers, weights_init=False)


@pytest.mark.parametrize("num_layers, channels", [(18, [64, 64, 128, 256, 512]), (50, [64, 256, 512, 1024, 2048])])
@pytest.mark.parametrize("hw", [(96, 160), (70, 100)])
def test_encoder_feature_shapes(num_layers, channels, hw):
    enc = encoder(num_layers)
    assert enc.num_ch_enc == channels
    H, W = hw
    with torch.no_grad():
        feats = enc(torch.rand(2, 3, H, W))
    assert len(feats) == 5
    for k, (f, c) in enumerate(zip(feats, channels)):
        # every stage rounds up: level k at ceil(H / 2^(k+1)); exactly H / 2^(k+1) for 96x160 (= 3·32 x 5·32)
        assert f.shape == (2, c, math.ceil(H / 2 ** (k + 1)), math.ceil(W / 2 ** (k + 1))), (k, f.shape)
    if H % 32 == 0 and W % 32 == 0:
        assert feats[-1].shape[-2:] == (H // 32, W // 32)


def test_encoder_parameter_counts_match_torchvision_without_fc():
    for num_layers in (18, 50):
        tv = getattr(torchvision.models, f"resnet{num_layers}")(weights=None)
        expected = n_params(tv) - n_params(tv.fc)
        enc = ResnetEncoder(num_layers, weights_init=False)
        assert n_params(enc) == expected
        assert not hasattr(enc.encoder, "fc")
        assert not any(k.startswith("encoder.fc") for k in enc.state_dict())
    assert n_params(ResnetEncoder(18, False)) == 11_176_512  # the known figure, as a cross-check

    pose_enc = ResnetEncoder(18, weights_init=False, num_input_images=2)
    assert pose_enc.encoder.conv1.weight.shape == (64, 6, 7, 7)
    assert n_params(pose_enc) == 11_176_512 + 64 * 3 * 7 * 7
    with pytest.raises(ValueError, match=r"\[B, 6, H, W\]"):
        pose_enc(torch.rand(1, 3, 64, 64))


def test_encoder_state_dict_keys_follow_reference_naming():
    keys = list(ResnetEncoder(18, False).state_dict())
    assert keys[0] == "encoder.conv1.weight"
    assert "encoder.layer4.1.bn2.num_batches_tracked" in keys
    assert "encoder.layer2.0.downsample.0.weight" in keys
    # the reference's depth_net checkpoint has the same 120 ResNet-18 entries under encoder.encoder.*
    assert len(keys) == 120


def test_encoder_input_normalisation():
    enc = ResnetEncoder(18, False).eval()
    raw = ResnetEncoder(18, False, normalize_input=False).eval()
    raw.load_state_dict(enc.state_dict())
    x = torch.rand(1, 3, 64, 96, generator=seeded())
    with torch.no_grad():
        a = enc(x)
        b = raw((x - 0.45) / 0.225)
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa, fb)


def test_tiled_conv1_pair_of_identical_images_equals_single_image(tmp_path):
    path = tmp_path / "resnet18.pth"
    state = resnet_state(18)
    torch.save(state, path)
    single = ResnetEncoder(18, weights_init=str(path)).eval()
    pair = ResnetEncoder(18, weights_init=str(path), num_input_images=2).eval()
    w = state["conv1.weight"]
    torch.testing.assert_close(pair.encoder.conv1.weight, torch.cat([w, w], 1) / 2, rtol=0, atol=0)
    torch.testing.assert_close(single.encoder.conv1.weight, w, rtol=0, atol=0)
    x = torch.rand(2, 3, 64, 96, generator=seeded())
    with torch.no_grad():
        fs = single(x)
        fp = pair(torch.cat([x, x], dim=1))
    for a, b in zip(fs, fp):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # and a different second image does change the response
    with torch.no_grad():
        other = pair(torch.cat([x, torch.rand(2, 3, 64, 96, generator=seeded(5))], dim=1))
    assert (other[0] - fs[0]).abs().max() > 1e-2


# ----------------------------------------------------------------------------- weights_init
def assert_loaded_exactly(enc, state):
    own = enc.encoder.state_dict()
    for k, v in state.items():
        if k.startswith("fc."):
            continue
        assert torch.equal(own[k], v), k


def test_weights_init_local_state_dict_loads_exactly(tmp_path):
    state = resnet_state(18)
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    enc = ResnetEncoder(18, weights_init=str(path))
    assert_loaded_exactly(enc, state)
    assert enc.weights_source == str(path)
    # os.PathLike works too
    assert_loaded_exactly(ResnetEncoder(18, weights_init=path), state)


@pytest.mark.parametrize("wrap", ["module", "state_dict", "model", "module_in_checkpoint", "depth_net"])
def test_weights_init_prefixes_and_checkpoint_dicts(tmp_path, wrap):
    state = resnet_state(18)
    if wrap == "module":
        obj = {"module." + k: v for k, v in state.items()}
    elif wrap == "state_dict":
        obj = {"state_dict": state, "epoch": 3}
    elif wrap == "model":
        obj = {"model": state, "optimizer": {"lr": 1e-4}}
    elif wrap == "module_in_checkpoint":
        obj = {"state_dict": {"module.encoder." + k: v for k, v in state.items()}}
    else:  # a whole (DDP-saved) depth net: its encoder sub-tree is taken, the decoder ignored
        obj = {"module.encoder.encoder." + k: v for k, v in state.items() if not k.startswith("fc.")}
        obj["module.decoder.decoder.0.conv.conv.weight"] = torch.zeros(256, 512, 3, 3)
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    assert_loaded_exactly(ResnetEncoder(18, weights_init=str(path)), state)


def test_weights_init_state_without_num_batches_tracked_loads(tmp_path):
    state = {k: v for k, v in resnet_state(18).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    assert_loaded_exactly(ResnetEncoder(18, weights_init=str(path)), state)


def test_weights_init_mismatching_file_names_the_keys(tmp_path):
    enc = ResnetEncoder(18, weights_init=False)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(RuntimeError) as info:
        enc.load_resnet_state_dict(resnet_state(34), source="resnet34.pth")
    msg = str(info.value)
    assert "unexpected keys" in msg and "layer1.2.conv1.weight" in msg
    assert "ResNet-18" in msg and "resnet34.pth" in msg
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())  # nothing half-loaded

    with pytest.raises(RuntimeError) as info:
        enc.load_resnet_state_dict(encoder(50).state_dict(), source="resnet50.pth")
    msg = str(info.value)
    assert "shape mismatch" in msg and "layer1.0.conv1.weight" in msg
    assert "unexpected keys" in msg and "layer1.0.conv3.weight" in msg

    partial = {k: v for k, v in resnet_state(18).items() if not k.startswith("layer4.")}
    path_p = tmp_path / "partial.pth"
    torch.save(partial, path_p)
    with pytest.raises(RuntimeError, match=r"missing keys: layer4\.0\.conv1\.weight") as info:
        ResnetEncoder(18, weights_init=str(path_p))
    assert str(path_p) in str(info.value)


def test_weights_init_bad_values(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights_init"):
        ResnetEncoder(18, weights_init=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    torch.save({"epoch": 1}, junk)
    with pytest.raises(RuntimeError, match="no ResNet state_dict"):
        ResnetEncoder(18, weights_init=str(junk))
    with pytest.raises(TypeError):
        ResnetEncoder(18, weights_init=3)
    with pytest.raises(ValueError, match="num_layers"):
        ResnetEncoder(19, weights_init=False)


def test_weights_init_true_offline_raises_clear_error(no_network):
    with pytest.raises(RuntimeError) as info:
        ResnetEncoder(18, weights_init=True)
    msg = str(info.value)
    assert "not available offline" in msg
    assert "model.weights_init" in msg and ".pth" in msg and "false" in msg
    assert len(no_network) == 1 and no_network[0].endswith(".pth")  # it tried the download (patched)
    with pytest.raises(RuntimeError, match="not available offline"):
        MonoPoseNet(18, weights_init=True)


def test_weights_init_true_loads_from_hub_cache(no_network):
    state = resnet_state(18, seed=3)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    assert cache.startswith(os.environ["TORCH_HOME"])
    os.makedirs(cache)
    torch.save(state, os.path.join(cache, os.path.basename(urlparse(url).path)))
    enc = ResnetEncoder(18, weights_init=True)
    assert no_network == []  # no download attempted
    assert_loaded_exactly(enc, state)
    assert enc.weights_source == "imagenet"
    pose = ResnetEncoder(18, weights_init=True, num_input_images=2)
    w = state["conv1.weight"]
    assert torch.equal(pose.encoder.conv1.weight, torch.cat([w, w], 1) / 2)


# ----------------------------------------------------------------------------- depth decoder
@pytest.mark.parametrize("use_skips, hw", [(True, (64, 96)), (True, (70, 100)), (False, (70, 100))])
def test_depth_net_scales_sizes_range_and_gradients(use_skips, hw):
    H, W = hw
    net = MonoDepthNet(18, weights_init=False, scales=[0, 1, 2, 3], use_skips=use_skips)
    x = torch.rand(2, 3, H, W, generator=seeded())
    out = net(x)
    assert sorted(out) == [0, 1, 2, 3]
    assert out[0].shape == (2, 1, H, W)  # full input resolution, whatever the size
    for s in (1, 2, 3):
        assert out[s].shape == (2, 1, math.ceil(H / 2**s), math.ceil(W / 2**s))
    for d in out.values():
        assert torch.isfinite(d).all() and (d > 0).all() and (d < 1).all()
    sum(d.mean() for d in out.values()).backward()
    g = net.depth_encoder.encoder.conv1.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_depth_decoder_structure_and_naming():
    dec = DepthDecoder([64, 64, 128, 256, 512], scales=(3, 0, 1, 2))
    assert dec.scales == [0, 1, 2, 3]
    sd = dec.state_dict()
    assert sd["decoder.0.conv.conv.weight"].shape == (256, 512, 3, 3)  # upconv(4, 0)
    assert sd["decoder.1.conv.conv.weight"].shape == (256, 256 + 256, 3, 3)  # upconv(4, 1) with the layer3 skip
    assert sd["decoder.9.conv.conv.weight"].shape == (16, 16, 3, 3)  # upconv(0, 1): no skip
    assert sd["decoder.10.conv.weight"].shape == (1, 16, 3, 3)  # dispconv(0)
    assert sd["decoder.13.conv.weight"].shape == (1, 128, 3, 3)  # dispconv(3)
    no_skip = DepthDecoder([64, 64, 128, 256, 512], scales=(0,), use_skips=False)
    assert no_skip.state_dict()["decoder.1.conv.conv.weight"].shape == (256, 256, 3, 3)
    with pytest.raises(ValueError):
        DepthDecoder([64, 64, 128, 256, 512], scales=(5,))


def test_depth_decoder_upsampling_to_feature_size_equals_x2_when_divisible():
    dec = DepthDecoder([64, 64, 128, 256, 512], scales=(0,)).eval()
    feats = [torch.rand(1, c, 32 // 2**k, 48 // 2**k, generator=seeded(k)) for k, c in enumerate(dec.num_ch_enc)]
    with torch.no_grad():
        ref = feats[-1]
        for i in range(4, -1, -1):  # the plain monodepth2 path: always x2
            ref = dec._upconv(i, 0)(ref)
            ref = torch.nn.functional.interpolate(ref, scale_factor=2, mode="nearest")
            if i > 0:
                ref = torch.cat([ref, feats[i - 1]], 1)
            ref = dec._upconv(i, 1)(ref)
        ref = torch.sigmoid(dec.decoder[10](ref))
        assert torch.equal(dec(feats)[0], ref)
        assert torch.equal(dec(feats, image_size=(64, 96))[0], ref)


def test_depth_net_tiny_input_reflection_fallback():
    net = MonoDepthNet(18, weights_init=False, scales=[0, 3]).eval()  # layer4 is 1x1 at 32x32
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 32))
    assert out[0].shape == (1, 1, 32, 32) and out[3].shape == (1, 1, 4, 4)
    conv = Conv3x3(4, 2)
    assert conv(torch.rand(1, 4, 1, 5)).shape == (1, 2, 1, 5)


# ----------------------------------------------------------------------------- pose decoder
def test_pose_decoder_shapes_scale_and_gradients():
    dec = PoseDecoder(512, num_input_features=2, num_frames_to_predict_for=3, stride=2)
    sd = dec.state_dict()
    assert sd["net.0.weight"].shape == (256, 512, 1, 1)
    assert sd["net.1.weight"].shape == (256, 512, 3, 3)
    assert sd["net.3.weight"].shape == (18, 256, 1, 1)
    f1 = torch.rand(4, 512, 5, 7, generator=seeded(1), requires_grad=True)
    f2 = torch.rand(4, 512, 5, 7, generator=seeded(2))
    aa, t = dec([f1, f2])
    assert aa.shape == (4, 3, 1, 3) and t.shape == (4, 3, 1, 3)
    # output = 0.01 · spatial mean of the last conv, (axis-angle, translation) per frame
    with torch.no_grad():
        x = torch.cat([torch.relu(dec.net[0](f)) for f in (f1, f2)], 1)
        x = dec.net[3](torch.relu(dec.net[2](torch.relu(dec.net[1](x)))))
        assert x.shape[-2:] == (2, 2)  # two stride-2 convs: 5x7 -> 3x4 -> 2x2
        raw = x.mean(dim=(2, 3)).view(4, 3, 6)
    torch.testing.assert_close(aa[:, :, 0], 0.01 * raw[..., :3])
    torch.testing.assert_close(t[:, :, 0], 0.01 * raw[..., 3:])
    assert aa.abs().max() < 0.05 and t.abs().max() < 0.05
    (aa.sum() + t.sum()).backward()
    assert f1.grad is not None and f1.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())
    with pytest.raises(ValueError, match="2 feature map"):
        dec(f1)
    assert PoseDecoder([64, 64, 128, 256, 512]).num_ch_in == 512


def test_mono_pose_net_shapes_naming_and_gradients():
    net = MonoPoseNet(18, weights_init=False)
    sd = net.state_dict()
    assert sd["pose_encoder.encoder.conv1.weight"].shape == (64, 6, 7, 7)
    assert sd["pose_decoder.net.0.weight"].shape == (256, 512, 1, 1)
    assert net.pose_decoder.stride == 1
    a = torch.rand(3, 3, 64, 96, generator=seeded(1))
    b = torch.rand(3, 3, 64, 96, generator=seeded(2))
    aa, t = net(a, b)
    assert aa.shape == (3, 1, 1, 3) and t.shape == (3, 1, 1, 3)
    assert aa.abs().max() < 0.05 and t.abs().max() < 0.05  # initially near the identity motion
    (aa.square().sum() + t.square().sum()).backward()
    g = net.pose_encoder.encoder.conv1.weight.grad
    assert g is not None and g[:, :3].abs().sum() > 0 and g[:, 3:].abs().sum() > 0
    net.eval()
    with torch.no_grad():
        aa1, t1 = net(a, b)
        aa2, t2 = net(torch.cat([a, b], 1))
    assert torch.equal(aa1, aa2) and torch.equal(t1, t2)


def test_mono_pose_net_translation_clamp():
    net = MonoPoseNet(18, weights_init=False, max_translation=4.0).eval()
    with torch.no_grad():
        net.pose_decoder.net[3].bias.copy_(torch.tensor([0.0, 0, 0, 1000.0, -1000.0, 0]))
        _, t = net(torch.rand(1, 6, 64, 64))
    assert t[0, 0, 0, 0] == 4.0 and t[0, 0, 0, 1] == -4.0
    net.max_translation = None
    with torch.no_grad():
        _, t = net(torch.rand(1, 6, 64, 64))
    assert t[0, 0, 0, 0] > 9.0


def test_mono_depth_net_naming_and_parameter_count():
    net = MonoDepthNet(18, weights_init=False, scales=[0], use_skips=True)
    keys = list(net.state_dict())
    assert keys[0] == "depth_encoder.encoder.conv1.weight"
    assert "depth_decoder.decoder.10.conv.weight" in keys and "depth_decoder.decoder.11.conv.weight" not in keys
    decoder_params = n_params(net.depth_decoder)
    assert n_params(net) == 11_176_512 + decoder_params
    # decoder with skips: 10 ConvBlocks + one disparity conv, from the channel plan
    enc, dec = [64, 64, 128, 256, 512], [16, 32, 64, 128, 256]
    expected = 0
    for i in range(4, -1, -1):
        c_in = enc[-1] if i == 4 else dec[i + 1]
        expected += 9 * c_in * dec[i] + dec[i]
        c_in = dec[i] + (enc[i - 1] if i > 0 else 0)
        expected += 9 * c_in * dec[i] + dec[i]
    expected += 9 * 16 + 1
    assert decoder_params == expected


# ----------------------------------------------------------------------------- packing, batch independence
def test_pack_unpack_round_trip():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    p = pack_cameras(x)
    assert p.shape == (6, 4, 5)
    assert torch.equal(p[1 * 3 + 2], x[1, 2])  # camera index fastest
    assert torch.equal(unpack_cameras(p, 2, 3), x)
    y = torch.rand(5, 2, 7, 3, 8, 8).permute(1, 0, 2, 3, 4, 5)  # non-contiguous input
    assert torch.equal(unpack_cameras(pack_cameras(y), 2, 5), y)
    with pytest.raises(ValueError, match="batch_size"):
        unpack_cameras(p, 4, 2)
    with pytest.raises(ValueError):
        pack_cameras(torch.zeros(3))


def test_outputs_do_not_depend_on_batch_size():
    depth = MonoDepthNet(18, weights_init=False, scales=[0, 2]).eval()
    pose = MonoPoseNet(18, weights_init=False).eval()
    images = torch.rand(1, 3, 2, 3, 64, 96, generator=seeded(7))  # [B=1, N=3, 2 frames, 3, H, W]
    images3 = torch.rand(2, 3, 2, 3, 64, 96, generator=seeded(8))
    batch = torch.cat([images, images3], 0)  # B = 3
    with torch.no_grad():
        d_all = depth(pack_cameras(batch[:, :, 0]))
        d_one = depth(pack_cameras(images[:, :, 0]))
        aa_all, t_all = pose(pack_cameras(batch[:, :, 0]), pack_cameras(batch[:, :, 1]))
        aa_one, t_one = pose(pack_cameras(images[:, :, 0]), pack_cameras(images[:, :, 1]))
    for s in (0, 2):
        per_cam = unpack_cameras(d_all[s], 3, 3)
        assert per_cam.shape[:2] == (3, 3)
        torch.testing.assert_close(per_cam[:1], unpack_cameras(d_one[s], 1, 3), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unpack_cameras(aa_all, 3, 3)[:1], unpack_cameras(aa_one, 1, 3), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(unpack_cameras(t_all, 3, 3)[:1], unpack_cameras(t_one, 1, 3), rtol=1e-4, atol=1e-7)
