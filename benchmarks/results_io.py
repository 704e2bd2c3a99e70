"""What every benchmark writes next to its table: the machine it ran on, and the JSON + Markdown pair."""

import json
import os
import platform
from pathlib import Path


def machine_facts(load_start: float) -> dict:
    """CPUs, platform, Python, and the 1-minute load average at the start and now (a shared box shows here)."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_start": load_start, "load_average_end": os.getloadavg()[0]}


def write_results(directory: Path, stem: str, result: dict, markdown: str) -> None:
    """<directory>/<stem>.json (every number) and <stem>.md (the table people read)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (directory / f"{stem}.md").write_text(markdown)
    print(f"wrote {directory / stem}.json and .md")
