"""A tiny analytic stereo video for the scene flow tests: a textured fronto-parallel wall, the rig
driving straight at it. Rendered in milliseconds by sampling the texture, with exact ground truth:
every pixel's depth, disparity and scene flow are known in closed form."""
import torch
import torch.nn.functional as F

BASELINE = 0.54


def wall_batch(frame_ids=(-3, -2, -1, 0, 1), height=32, width=96, depth=8.0, speed=0.5, seed=0, batch_size=1):
    """A batch of the data contract: images [B, T, 2, 3, H, W] of a wall ``depth`` metres in front
    of the rig at the target frame, the rig moving ``speed`` metres forward per frame.

    Returns (batch, truth) where truth holds per frame offset f: "depth" (metres, scalar),
    "disparity" (pixels), and the scene flow of every pixel of frame f to f+1, (0, 0, -speed).
    """
    generator = torch.Generator().manual_seed(seed)
    # A smooth random texture on the wall, 30 x 30 metres.
    texture = F.interpolate(torch.rand(1, 3, 10, 10, generator=generator), size=(192, 192), mode="bicubic",
                            align_corners=False).clamp(0, 1)
    texture = 0.25 + 0.5 * texture
    half_extent = 15.0
    fx = fy = width / 2.0
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    frames = []
    for f in frame_ids:
        z = depth - f * speed
        views = []
        for cam_x in (0.0, BASELINE):
            x = (u - cx) / fx * z + cam_x
            y = (v - cy) / fy * z
            grid = torch.stack([x / half_extent, y / half_extent], dim=-1)[None]
            views.append(F.grid_sample(texture, grid, mode="bilinear", align_corners=True)[0])
        frames.append(torch.stack(views))
    images = torch.stack(frames)[None].repeat(batch_size, 1, 1, 1, 1, 1)       # [B, T, 2, 3, H, W]
    extrinsics = torch.eye(4).repeat(batch_size, 2, 1, 1)
    extrinsics[:, 1, 0, 3] = BASELINE
    batch = {
        "image": images,
        "K": K.repeat(batch_size, 2, 1, 1),
        "extrinsics": extrinsics,
        "mask": torch.ones(batch_size, 2, 1, height, width),
        "frame_ids": torch.tensor([list(frame_ids)] * batch_size),
    }
    truth = {f: {"depth": depth - f * speed, "disparity": fx * BASELINE / (depth - f * speed),
                 "scene_flow": torch.tensor([0.0, 0.0, -speed])} for f in frame_ids}
    return batch, truth
