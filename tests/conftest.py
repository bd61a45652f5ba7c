"""Fixtures, and one check at start that the real data the tests read is there (no silent skips)."""

import pytest
import torch
from helpers import MULTI30K, NEEDED, SHARED, SST2, exact_match, small_config, train_copy_model

from nlp_rnn.nn.seq2seq import Seq2Seq

torch.set_num_threads(1)  # tiny models: one thread is faster and keeps runs deterministic


def pytest_sessionstart(session) -> None:
    missing = [path for path in NEEDED if not path.is_file()]
    if missing:
        pytest.exit(
            f"test data missing: {missing[0]} ({len(missing)} file(s) in all). The tests read real corpora from "
            f"{SHARED} (../shared/data beside the repository, described in its README.md).",
            returncode=4,
        )


@pytest.fixture(scope="session")
def multi30k():
    return MULTI30K


@pytest.fixture(scope="session")
def sst2():
    return SST2


@pytest.fixture(scope="session")
def copy_model() -> Seq2Seq:
    """One trained bidirectional GRU + Bahdanau model shared by the search and batching tests: trained
    until it copies 97 % of held-out examples (at most 300 updates)."""
    return train_copy_model(small_config(), steps=300, until=lambda m: exact_match(m, examples=100) >= 0.97)
