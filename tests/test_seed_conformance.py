"""The seed's conformance table and checker: typos, types, allowed values, unknown and deprecated keys, a real seed."""

from __future__ import annotations

import doctest
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from palette_provision.plan import DeploymentPlan
from palette_provision.secrets import Secret
from palette_provision.seed import HostKey, _conformance, render_user_data
from palette_provision.seed._conformance import (
    RULES,
    SOURCES,
    STAGE_NAMES,
    SeedKeyFinding,
    check_seed_document,
)

CANARY = "canary-7f3a9c-do-not-echo"
DOC = Path(__file__).resolve().parents[1] / "docs" / "seed-conformance.md"


def findings(doc: dict[str, Any], prefix: str = "") -> dict[str, SeedKeyFinding]:
    out = check_seed_document(doc, prefix=prefix)
    by_path = {f.path: f for f in out}
    assert len(by_path) == len(out), out  # one finding per path in these tests
    return by_path


def only(doc: dict[str, Any], prefix: str = "") -> SeedKeyFinding:
    out = check_seed_document(doc, prefix=prefix)
    assert len(out) == 1, out
    return out[0]


# ------------------------------------------------------------------------------------------- the table itself


def test_every_rule_has_a_known_source_and_a_parent_rule() -> None:
    paths = {r.path for r in RULES}
    assert len(paths) == len(RULES)
    for rule in RULES:
        assert rule.source in SOURCES, rule
        assert set(rule.also) <= set(SOURCES), rule
        parent = re.sub(r"(\[\]|\.[^.\[\]]+)$", "", rule.path)
        if parent != rule.path:
            assert parent in paths, f"{rule.path}: no rule for its parent {parent}"


def test_every_closed_mapping_lists_its_keys() -> None:
    paths = {r.path for r in RULES}
    for rule in RULES:
        if "mapping" in rule.kinds and not rule.open:
            assert any(p.startswith((rule.path + ".", rule.path + "[")) for p in paths - {rule.path}), rule.path


def test_sources_name_a_repository_path_and_full_commit() -> None:
    for ref in SOURCES.values():
        assert "/" in ref.repo and ref.paths
        assert re.fullmatch(r"[0-9a-f]{40}", ref.commit)


def test_stage_names_include_the_install_hooks_with_before_and_after() -> None:
    for name in ("initramfs", "boot.after", "before-install", "kairos-install.pre", "kairos-install.pre.before"):
        assert name in STAGE_NAMES


def test_the_doc_lists_every_rule_and_every_source_commit() -> None:
    text = DOC.read_text()
    for rule in RULES:
        assert f"`{rule.path}`" in text, rule.path
    for ref in SOURCES.values():
        assert ref.commit in text


def test_module_doctests_pass() -> None:
    result = doctest.testmod(_conformance, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------- typos are errors


@pytest.mark.parametrize(
    ("doc", "path", "suggestion"),
    [
        ({"stylus": {"site": {"hostname": "n1"}}}, "stylus.site.hostname", "hostName"),
        ({"stylus": {"localui": {"port": 5080}}}, "stylus.localui", "localUI"),
        (
            {"stylus": {"site": {"network": {"interfaces": {"eth0": {"type": "static", "ipadress": "x"}}}}}},
            "stylus.site.network.interfaces.eth0.ipadress",
            "ipAddress",
        ),
        ({"install": {"powerof": True}}, "install.powerof", "poweroff"),
        ({"stages": {"initramfs": [{"systctl": {"a": "1"}}]}}, "stages.initramfs[0].systctl", "sysctl"),
        ({"stages": {"initrams": []}}, "stages.initrams", "initramfs"),
        (
            {"stages": {"boot": [{"files": [{"path": "/x", "owner_string": "a"}]}]}},
            "stages.boot[0].files[0].owner_string",
            "ownerstring",
        ),
    ],
)
def test_a_near_miss_of_a_known_key_is_an_error_naming_the_key(doc: dict[str, Any], path: str, suggestion: str) -> None:
    finding = only(doc)
    assert finding.severity == "error"
    assert finding.path == path
    assert f"did you mean `{suggestion}`?" in finding.message


def test_a_case_only_difference_says_keys_are_case_sensitive() -> None:
    assert "case-sensitive" in only({"stylus": {"site": {"hostname": "n1"}}}).message


# ------------------------------------------------------------------------------------------- types and values


@pytest.mark.parametrize(
    ("doc", "path", "expected"),
    [
        ({"stylus": {"localUI": {"port": "5080"}}}, "stylus.localUI.port", "must be an integer, got a string"),
        ({"install": {"auto": "yes"}}, "install.auto", "must be a boolean, got a string"),
        ({"install": {"poweroff": 1}}, "install.poweroff", "must be a boolean, got an integer"),
        ({"stages": {"initramfs": {"files": []}}}, "stages.initramfs", "must be a list, got a mapping"),
        (
            {"stylus": {"site": {"ntpServers": {"a": 1}}}},
            "stylus.site.ntpServers",
            "must be a string or a list of strings",
        ),
        ({"stylus": {"enableMultiNode": "true"}}, "stylus.enableMultiNode", "must be a boolean, got a string"),
    ],
)
def test_a_wrong_type_is_an_error_naming_the_expected_type(doc: dict[str, Any], path: str, expected: str) -> None:
    finding = only(doc)
    assert (finding.severity, finding.path) == ("error", path)
    assert expected in finding.message


def test_both_published_forms_of_ntp_servers_are_accepted() -> None:
    assert check_seed_document({"stylus": {"site": {"ntpServers": "pool.ntp.org"}}}) == []
    assert check_seed_document({"stylus": {"site": {"ntpServers": ["a.example", "b.example"]}}}) == []


def test_a_non_string_item_of_a_list_of_strings_is_an_error_at_the_item() -> None:
    finding = only({"stages": {"boot": [{"commands": ["true", {"x": 1}]}]}})
    assert finding == SeedKeyFinding("stages.boot[0].commands[1]", "must be a string, got a mapping", "error")


def test_a_number_where_a_string_is_published_is_a_warning() -> None:
    finding = only({"stylus": {"site": {"network": {"interfaces": {"eth0": {"mask": 24}}}}}})
    assert finding.severity == "warning" and "typed as a string" in finding.message


@pytest.mark.parametrize(
    ("doc", "path", "allowed"),
    [
        ({"stylus": {"managementMode": "remote"}}, "stylus.managementMode", "local, central"),
        (
            {"stylus": {"site": {"network": {"interfaces": {"eth0": {"type": "manual"}}}}}},
            "stylus.site.network.interfaces.eth0.type",
            "dhcp, static",
        ),
    ],
)
def test_a_value_outside_the_allowed_ones_is_an_error_listing_them(
    doc: dict[str, Any], path: str, allowed: str
) -> None:
    finding = only(doc)
    assert (finding.severity, finding.path) == ("error", path)
    assert finding.message == f"must be one of: {allowed}"


def test_a_value_not_of_the_published_form_is_an_error() -> None:
    finding = only({"install": {"device": "sda"}})
    assert (finding.severity, finding.path) == ("error", "install.device")
    assert check_seed_document({"install": {"device": "/dev/sda"}}) == []
    assert check_seed_document({"install": {"device": "auto"}}) == []


def test_poweroff_and_reboot_both_true_is_an_error() -> None:
    finding = only({"install": {"poweroff": True, "reboot": True}})
    assert (finding.severity, finding.path) == ("error", "install")


# ------------------------------------------------------------------------------------------- warnings


def test_an_unknown_key_is_a_warning_naming_it() -> None:
    finding = only({"stylus": {"site": {"favouriteColour": "blue"}}})
    assert finding.severity == "warning"
    assert finding.path == "stylus.site.favouriteColour"
    assert "`favouriteColour` is not in the published references" in finding.message
    assert "may still accept it" in finding.message


def test_an_unknown_top_level_key_and_an_unknown_stage_name_are_warnings() -> None:
    out = findings({"my-tool": {"a": 1}, "stages": {"my-own-stage": [{"commands": ["true"]}]}})
    assert {p: f.severity for p, f in out.items()} == {"my-tool": "warning", "stages.my-own-stage": "warning"}
    assert "stage names" in out["stages.my-own-stage"].message


def test_the_deprecated_include_tui_is_a_warning() -> None:
    finding = only({"stylus": {"includeTui": False}})
    assert (finding.severity, finding.path) == ("warning", "stylus.includeTui")
    assert "deprecated" in finding.message


def test_a_schema_spelling_the_agent_does_not_read_is_a_warning() -> None:
    finding = only({"install": {"no_format": True}})
    assert (finding.severity, finding.path) == ("warning", "install.no_format")
    assert "no-format" in finding.message


# ------------------------------------------------------------------------------------------- walking


def test_list_items_are_reported_with_their_index() -> None:
    doc = {"stages": {"initramfs": [{"name": "a"}, {"files": [{"path": "/a"}, {"path": "/b", "permissions": "0600"}]}]}}
    finding = only(doc)
    assert finding.path == "stages.initramfs[1].files[1].permissions"
    assert finding.message == "must be an integer, got a string"


def test_stage_names_with_dots_and_hooks_are_walked() -> None:
    doc = {"stages": {"kairos-install.pre.before": [{"name": "wipe", "commands": ["wipefs -a /dev/sda"], "iff": "x"}]}}
    finding = only(doc)
    assert finding.path == "stages.kairos-install.pre.before[0].iff"
    assert finding.severity == "error" and "`if`" in finding.message


def test_open_mappings_take_any_key() -> None:
    doc = {
        "stylus": {
            "site": {"tags": {"Anything": {"at": ["all"]}}},
            "externalRegistries": {"registryMappingRules": {"gcr.io/x": "example.com/y"}},
        },
        "install": {"grub_options": {"extra_cmdline": {"console": "ttyS0"}}},
        "stages": {"boot": [{"environment": {"FOO": "bar"}, "sysctl": {"vm.swappiness": "10"}}]},
    }
    assert check_seed_document(doc) == []


def test_user_and_nic_names_are_free() -> None:
    doc = {
        "stages": {"initramfs": [{"users": {"whoever": {"passwd": "x", "groups": ["admin"], "lock_passwd": True}}}]},
        "stylus": {"site": {"network": {"interfaces": {"enp0s31f6": {"type": "dhcp"}}}}},
    }
    assert check_seed_document(doc) == []


def test_null_values_are_not_type_errors() -> None:
    assert check_seed_document({"install": {"ephemeral_mounts": None}}) == []


def test_the_prefix_goes_before_every_path() -> None:
    finding = only({"stylus": {"localUI": {"port": "x"}}}, prefix="user_data_extra.")
    assert finding.path == "user_data_extra.stylus.localUI.port"


def test_no_message_contains_the_offending_value() -> None:
    doc = {
        "stylus": {
            "managementMode": CANARY,
            "localUI": {"port": CANARY},
            "site": {
                "hostname": CANARY,
                "prefix": CANARY + "!",
                "colour": CANARY,
                "ntpServers": [CANARY, {"a": CANARY}],
            },
            "includeTui": CANARY,
        },
        "install": {"auto": CANARY, "device": CANARY, "reboot": True, "poweroff": True},
        "stages": {"boot": [{"commands": [{"k": CANARY}], "files": [{"encoding": CANARY, "owner": CANARY}]}]},
    }
    out = check_seed_document(doc, prefix="user_data_extra.")
    assert len(out) >= 12
    for finding in out:
        assert CANARY not in str(finding), finding
        assert CANARY not in repr(finding), finding


# ------------------------------------------------------------------------------------------- a real seed


def make_plan(**overrides: Any) -> DeploymentPlan:
    data: dict[str, Any] = {
        "name": "lab",
        "iso": {"source": "/srv/palette.iso"},
        "cluster": {
            "name": "pal",
            "vip": "10.251.0.100",
            "dns": ["10.251.0.1"],
            "ntp": ["ntp.example.org"],
            "ssh_public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop a@b"],
            "node_account": {"username": "kairos", "password": Secret("conformance-test-pw", source="test")},
        },
        "nodes": {
            "count": 1,
            "size": "small",
            "network": {"mode": "static", "addresses": ["10.251.0.11/24"], "gateway": "10.251.0.1"},
        },
        "platform": {"provider": "fake"},
    }
    data.update(overrides)
    return DeploymentPlan.model_validate(data)


NICS = ["eth0", "ens192", "enp0s31f6"]
OVERRIDES: list[dict[str, Any]] = [
    {},
    {"install": {"grub_options": {"extra_cmdline": "console=ttyS0"}}},
    {"stylus": {"site": {"ntpServers": ["10.0.0.1"], "tags": {"rack": "r12"}}, "debug": True}},
    {"stages": {"boot": [{"name": "motd", "files": [{"path": "/etc/motd", "content": "hi"}]}]}},
]
MATRIX = [
    (profile, network, nic, i, wipe)
    for profile in ("appliance", "edge")
    for network in ("static", "dhcp")
    for nic in NICS
    for i in range(len(OVERRIDES))
    for wipe in (False, True)
    if (NICS.index(nic) + i) % 2 == int(wipe)  # every NIC and override, each with and without the wipe step
]


@pytest.mark.parametrize(("profile", "network", "nic", "override", "wipe"), MATRIX)
def test_every_seed_of_the_matrix_conforms(profile: str, network: str, nic: str, override: int, wipe: bool) -> None:
    """Appliance and edge, static and DHCP, every NIC naming, user overrides, the wipe step: every key of every
    rendered seed is in the conformance table, of the published type and allowed value, with no warning."""
    net: dict[str, Any] = {"mode": network, "interface": nic}
    if network == "static":
        net.update(addresses=["10.251.0.11/24", "10.251.0.12/24", "10.251.0.13/24"], gateway="10.251.0.1")
    count = 3 if profile == "appliance" else 2
    plan = make_plan(
        profile=profile,
        nodes={"count": count, "size": "small", "network": net, "install_disk": "/dev/disk/by-path/pci-0-ata-1",
               "wipe_install_disk": wipe},
        user_data_extra=OVERRIDES[override],
    )  # fmt: skip
    for node in plan.node_specs():
        doc = yaml.safe_load(render_user_data(plan, node, HostKey.generate()))
        assert check_seed_document(doc) == [], (profile, network, nic, override, wipe)
        assert doc["stylus"]["site"]["hostName"] == node.name
        assert ("kairos-install.pre" in doc["stages"]) is wipe
