"""The collection's sanity, without containers: ansible-doc on every plugin; DOCUMENTATION, EXAMPLES and RETURN parse
and match the argument specs; ansible-test's own validate-modules, runtime-metadata, code-smell, yamllint and pylint
checks (run straight from the installed ansible-test, with its configurations and pylint plugins: `ansible-test
sanity` itself wants to bootstrap pip into fresh venvs from the network); compile and import checks; and
`ansible-galaxy collection build`, whose tarball installs and documents itself."""

from __future__ import annotations

import ast
import importlib
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import ansible

from .conftest import BIN, COLLECTION, COLLECTIONS, NAMESPACE, ansible_env, run

MODULES = ["deployment", "deployment_info"]
INVENTORY = ["journal"]
PLUGIN_FILES = [f"plugins/modules/{m}.py" for m in MODULES] + [f"plugins/inventory/{i}.py" for i in INVENTORY]
#: Options every inventory plugin with the `constructed` fragment has.
CONSTRUCTED = {"compose", "groups", "keyed_groups", "strict", "use_extra_vars", "leading_separator"}


def _docs(path: Path) -> dict[str, Any]:
    """DOCUMENTATION, EXAMPLES and RETURN of a plugin file, as text, read the way ansible-doc does (no import)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
            assert isinstance(node.value, ast.Constant)  # type: ignore[union-attr]
            found[target.id] = node.value.value  # type: ignore[union-attr]
    return found


def _descriptions(doc: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every ``description`` in a doc tree, with where it is."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "description":
                yield where, value
            else:
                yield from _descriptions(value, f"{where}.{key}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _descriptions(value, f"{where}[{i}]")


@pytest.fixture(scope="module")
def modules() -> Iterator[dict[str, Any]]:
    """The modules, imported from the repository (their ``_argument_spec()``)."""
    sys.path.insert(0, str(COLLECTIONS))
    try:
        yield {m: importlib.import_module(f"ansible_collections.palette_provision.appliance.plugins.modules.{m}")
               for m in MODULES}
    finally:
        sys.path.remove(str(COLLECTIONS))


@pytest.mark.parametrize(("kind", "name"), [("module", m) for m in MODULES] + [("inventory", i) for i in INVENTORY])
def test_ansible_doc_shows_every_plugin(kind: str, name: str, tmp_path: Path) -> None:
    env = ansible_env(tmp_path)
    text = run(["ansible-doc", "-t", kind, f"{NAMESPACE}.{name}"], env, tmp_path)
    assert text.returncode == 0, text.stderr
    assert "WARNING" not in text.stderr and "ERROR" not in text.stderr, text.stderr
    assert f"{NAMESPACE}.{name}" in text.stdout and "OPTIONS" in text.stdout and "EXAMPLES" in text.stdout
    as_json = run(["ansible-doc", "-t", kind, "--json", f"{NAMESPACE}.{name}"], env, tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)[f"{NAMESPACE}.{name}"]
    assert doc["doc"]["short_description"] and doc["examples"]
    if kind == "module":
        assert doc["return"] and "plan_file" in doc["doc"]["options"]
    listed = run(["ansible-doc", "-t", kind, "-l", NAMESPACE], env, tmp_path)
    assert f"{NAMESPACE}.{name}" in listed.stdout


@pytest.mark.parametrize("name", MODULES)
def test_module_docs_parse_and_match_the_argument_spec(name: str, modules: dict[str, Any]) -> None:
    docs = _docs(COLLECTION / "plugins" / "modules" / f"{name}.py")
    documentation = yaml.safe_load(docs["DOCUMENTATION"])
    returns = yaml.safe_load(docs["RETURN"])
    examples = yaml.safe_load(docs["EXAMPLES"])
    assert documentation["module"] == name and documentation["short_description"]
    for where, description in _descriptions_list(documentation, "DOCUMENTATION") + _descriptions_list(returns, "RETURN"):
        assert isinstance(description, str) or (
            isinstance(description, list) and all(isinstance(d, str) for d in description)), where

    spec = modules[name]._argument_spec()
    options = documentation["options"]
    assert set(options) == set(spec)
    for option, rules in spec.items():
        doc = options[option]
        assert doc.get("type", "str") == rules.get("type", "str"), option
        assert doc.get("default") == rules.get("default"), option
        assert doc.get("choices") == rules.get("choices"), option
        assert doc.get("elements") == rules.get("elements"), option
        assert bool(doc.get("required")) == bool(rules.get("required")), option
        secret_like = re.search(r"secret|pass|token|key", option)
        assert not secret_like or rules.get("no_log") is True, f"{option} looks secret: no_log"

    for key, value in returns.items():
        assert {"description", "returned", "type"} <= set(value), key
        assert "sample" in value or value["type"] == "dict" and "contains" in value, key

    assert isinstance(examples, list) and examples
    for task in examples:
        fqcn = f"{NAMESPACE}.{name}"
        if fqcn in task:
            assert set(task[fqcn]) <= set(spec), task["name"]


def _descriptions_list(doc: Any, where: str) -> list[tuple[str, Any]]:
    return list(_descriptions(doc, where))


def test_inventory_docs_parse_and_match_the_options_read() -> None:
    path = COLLECTION / "plugins" / "inventory" / "journal.py"
    docs = _docs(path)
    documentation = yaml.safe_load(docs["DOCUMENTATION"])
    assert documentation["name"] == "journal" and documentation["options"]["plugin"]["choices"] == [
        f"{NAMESPACE}.journal"]
    for where, description in _descriptions_list(documentation, "DOCUMENTATION"):
        assert isinstance(description, str) or all(isinstance(d, str) for d in description), where
    read = set(re.findall(r"get_option\(\"(\w+)\"\)", path.read_text()))
    assert read <= set(documentation["options"]) | CONSTRUCTED, read - set(documentation["options"])
    assert set(documentation["options"]) - {"plugin"} <= read  # every documented option is used
    configs = [c for c in yaml.safe_load_all(docs["EXAMPLES"]) if c]
    assert len(configs) == 2
    for config in configs:
        assert config["plugin"] == f"{NAMESPACE}.journal"
        assert set(config) <= set(documentation["options"]) | CONSTRUCTED


# --------------------------------------------------------------------------------------------- ansible-test's checks
ANSIBLE_TEST = Path(ansible.__file__).resolve().parent.parent / "ansible_test"
SANITY = ANSIBLE_TEST / "_util" / "controller" / "sanity"


def _ignored() -> set[tuple[str, str]]:
    """The collection's ignore file for this ansible-core (path, check), as `ansible-test sanity` reads it."""
    major_minor = ".".join(ansible.__version__.split(".")[:2])  # type: ignore[attr-defined]
    ignore = COLLECTION / "tests" / "sanity" / f"ignore-{major_minor}.txt"
    assert ignore.is_file(), f"no {ignore.name}: add one for ansible-core {major_minor}"
    entries = set()
    for line in ignore.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, check = line.split("#")[0].split()
            entries.add((path, check))
    return entries


def _validate_modules(collection: Path, tmp_path: Path) -> list[tuple[str, str, str]]:
    """ansible-test's validate-modules (with --arg-spec: it imports each module and compares its argument spec with
    its DOCUMENTATION), run as ``ansible-test sanity --test validate-modules`` runs it, on each plugin type."""
    version = yaml.safe_load((collection / "galaxy.yml").read_text())["version"]
    found = []
    for plugin_type, files in (("modules", PLUGIN_FILES[:2]), ("inventory", PLUGIN_FILES[2:])):
        argv = [sys.executable, str(SANITY / "validate-modules" / "validate.py"), "--format", "json", "--arg-spec",
                "--collection", "ansible_collections/palette_provision/appliance", "--collection-version", version]
        if plugin_type != "modules":
            argv += ["--plugin-type", plugin_type]
        env = ansible_env(tmp_path, ANSIBLE_COLLECTIONS_PATH=str(collection.parents[2]))
        proc = subprocess.run([*argv, *files], capture_output=True, text=True, cwd=collection, env=env, timeout=300,
                              check=False)
        assert proc.returncode in (0, 3) and not proc.stderr, proc.stderr[-3000:]
        for path, result in json.loads(proc.stdout).items():
            found.extend((path, f"validate-modules:{e['code']}", e["msg"]) for e in result["errors"])
    return found


def test_validate_modules(tmp_path: Path) -> None:
    ignored = _ignored()
    errors = [e for e in _validate_modules(COLLECTION, tmp_path) if (e[0], e[1]) not in ignored]
    assert errors == []
    # The ignore file lists nothing validate-modules does not report (as ansible-test insists).
    reported = {(e[0], e[1]) for e in _validate_modules(COLLECTION, tmp_path)}
    assert {i for i in ignored if i[1].startswith("validate-modules:")} <= reported


def test_validate_modules_catches_a_doc_that_drifts_from_the_argument_spec(tmp_path: Path) -> None:
    copy = tmp_path / "ansible_collections" / "palette_provision" / "appliance"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = copy / "plugins" / "modules" / "deployment.py"
    text = module.read_text()
    start = text.index("  purge_media:\n")
    module.write_text(text[:start] + text[text.index("  secret_env:\n"):])  # purge_media no longer documented
    codes = {(e[0], e[1]) for e in _validate_modules(copy, tmp_path)}
    assert ("plugins/modules/deployment.py", "validate-modules:undocumented-parameter") in codes


def _yamllint(collection: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """ansible-test's yamllint check, run as it runs it: its own linter script and configurations, on the collection's
    YAML files and on the YAML blocks (DOCUMENTATION, EXAMPLES, RETURN) of its Python plugins."""
    paths = sorted(str(p.relative_to(collection)) for p in collection.rglob("*")
                   if p.suffix in (".yml", ".yaml", ".py") and "__pycache__" not in p.parts
                   and (p.suffix != ".py" or p.relative_to(collection).parts[0] == "plugins"))  # fmt: skip
    assert "plugins/modules/deployment.py" in paths and "galaxy.yml" in paths
    proc = subprocess.run([sys.executable, str(SANITY / "yamllint" / "yamllinter.py"), *paths], capture_output=True,
                          text=True, cwd=collection, env=ansible_env(tmp_path), timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0 and not proc.stderr, proc.stdout + proc.stderr
    messages: list[dict[str, Any]] = json.loads(proc.stdout)["messages"]
    return messages


def test_yamllint_as_ansible_test_runs_it(tmp_path: Path) -> None:
    assert _yamllint(COLLECTION, tmp_path) == []
    # It reads the plugins' documentation blocks: a key given twice in a module's DOCUMENTATION is reported.
    copy = tmp_path / "ansible_collections" / "palette_provision" / "appliance"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = copy / "plugins" / "modules" / "deployment_info.py"
    text = module.read_text()
    module.write_text(text.replace("short_description:", "short_description: said twice\nshort_description:", 1))
    found = _yamllint(copy, tmp_path)
    assert [(m["path"], m["code"]) for m in found] == [("plugins/modules/deployment_info.py", "key-duplicates")], found


def _pylint(collection: Path, paths: list[str], tmp_path: Path) -> list[dict[str, Any]]:
    """ansible-test's pylint check as it runs it for a collection: its collection.cfg, its pylint plugins and the
    environment they read (the plugin folders, the collection's name and path)."""
    config = SANITY / "pylint"
    env = ansible_env(tmp_path, PYLINTHOME=str(tmp_path / "pylint-home"),
                      ANSIBLE_TEST_MODULES_PATH=f"{collection / 'plugins' / 'modules'}{os.sep}",
                      ANSIBLE_TEST_MODULE_UTILS_PATH=f"{collection / 'plugins' / 'module_utils'}{os.sep}")  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(config / "plugins"), str(collection.parents[2])])
    plugins = sorted(p.stem for p in (config / "plugins").glob("*.py"))
    proc = subprocess.run(
        [sys.executable, "-m", "pylint", "--py-version", "3.10", "--rcfile", str(config / "config" / "collection.cfg"),
         "--load-plugins", ",".join(plugins), "--collection-name", NAMESPACE, "--collection-path", str(collection),
         "--jobs", "1", "--reports", "n", "--output-format", "json", *paths],
        capture_output=True, text=True, cwd=collection, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode < 32 and not proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]  # 32: usage error
    messages: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return messages


def test_pylint_as_ansible_test_runs_it(tmp_path: Path) -> None:
    paths = sorted(str(p.relative_to(COLLECTION)) for p in (COLLECTION / "plugins").rglob("*.py"))
    assert "plugins/module_utils/common.py" in paths and "plugins/inventory/journal.py" in paths
    assert [(m["path"], m["symbol"], m["line"]) for m in _pylint(COLLECTION, paths, tmp_path)] == []
    # It reads the code: a name used but never defined in a module is reported.
    copy = tmp_path / "ansible_collections" / "palette_provision" / "appliance"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = copy / "plugins" / "modules" / "deployment_info.py"
    module.write_text(module.read_text() + "\n\ndef _broken():\n    return never_defined\n")
    found = _pylint(copy, ["plugins/modules/deployment_info.py"], tmp_path)
    assert [(m["path"], m["symbol"]) for m in found] == [("plugins/modules/deployment_info.py", "undefined-variable")]


def _pep8(collection: Path) -> list[str]:
    """ansible-test's pep8 check as it runs it: pycodestyle, 160 columns, no configuration file, its ignore list."""
    listed = (SANITY / "pep8" / "current-ignore.txt").read_text().splitlines()
    ignore = sorted(line.strip() for line in listed if line.strip() and not line.startswith("#"))
    paths = sorted(str(p.relative_to(collection)) for p in collection.rglob("*.py") if "__pycache__" not in p.parts)
    proc = subprocess.run([sys.executable, "-m", "pycodestyle", "--max-line-length", "160", "--config", "/dev/null",
                           "--ignore", ",".join(ignore), *paths],
                          capture_output=True, text=True, cwd=collection, timeout=120, check=False)  # fmt: skip
    assert proc.returncode in (0, 1) and not proc.stderr, proc.stderr
    return proc.stdout.splitlines()


def test_pep8_as_ansible_test_runs_it(tmp_path: Path) -> None:
    assert _pep8(COLLECTION) == []
    copy = tmp_path / "ansible_collections" / "palette_provision" / "appliance"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = copy / "plugins" / "modules" / "deployment_info.py"
    module.write_text(module.read_text() + "\n\nTOO_LONG = '" + "x" * 160 + "'\n")
    assert [line.split(" ")[1] for line in _pep8(copy)] == ["E501"]


def _targets(config: dict[str, Any], files: list[str]) -> list[str]:
    """The files a code-smell check applies to, by its JSON configuration (ansible-test's own filter)."""
    chosen = []
    for path in files:
        if config.get("prefixes") and not any(path.startswith(p) for p in config["prefixes"]):
            continue
        if config.get("extensions") and not any(path.endswith(e) for e in config["extensions"]):
            continue
        if config.get("files") and Path(path).name not in config["files"]:
            continue
        chosen.append(path)
    return chosen


def test_runtime_metadata_and_code_smells(tmp_path: Path) -> None:
    files = sorted(str(p.relative_to(COLLECTION)) for p in COLLECTION.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)
    ignored = _ignored()
    ran = []
    for script in sorted((SANITY / "code-smell").glob("*.py")):
        config = json.loads(script.with_suffix(".json").read_text())
        if config.get("intercept") or config.get("disabled"):
            continue  # the changelog check runs antsibull-changelog, which this collection does not use
        targets = files if config.get("all_targets") else _targets(config, files)
        if not targets:
            continue
        env = ansible_env(tmp_path, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS))
        proc = subprocess.run([sys.executable, str(script), *targets], capture_output=True, text=True,
                              cwd=COLLECTION, env=env, timeout=120, check=False)
        problems = [line for line in proc.stdout.splitlines()
                    if (line.split(":")[0], script.stem) not in ignored]
        assert proc.returncode == 0 or not problems, (script.name, proc.stdout, proc.stderr)
        assert problems == [] and not proc.stderr, (script.name, problems, proc.stderr)
        ran.append(script.stem)
    assert {"runtime-metadata", "shebang", "no-assert", "line-endings", "use-argspec-type-path"} <= set(ran), ran
    requires = yaml.safe_load((COLLECTION / "meta" / "runtime.yml").read_text())["requires_ansible"]
    assert requires == ">=2.17.0"


def test_galaxy_build_installs_and_documents_itself(tmp_path: Path) -> None:
    env = ansible_env(tmp_path)
    built = run(["ansible-galaxy", "collection", "build", str(COLLECTION), "--output-path", str(tmp_path / "dist")],
                env, tmp_path)
    assert built.returncode == 0, built.stderr
    version = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())["version"]
    tarball = tmp_path / "dist" / f"palette_provision-appliance-{version}.tar.gz"
    assert tarball.is_file()
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
    assert {"plugins/modules/deployment.py", "plugins/modules/deployment_info.py", "plugins/inventory/journal.py",
            "plugins/module_utils/common.py", "meta/runtime.yml", "README.md"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert manifest["collection_info"]["namespace"] == "palette_provision"
    assert manifest["collection_info"]["name"] == "appliance"
    assert manifest["collection_info"]["license"] == ["Apache-2.0"]

    installed = tmp_path / "installed"
    from_tarball = ansible_env(tmp_path, ANSIBLE_COLLECTIONS_PATH=str(installed))  # the repository's copy unseen
    install = run(["ansible-galaxy", "collection", "install", str(tarball), "-p", str(installed)], from_tarball,
                  tmp_path)
    assert install.returncode == 0, install.stderr
    assert (installed / "ansible_collections" / "palette_provision" / "appliance" / "MANIFEST.json").is_file()
    doc = run(["ansible-doc", f"{NAMESPACE}.deployment"], from_tarball, tmp_path)
    assert doc.returncode == 0 and str(installed) in doc.stdout, doc.stderr


def test_the_commands_are_the_venvs() -> None:
    # The tests run the venv's ansible-* next to this Python: the collection and the library share one Python.
    for command in ("ansible-playbook", "ansible-inventory", "ansible-doc", "ansible-galaxy", "ansible-builder"):
        assert (BIN / command).is_file(), command


def _plugin_sources() -> list[Path]:
    return sorted(p for p in (COLLECTION / "plugins").rglob("*.py") if "__pycache__" not in p.parts)


def test_compile_every_plugin_file(tmp_path: Path) -> None:
    """ansible-test's ``compile`` check: every plugin and module_utils file byte-compiles (into tmp_path, so no
    ``__pycache__`` lands in the repository)."""
    sources = _plugin_sources()
    assert {p.parent.name for p in sources} == {"modules", "inventory", "module_utils"}
    for i, source in enumerate(sources):
        py_compile.compile(str(source), cfile=str(tmp_path / f"{i}.pyc"), doraise=True)


#: Runs a module as Ansible would on a host without the library: sys.path holds the standard library, ansible's
#: package and the collection only. First an import (ansible-test's ``import`` check: no ImportError escapes), then
#: main() with plan_file set (its arguments on stdin, as for a module run by hand), which must end in fail_json
#: through missing_required_lib.
WITHOUT_LIBRARY = r"""
import importlib.util, runpy, sys
sys.path[:] = [p for p in sys.path if p and "-packages" not in p] + sys.argv[2:4]
assert importlib.util.find_spec("palette_provision") is None, "the library is reachable"
sys.argv[:] = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="sanity_import")
print("IMPORTED", flush=True)
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    print("EXIT", exc.code, flush=True)
"""


@pytest.mark.parametrize("name", MODULES)
def test_modules_import_without_the_library_and_fail_with_missing_required_lib(name: str, tmp_path: Path) -> None:
    only = tmp_path / "only"
    only.mkdir()
    (only / "ansible").symlink_to(Path(ansible.__file__).parent, target_is_directory=True)
    module = COLLECTION / "plugins" / "modules" / f"{name}.py"
    args = json.dumps({"ANSIBLE_MODULE_ARGS": {"plan_file": "/nonexistent/plan.yaml"}})
    proc = subprocess.run([sys.executable, "-S", "-c", WITHOUT_LIBRARY, str(module), str(only), str(COLLECTIONS)],
                          input=args, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines[0] == "IMPORTED" and lines[-1] == "EXIT 1", proc.stdout + proc.stderr
    result = json.loads(lines[1])
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to import the required Python library (palette-provision)")
    assert "ansible_python_interpreter" in result["msg"]


INVENTORY_WITHOUT_LIBRARY = r"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "palette_provision":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Missing())
sys.path.insert(0, sys.argv[1])
from ansible.errors import AnsibleParserError
from ansible_collections.palette_provision.appliance.plugins.inventory import journal
try:
    journal.InventoryModule()._from_journal("/nonexistent/plan.yaml", None)
except AnsibleParserError as exc:
    print("REFUSED", exc, flush=True)
"""


def test_inventory_plugin_imports_without_the_library_and_names_it_for_plan_file(tmp_path: Path) -> None:
    # On the controller, with ansible and its own requirements; the library made unimportable.
    proc = subprocess.run([sys.executable, "-c", INVENTORY_WITHOUT_LIBRARY, str(COLLECTIONS)], capture_output=True,
                          text=True, timeout=60, check=False, cwd=tmp_path,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("REFUSED plan_file needs the palette-provision library"), proc.stdout
    assert "output_dir does not" in proc.stdout
