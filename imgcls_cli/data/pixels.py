"""uint8 image batches brought to the training shape: resized to size x size and converted to 1 or 3 channels."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from imgcls_cli.errors import UserError

RESIZE_CHUNK_BYTES = 256 * 2**20


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 (N, C, H, W) batch to size x size: area when shrinking, bilinear when enlarging."""
    if images.shape[-2:] == (size, size):
        return images
    mode = "area" if size < images.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = np.empty((len(images), images.shape[1], size, size), np.uint8)
    # In chunks of ~256 MB of float32, so resizing a large dataset never holds it all as floats.
    chunk = max(1, RESIZE_CHUNK_BYTES // (4 * images.shape[1] * max(size, images.shape[-1]) ** 2))
    for lo in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[lo:lo + chunk])).float()
        x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
        out[lo:lo + chunk] = x.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Grayscale <-> RGB for a uint8 (N, C, H, W) batch (ITU-R 601 luma, as OpenCV)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if have == 3 and channels == 1:
        luma = images.astype(np.float32).transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, None]
    raise UserError(f"dataset.channels must be 1 or 3, not {channels}.")
