"""Algorithms: one module per algorithm, each registered under its ``model.type``.

Importing this package imports every algorithm module, so that ``build_model(cfg)`` finds them:

* ``surround_depth`` (models/surround_fusion.py registers it): VFDepth's volumetric fusion model
  (model.depth_model / pose_model ``fusion``) or the FSM-style per-camera baseline
  (models/surround_baseline.py, both ``fsm``).
"""
from .base import Algorithm, Predictions, build_model, register_model, registered_models
from .surround_baseline import SurroundBaseline, view_synthesis_losses
from .surround_fusion import SurroundFusion  # registers model.type surround_depth
from .mono_sceneflow import MonoSceneFlow  # registers model.type mono_sceneflow

__all__ = [
    "Algorithm",
    "MonoSceneFlow",
    "Predictions",
    "SurroundBaseline",
    "SurroundFusion",
    "build_model",
    "register_model",
    "registered_models",
    "view_synthesis_losses",
]
