"""Networks: ResNet encoder, depth and pose decoders, the per-camera baseline nets, shared blocks.

Depends on nothing of ours but ``geometry`` (see DESIGN.md).  All networks take cameras packed
into the batch (:func:`pack_cameras`) and bake in no batch size, camera count, image size or device.
"""
from .correlation import correlation, correlation_loop
from .sceneflow import MonoSceneFlowNet
from .blocks import Conv3x3, ConvBlock, pack_cameras, pad_reflect, unpack_cameras, upsample
from .depth_decoder import DepthDecoder
from .mono_nets import MonoDepthNet, MonoPoseNet
from .pose_decoder import PoseDecoder
from .resnet_encoder import ResnetEncoder

__all__ = [
    "MonoSceneFlowNet",
    "correlation",
    "correlation_loop",
    "Conv3x3",
    "ConvBlock",
    "DepthDecoder",
    "MonoDepthNet",
    "MonoPoseNet",
    "PoseDecoder",
    "ResnetEncoder",
    "pack_cameras",
    "pad_reflect",
    "unpack_cameras",
    "upsample",
]
