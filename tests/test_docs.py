"""The docs cannot drift: their runnable commands run, their links resolve, generated pages are current.

A fenced block right after a `<!-- runnable -->` line (or `<!-- runnable: exit N -->`) is executed from the
repository root. In a ```bash block every command must exit with that status. A ```console block is a
transcript: `$ command` lines, each followed by the output lines it must print (`...` matches any text).
Only cheap commands belong there: --help, --dry-run, config errors.
"""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- runnable(?::\s*exit (\d+))? -->")
FENCE = re.compile(r"^```")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Command:
    where: str  # file:line of the command
    cmd: str
    exit_code: int
    expected: tuple[str, ...]  # output lines (transcripts only)


def _join_continuations(lines: list[str]) -> list[tuple[int, str]]:
    """(index of first line, logical line) with backslash continuations joined."""
    out, buf, start = [], "", 0
    for i, line in enumerate(lines):
        if not buf:
            start = i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    return out


def runnable_commands(path: Path) -> list[Command]:
    lines = path.read_text().splitlines()
    rel = path.relative_to(REPO)
    commands = []
    for i, line in enumerate(lines):
        m = MARKER.fullmatch(line.strip())
        if not m:
            continue
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        assert fence in ("```bash", "```console"), f"{rel}:{i + 1}: a runnable marker must precede a bash/console block"
        end = next(j for j in range(i + 2, len(lines)) if FENCE.match(lines[j]))
        body, first = lines[i + 2:end], i + 3  # 1-based line number of the body's first line
        exit_code = int(m.group(1) or 0)
        if fence == "```console":
            for k, text in _join_continuations(body):
                if text.startswith("$ "):
                    commands.append(Command(f"{rel}:{first + k}", text[2:], exit_code, ()))
                elif commands and text.strip():
                    last = commands[-1]
                    commands[-1] = Command(last.where, last.cmd, exit_code, (*last.expected, text.rstrip()))
        else:
            for k, text in _join_continuations(body):
                if text.strip() and not text.lstrip().startswith("#"):
                    commands.append(Command(f"{rel}:{first + k}", text, exit_code, ()))
    return commands


COMMANDS = [c for path in DOCS for c in runnable_commands(path)]


def _run(c: Command) -> subprocess.CompletedProcess:
    # `python` is this interpreter (the venv's), and this checkout's code comes first (as in the Makefile).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", "-c", c.cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def results() -> dict[Command, subprocess.CompletedProcess]:
    """All commands at once: each is a short Python start-up, mostly waiting on imports."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(COMMANDS, pool.map(_run, COMMANDS), strict=True))


def _matches(expected: str, line: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, line) is not None


@pytest.mark.parametrize("c", COMMANDS, ids=[f"{c.where} {c.cmd[:60]}" for c in COMMANDS])
def test_documented_command_runs_as_shown(results, c):
    proc = results[c]
    output = proc.stdout + proc.stderr
    assert proc.returncode == c.exit_code, (
        f"{c.where}: `{c.cmd}` exited {proc.returncode}, the docs say {c.exit_code}\n{output[-3000:]}")
    lines = [line.rstrip() for line in output.splitlines()]
    for want in c.expected:
        assert any(_matches(want, line) for line in lines), (
            f"{c.where}: `{c.cmd}` no longer prints\n  {want}\nit printed:\n{output[-3000:]}")


def test_readme_has_runnable_commands_and_errors():
    readme = [c for c in COMMANDS if c.where.startswith("README.md")]
    assert any(c.exit_code == 0 for c in readme) and any(c.expected for c in readme), (
        "README.md must keep runnable commands (and a documented error) marked for this test")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in _prose(path.read_text()).splitlines() if line.startswith("#")}


def _prose(text: str) -> str:
    """The text outside fenced code blocks (links and headings there are not rendered)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_relative_links_point_at_existing_files(path):
    broken = []
    for target in LINK.findall(_prose(path.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{path.relative_to(REPO)}: broken links:\n  " + "\n  ".join(broken)


def test_generated_config_key_reference_is_current():
    proc = subprocess.run([sys.executable, "scripts/config_keys.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_shipped_run_config_is_documented():
    text = (REPO / "docs" / "configs.md").read_text()
    runs = [p.stem for p in sorted((REPO / "configs").glob("*.yaml")) if p.stem != "base"]
    missing = [name for name in runs if f"`{name}`" not in text]
    assert not missing, f"docs/configs.md does not describe the run configs {missing}"
