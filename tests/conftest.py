import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: on a loaded 2-core machine intra-op threads made single calls ~30x slower
    (60 ms instead of 2 ms). A module that uses this runs single-threaded and restores the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
