"""models.base: the registry builds what model.type names and refuses what it does not know."""

import pytest
import torch

from models import base
from models.base import Algorithm, build_model, register_model
from utils.config import load_config


class _Tiny(Algorithm):
    network_names = ("depth_net",)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.depth_net = torch.nn.Conv2d(3, 1, 1)


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", {})
    return base._REGISTRY


def test_build_model_uses_model_type(tmp_path, registry):
    register_model("surround_depth")(_Tiny)
    cfg = load_config(_write(tmp_path, "model: {type: surround_depth}\n"))
    model = build_model(cfg, torch.device("cpu"))
    assert isinstance(model, _Tiny) and list(model.networks()) == ["depth_net"]
    with pytest.raises(ValueError, match="registered twice"):
        register_model("surround_depth")(_Tiny)


def test_unknown_type_and_wrong_builder_are_errors(tmp_path, registry):
    cfg = load_config(_write(tmp_path, "model: {type: mono_sceneflow}\n"))
    with pytest.raises(ValueError, match="no algorithm registered as 'mono_sceneflow'"):
        build_model(cfg)
    register_model("mono_sceneflow")(lambda cfg: torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match="not an Algorithm"):
        build_model(cfg)


def _write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)
