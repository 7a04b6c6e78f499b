"""The AWX / Automation Platform execution environment: ansible/ee/prepare builds the wheels and the collection
tarball it installs (pip from the machine's package index, ansible-galaxy), and ansible-builder accepts
ansible/execution-environment.yml and writes its build context from them (`ansible-builder create`, no container
engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

from .conftest import COLLECTION, REPO, ansible_env, run

EE = REPO / "ansible" / "execution-environment.yml"
DISTRIBUTIONS = [REPO, REPO / "providers" / "vsphere", REPO / "providers" / "baremetal", REPO / "providers" / "maas"]


def _wheel(project: Path) -> str:
    """The wheel file name `pip wheel` gives a distribution of this repository (pure Python)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    return f"{re.sub(r'[-_.]+', '_', meta['name']).lower()}-{meta['version']}-py3-none-any.whl"


def _expected_dist() -> list[str]:
    version = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())["version"]
    return [_wheel(p) for p in DISTRIBUTIONS] + [f"palette_provision-appliance-{version}.tar.gz"]


def test_the_requirements_name_what_prepare_builds() -> None:
    requirements = (REPO / "ansible" / "ee" / "requirements.txt").read_text()
    lines = [line for line in requirements.splitlines() if line.strip() and not line.startswith("#")]
    wheels = [_wheel(p) for p in DISTRIBUTIONS]
    # By file, never by name from an index; the core with its PostgreSQL journal driver.
    assert [line.split("@ file:///output/local-wheels/")[1] for line in lines] == wheels
    assert lines[0].startswith("palette-provision[postgresql] @ ")
    galaxy = yaml.safe_load((REPO / "ansible" / "ee" / "requirements.yml").read_text())
    assert galaxy["collections"] == [{"name": f"dist/{_expected_dist()[-1]}", "type": "file"}]
    prepare = REPO / "ansible" / "ee" / "prepare"
    assert prepare.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(prepare)], check=False).returncode == 0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `ansible/ee/prepare` builds, in a folder of its own (``EE_DIST``): the repository's own is untouched."""
    dist = tmp_path_factory.mktemp("ee") / "dist"
    proc = subprocess.run([str(REPO / "ansible" / "ee" / "prepare")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EE_DIST": str(dist)}, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dist


def test_prepare_builds_the_wheels_and_the_collection_the_requirements_name(prepared: Path) -> None:
    assert sorted(p.name for p in prepared.iterdir()) == sorted(_expected_dist())
    wheels = {p.name: zipfile.ZipFile(p) for p in prepared.glob("*.whl")}
    core = wheels[_wheel(REPO)].namelist()
    # The package data a wheel must carry: the report's JSON Schema and the type marker.
    assert "palette_provision/schemas/report.schema.json" in core and "palette_provision/py.typed" in core
    for project, name in ((REPO / "providers" / "vsphere", "vsphere"), (REPO / "providers" / "baremetal", "baremetal"),
                          (REPO / "providers" / "maas", "maas")):  # fmt: skip
        wheel = wheels[_wheel(project)]
        [points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = wheel.read(points).decode()
        # Registered as a third party's provider would be: the entry point group the core reads.
        assert "[palette_provision.providers]" in text and re.search(rf"^{name} = ", text, re.M), text
    tarball = prepared / _expected_dist()[-1]
    listing = subprocess.run(["tar", "-tzf", str(tarball)], capture_output=True, text=True, check=True).stdout
    assert "plugins/modules/deployment.py" in listing and "plugins/inventory/journal.py" in listing


def test_ansible_builder_writes_the_build_context(tmp_path: Path, prepared: Path) -> None:
    spec = yaml.safe_load(EE.read_text())
    assert spec["version"] == 3
    assert spec["dependencies"]["ansible_core"]["package_pip"] == "ansible-core>=2.17,<2.20"
    assert spec["dependencies"]["ansible_runner"]["package_pip"].startswith("ansible-runner")
    # The folder as `ansible/ee/prepare` leaves it, with what it really built.
    folder = tmp_path / "ansible"
    shutil.copytree(REPO / "ansible" / "ee", folder / "ee", ignore=shutil.ignore_patterns("dist"))
    shutil.copy(EE, folder / EE.name)
    shutil.copytree(prepared, folder / "ee" / "dist")
    context = tmp_path / "context"
    proc = run(["ansible-builder", "create", "-f", str(folder / EE.name), "-c", str(context),
                "--output-filename", "Containerfile"], ansible_env(tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core>=2.17,<2.20 ansible-runner>=2.3"' in containerfile
    # The wheels reach /output/local-wheels in the builder stage, before introspection and assembly.
    builder = containerfile.split("FROM base AS builder", 1)[1].split("FROM base AS final", 1)[0]
    assert builder.index("COPY _build/dist/*.whl /output/local-wheels/") < builder.index("RUN /output/scripts/assemble")
    assert sorted(p.name for p in (context / "_build" / "dist").iterdir()) == sorted(_expected_dist())
    assert (context / "_build" / "requirements.txt").read_text() == (folder / "ee" / "requirements.txt").read_text()
    assert "openssh-clients" in (context / "_build" / "bindep.txt").read_text()
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert (context / "_build" / galaxy["collections"][0]["name"]).is_file()
