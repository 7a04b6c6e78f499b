"""The AWX / Automation Platform execution environment: ansible-builder accepts ansible/execution-environment.yml and
writes its build context (`ansible-builder create`, no container engine needed); the files it installs are the
ones ansible/ee/prepare builds, at the versions of the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

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


def test_ansible_builder_writes_the_build_context(tmp_path: Path) -> None:
    spec = yaml.safe_load(EE.read_text())
    assert spec["version"] == 3
    assert spec["dependencies"]["ansible_core"]["package_pip"] == "ansible-core>=2.17,<2.20"
    assert spec["dependencies"]["ansible_runner"]["package_pip"].startswith("ansible-runner")
    # What `ansible/ee/prepare` leaves in ansible/ee/dist, stood in for (building wheels needs an index).
    folder = tmp_path / "ansible"
    shutil.copytree(REPO / "ansible" / "ee", folder / "ee", ignore=shutil.ignore_patterns("dist"))
    shutil.copy(EE, folder / EE.name)
    (folder / "ee" / "dist").mkdir()
    for name in _expected_dist():
        (folder / "ee" / "dist" / name).write_bytes(b"stand-in")
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
