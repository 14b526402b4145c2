"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny forwards: one intra-op thread avoids OpenMP oversubscription on a small shared CPU
    (thread start-up costs more than it saves on tensors this small)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
