"""Shared fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """The offline sample dataset (vocab 1024), built once per test session into a temp cache."""
    from data.sample import ensure_sample_dataset

    cache = tmp_path_factory.mktemp("pg-cache")
    return ensure_sample_dataset(cache_dir=cache, vocab_size=1024)
