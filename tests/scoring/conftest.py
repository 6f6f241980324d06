import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models here are tiny: a second thread buys nothing, and on a shared 2-core machine OpenMP's
    spin-waiting makes a step up to 30x slower. Restored after each module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
