"""The built wheel works on its own: the review page's files (package data, not Python)
ship in it, and the installed CLI writes the same page as the source tree.

CI installs the project in editable mode, where a file left out of the wheel is still
found in the checkout; so this test builds the wheel, installs it into a fresh virtual
environment and runs ``noisyclean review`` from there, with the checkout out of reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import SmallSet
from test_review import small_run

from noisyclean.review import PAGE_FILES, build_review

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: Seconds for each subprocess (wheel build, install, CLI run) before the test fails.
STEP_TIMEOUT = 300


def make_run(tmp_path_factory: pytest.TempPathFactory, small_set: SmallSet, cache: Path) -> Path:
    """A run directory for the installed CLI to render: the review tests' small run
    (real images, real backbone; built once per session and shared with them)."""
    return small_run(tmp_path_factory, small_set, cache)


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _pip(*args: str | Path, cwd: Path) -> None:
    """The test environment's pip, offline."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    _run([*pip, *args, "--no-index"], cwd=cwd)


def _build_wheel(dest: Path) -> Path:
    """The wheel of a copy of the project's sources (so the build writes nothing into
    the checkout), built with the test environment's setuptools, offline."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "noisyclean",
        src / "noisyclean",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    wheels = dest / "wheels"
    _pip("wheel", src, "--no-deps", "--no-build-isolation", "-w", wheels, cwd=dest)
    (wheel,) = wheels.glob("noisyclean-*.whl")
    return wheel


@pytest.mark.timeout(900)
def test_installed_wheel_writes_the_review_page(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    small_set: SmallSet,
    feature_cache: Path,
) -> None:
    run = make_run(tmp_path_factory, small_set, feature_cache)
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for name in PAGE_FILES:
        assert f"noisyclean/review_page/{name}" in names, names

    # A fresh environment with only the wheel in it; the test environment's site-packages
    # is on its path through a .pth path line, which (unlike that folder's own .pth
    # files, not run from there) does not install the editable finder of the checkout.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bindir = "Scripts" if os.name == "nt" else "bin"
    python = env_dir / bindir / ("python.exe" if os.name == "nt" else "python")
    _pip("--python", python, "install", wheel, "--no-deps", cwd=tmp_path)
    fresh_site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).strip()
    )
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (fresh_site / "test-environment.pth").write_text("".join(f"{p}\n" for p in ours))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    work = tmp_path / "work"  # not the checkout: `python -c` puts the cwd on sys.path
    work.mkdir()
    where = _run(
        [
            python,
            "-c",
            "import noisyclean, noisyclean.review as r; print(noisyclean.__file__);"
            " print(r._page_file.__code__.co_filename)",
        ],
        cwd=work,
        env=env,
    ).split()
    for path in where:
        assert Path(path).resolve().is_relative_to(env_dir.resolve()), where

    page = work / "page.html"
    cli = env_dir / bindir / ("noisyclean.exe" if os.name == "nt" else "noisyclean")
    _run([cli, "review", run, "-o", page, "--top", "3"], cwd=work, env=env)
    text = page.read_text(encoding="utf-8")
    assert "function makeCard(" in text and "--thumb: 96px" in text
    assert "<li><kbd>" in text and "@@" not in text
    assert text == build_review(run, top=3), "the installed page differs from the checkout's"
