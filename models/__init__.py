"""Algorithms: one module per algorithm, each registered under its ``model.type``.

Importing this package imports every algorithm module, so that ``build_model(cfg)`` finds them:

* ``surround_depth`` (models/surround_baseline.py): the FSM-style per-camera baseline
  (model.depth_model / pose_model ``fsm``); ``fusion`` is not implemented yet.
"""
from .base import Algorithm, Predictions, build_model, register_model, registered_models
from .surround_baseline import SurroundBaseline, view_synthesis_losses  # registers model.type surround_depth

__all__ = [
    "Algorithm",
    "Predictions",
    "SurroundBaseline",
    "build_model",
    "register_model",
    "registered_models",
    "view_synthesis_losses",
]
