"""Shared fixtures."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """The offline sample dataset (vocab 1024), built once per test session into a temp cache."""
    from data.sample import ensure_sample_dataset

    cache = tmp_path_factory.mktemp("pg-cache")
    return ensure_sample_dataset(cache_dir=cache, vocab_size=1024)


@pytest.fixture(autouse=True)
def one_thread():
    """Test models are tiny: one intra-op thread avoids OpenMP barrier stalls when jobs share the CPU
    (up to 20x slower on a busy 2-core machine). Subprocess trainers get OMP_NUM_THREADS from their tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
