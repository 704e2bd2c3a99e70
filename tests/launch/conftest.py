import shutil
from collections.abc import Iterator

import pytest

from tests.launch.localslurm import LocalSlurm, SlurmUnavailable, ensure_installed, new_root


@pytest.fixture(scope="session")
def slurm() -> Iterator[LocalSlurm]:
    """munged + slurmctld + 2 slurmd on loopback for this test session; stopped even when tests fail."""
    try:
        ensure_installed()
    except SlurmUnavailable as e:  # not root and not installed: CI runs as root, so this never skips there
        pytest.skip(str(e))
    cluster = LocalSlurm(new_root())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
