"""Python imports this at start-up when tests/fault_site is on PYTHONPATH (tests/faults.py `fault_env`):
it turns on the faults named in $DYT_FAULTS in this process."""

import os

if os.environ.get("DYT_FAULTS"):
    from tests.faults import install

    install()
