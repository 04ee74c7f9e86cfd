"""The synthetic driving world: procedural streets rendered by exact ray casting.

``render_sequence(preset, num_frames, ...)`` returns a :class:`SyntheticSequence` (images, depth,
object ids, scene and optical flow, lidar, self-occlusion masks, poses and calibration) for the
``ddad``, ``nuscenes`` or ``kitti`` rig presets (:data:`RIG_PRESETS`, :func:`get_rig`) or a custom
:class:`Rig`.  Nothing is downloaded; everything is seeded by (seed, scene_index).
"""
from .render import render_sequence
from .rig import RIG_PRESETS, Rig, get_rig
from .sequence import SyntheticSequence

__all__ = ["RIG_PRESETS", "Rig", "SyntheticSequence", "get_rig", "render_sequence"]
