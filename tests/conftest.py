"""Shared fixtures: a tiny synthetic data set written once per session, and a fast two-thread torch."""
import dataclasses
import os

import pytest
import torch

# Two threads (the machine's cores), or fewer where OMP_NUM_THREADS says so (beside a training job, say).
torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS", 2))))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """8 training, 4 test and 4 background images from the real generator (a prefix of the paper's splits)."""
    from crackcore.data.synth import SynthConfig
    from crackcore.data.synth_files import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, dataclasses.replace(SynthConfig(), n_train=8, n_test=4, n_background=4, n_shift=4,
                                           n_shift_background=4), progress=False)
    return root


def pytest_collectstart(collector):
    """nbval: figures are checked by the numbers printed beside them, not by PNG bytes."""
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("image/png", "text/html", "application/vnd.jupyter.widget-view+json")
