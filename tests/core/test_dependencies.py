"""What gets installed is what was reviewed: ranges with floors above published vulnerabilities, and lock files
that pin every package with hashes inside those ranges (`make install`, `.ci/run` and the Dockerfile use them)."""

import os
import re
import tomllib
from importlib.metadata import version

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCKS = ("requirements.lock", "requirements-production.lock")
# The first version with each published fix (requests: .netrc credentials leak; urllib3: redirects not
# disabled as asked; setuptools: code injection through package URLs), and the last one without it.
FLOORS = {"requests": "2.32.4", "urllib3": "2.5", "setuptools": "70"}
VULNERABLE = {"requests": "2.32.3", "urllib3": "2.4.0", "setuptools": "69.5.1"}


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _declared() -> dict[str, Requirement]:
    project = _pyproject()
    found = [Requirement(r) for r in project["project"]["dependencies"]]
    found += [Requirement(r) for r in project["build-system"]["requires"]]
    return {r.name.lower(): r for r in found}


def _pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from a pip-compile lock file."""
    with open(os.path.join(ROOT, lock), encoding="utf-8") as f:
        text = f.read()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s\\]+)", block)
        if m:
            pins[m.group(1).lower()] = (m.group(2), block.count("--hash=sha256:"))
    return pins


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_no_range_admits_a_version_with_a_published_vulnerability(name):
    declared = _declared()[name]
    assert not declared.specifier.contains(VULNERABLE[name])
    assert declared.specifier.contains(FLOORS[name] if FLOORS[name].count(".") == 2 else FLOORS[name] + ".0")


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_package_is_pinned_with_hashes_inside_the_declared_ranges(lock):
    pins = _pins(lock)
    assert pins and all(hashes >= 1 for _, hashes in pins.values())
    for name, requirement in _declared().items():
        assert name in pins, f"{name} is not in {lock}"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (name, pins[name][0])
    for name, floor in FLOORS.items():
        assert Version(pins[name][0]) >= Version(floor)


def test_the_installed_versions_are_the_locked_ones():
    pins = _pins("requirements.lock")
    for name in ("flask", "stripe", "requests", "urllib3", "sqlalchemy"):
        assert version(name) == pins[name][0]
