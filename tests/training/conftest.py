import pytest

from .grid_helpers import SMOKE, rbols


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The smoke grid run once, uninterrupted, in a subprocess with one thread (the local backend): what
    the other backends and the interrupted grids must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    p = rbols([*SMOKE, "--threads", "1", "--out", str(out)])
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    assert "6 of 6 cells done, 0 failed" in stdout
    return out
