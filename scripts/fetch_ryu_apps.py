#!/usr/bin/env python3
"""Fetch Ryu 4.34's own sample apps (ryu/app/*.py) from PyPI into a cache; print their folder.

Synod does not carry Ryu's code; its compatibility tests run Ryu's sample apps as they
were released, so this fetches them at test time (docs/ryu-compat.md):

    python scripts/fetch_ryu_apps.py [--cache DIR]     # default .cache/ryu-4.34

Ryu is on PyPI as a source archive only, and pip must build its metadata even to
download it: that needs setuptools < 60 and pbr, so it runs in a throwaway virtualenv.
The archive's SHA-256 is pinned (pip checks it), so the files are Ryu's, unmodified.
Run again, it only checks the cache. Exit 1 with one line if the fetch fails.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile

RYU_VERSION = "4.34"
SDIST_SHA256 = "a31041eb53aee0c36ca428645ad2607163ca5e1390f5a3d6ef2025b7829ce93e"
# In the checkout, beside .venv (and ignored by git like it).
DEFAULT_CACHE = pathlib.Path(__file__).resolve().parents[1] / ".cache" / f"ryu-{RYU_VERSION}"
STAMP = ".synod-fetched"  # holds SDIST_SHA256 once the extraction completed
PIP_TIMEOUT_S = 300


class FetchError(Exception):
    """The apps could not be fetched; the message says why in one line."""


def app_dir(cache: pathlib.Path = DEFAULT_CACHE) -> pathlib.Path:
    """The folder holding Ryu's ryu/app/*.py, fetched into `cache` if not there yet."""
    apps = cache / "ryu" / "app"
    stamp = cache / STAMP
    if stamp.is_file() and stamp.read_text().strip() == SDIST_SHA256 \
            and (apps / "simple_switch_13.py").is_file():
        return apps
    with tempfile.TemporaryDirectory(prefix="synod-ryu-fetch-") as tmp:
        sdist = _download(pathlib.Path(tmp))
        staging = pathlib.Path(tmp) / "extract"
        _extract_apps(sdist, staging)
        if cache.exists():
            shutil.rmtree(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, cache)
    stamp.write_text(SDIST_SHA256 + "\n")
    return apps


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what}: no answer within {PIP_TIMEOUT_S}s") from None
    if done.returncode != 0:
        errors = [ln for ln in (done.stderr or done.stdout).splitlines()
                  if ln.startswith("ERROR") or "Error" in ln]
        raise FetchError(f"{what} failed: {(errors or [f'exit {done.returncode}'])[-1]}")


def _download(tmp: pathlib.Path) -> pathlib.Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], "creating a throwaway virtualenv")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(pip + ["install", "setuptools<60", "pbr", "wheel"],
         "installing the old setuptools Ryu's metadata needs")
    requirement = tmp / "requirements.txt"
    requirement.write_text(f"ryu=={RYU_VERSION} --hash=sha256:{SDIST_SHA256}\n")
    _run(pip + ["download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:",
                "--require-hashes", "-r", str(requirement), "-d", str(tmp / "dl")],
         f"pip download ryu=={RYU_VERSION}")
    found = sorted((tmp / "dl").glob(f"ryu-{RYU_VERSION}.tar.gz"))
    if not found:
        raise FetchError(f"pip download left no ryu-{RYU_VERSION}.tar.gz")
    digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise FetchError(f"ryu-{RYU_VERSION}.tar.gz has SHA-256 {digest}, not the pinned one")
    return found[0]


def _extract_apps(sdist: pathlib.Path, dest: pathlib.Path) -> None:
    """ryu/app/*.py (not its subpackages) and Ryu's LICENSE, nothing else."""
    prefix = f"ryu-{RYU_VERSION}/"
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix(prefix)
            parts = name.split("/")
            wanted = (len(parts) == 3 and parts[:2] == ["ryu", "app"]
                      and parts[2].endswith(".py")) or name == "LICENSE"
            if not wanted or not member.isfile():
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None  # a regular file has content
            target.write_bytes(source.read())
    if not (dest / "ryu" / "app" / "simple_switch_13.py").is_file():
        raise FetchError(f"ryu-{RYU_VERSION}.tar.gz holds no ryu/app/simple_switch_13.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=pathlib.Path, default=DEFAULT_CACHE,
                        help=f"where to keep the apps (default {DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    try:
        print(app_dir(args.cache))
    except FetchError as e:
        print(f"fetch_ryu_apps: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
