"""Shared test fixtures."""

import os
from pathlib import Path

import pytest

# The real data samples of ../shared/data (see its README); SFDEPTH_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("SFDEPTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data samples; tests that need them are skipped, with the reason, where the
    samples are not present (they are not part of the project: see DESIGN.md)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (set SFDEPTH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: on the small shared CPUs of CI, several threads
    per process spend most of their time waiting for each other (steps 5-10x slower)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
