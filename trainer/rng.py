"""The process-wide random number generators a training run draws from (Python `random`, NumPy's
global generator, torch on the CPU and on every CUDA device): seed them together, capture their
states into a checkpoint and restore them, so that a resumed run continues with the same stream.

Captured states hold only plain Python values and tensors, so a checkpoint holding them loads with
`torch.load(..., weights_only=True)`.
"""

import random
import warnings
from typing import Any, Dict

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python `random`, NumPy's global generator and torch (CPU and every CUDA device)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily where CUDA is not started)


def _cuda_in_use() -> bool:
    # Only where CUDA is already started: asking for its states would otherwise start it (one
    # context per device) in a run that never uses the GPU, whose CUDA streams are then untouched.
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def capture_rng_state() -> Dict[str, Any]:
    """The current states of all generators, as plain values and tensors."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: Dict[str, Any] = {
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if _cuda_in_use():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Set every generator to the state `capture_rng_state` returned; parts missing from `state` are
    left as they are. CUDA states are restored on as many devices as both runs have (a warning
    says when the device counts differ or CUDA is not available here)."""
    if "python" in state:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]), py["gauss_next"]))
    if "numpy" in state:
        nps = state["numpy"]
        keys = torch.as_tensor(nps["keys"]).cpu().numpy().astype(np.uint32)
        np.random.set_state((nps["kind"], keys, int(nps["pos"]), int(nps["has_gauss"]),
                             float(nps["cached_gaussian"])))
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"]).cpu().to(torch.uint8))
    cuda_states = state.get("cuda")
    if cuda_states:
        if not torch.cuda.is_available():
            warnings.warn(f"the checkpoint holds the RNG states of {len(cuda_states)} CUDA device(s) "
                          "but CUDA is not available here: they are not restored", stacklevel=2)
            return
        count = torch.cuda.device_count()
        if count != len(cuda_states):
            warnings.warn(f"the checkpoint holds the RNG states of {len(cuda_states)} CUDA device(s), "
                          f"this machine has {count}: restoring the first {min(count, len(cuda_states))}",
                          stacklevel=2)
        for device, cuda_state in enumerate(cuda_states[:count]):
            torch.cuda.set_rng_state(torch.as_tensor(cuda_state).cpu().to(torch.uint8), device)
