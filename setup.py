"""Everything is declared in pyproject.toml; this only ships `configs/` inside the wheel, as
`pipeline/configs/` (where `pipeline.config.loader` looks first), since package data must live in a package
and the top-level `configs/` is where users of a checkout expect it."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads configs/ from the checkout
            shutil.copytree("configs", Path(self.build_lib) / "pipeline" / "configs", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithConfigs})
