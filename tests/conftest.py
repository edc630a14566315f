import os
from pathlib import Path

import pytest
import torch

DATA_VAR = "RBOLS_DATA"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: on a loaded 2-core machine intra-op threads made single calls ~30x slower
    (60 ms instead of 2 ms). A module that uses this runs single-threaded and restores the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The data root holding the real CIFAR-10 (binary layout), from $RBOLS_DATA; without it the test is
    skipped and says how to run it. Every test that asks for it is marked `slow` (below)."""
    env = os.environ.get(DATA_VAR)
    if not env:
        pytest.skip(f"real CIFAR-10 not available: set {DATA_VAR} to the shared data folder "
                    f"(CI uses {DATA_VAR}=../shared/data)")
    root = Path(env).resolve()
    folder = root / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    if not all((folder / f).is_file() for f in names):
        pytest.skip(f"real CIFAR-10 not available: {folder} is missing or incomplete ({DATA_VAR}={env})")
    return root


def pytest_collection_modifyitems(items):
    """A test on the real data is `slow` (minutes in all, not hours): `-m "not slow"` leaves them out; the
    README's test command runs every test."""
    for item in items:
        if "real_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
