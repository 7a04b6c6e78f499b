"""The seed: user-data per docs/seed-format.md, packed as a reproducible NoCloud ``cidata`` ISO, secrets hashed."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palette_provision.errors import PlanError
from palette_provision.journal import Journal
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.secrets import Secret
from palette_provision.seed import (
    SEED_ROUNDS,
    HostKey,
    SeedModel,
    build_seed_iso,
    render_meta_data,
    render_user_data,
    sha512_crypt,
    write_seed,
    write_seeds,
)
from palette_provision.seed._conformance import check_seed_document
from palette_provision.seed._extra import deep_merge
from palette_provision.seed._hostkey import ssh_fingerprint

PASSWORD = "correct-horse-battery-staple"
USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop admin@laptop"


def make_plan(**overrides: Any) -> DeploymentPlan:
    data: dict[str, Any] = {
        "name": "lab",
        "iso": {"source": "/srv/palette.iso"},
        "cluster": {
            "name": "pal",
            "vip": "10.251.0.100",
            "dns": ["10.251.0.1", "1.1.1.1"],
            "ntp": ["ntp.example.org"],
            "ssh_public_keys": [USER_KEY],
            "node_account": {"username": "kairos", "password": Secret(PASSWORD, source="test")},
        },
        "nodes": {
            "count": 3,
            "size": "small",
            "network": {
                "mode": "static",
                "addresses": ["10.251.0.11/24", "10.251.0.12/24", "10.251.0.13/24"],
                "gateway": "10.251.0.1",
            },
        },
        "platform": {"provider": "fake"},
    }
    data.update(overrides)
    return DeploymentPlan.model_validate(data)


@pytest.fixture(scope="module")
def host_key() -> HostKey:
    return HostKey.generate()


@pytest.fixture(scope="module")
def plan() -> DeploymentPlan:
    return make_plan()


def iso_files(iso_bytes: bytes) -> tuple[str, dict[str, bytes], dict[str, bytes]]:
    """Parse an ISO back: (volume label, files by Rock Ridge name, files by Joliet name)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(iso_bytes))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        by_rr: dict[str, bytes] = {}
        by_joliet: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            by_rr[name] = out.getvalue()
        for child in iso.list_children(joliet_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.file_identifier().decode("utf-16_be")
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            by_joliet[name] = out.getvalue()
        return label, by_rr, by_joliet
    finally:
        iso.close()


# ------------------------------------------------------------------------------------------- the ISO


def test_iso_has_the_cidata_label_and_exactly_user_data_and_meta_data(plan: DeploymentPlan, host_key: HostKey) -> None:
    node = plan.node_specs()[0]
    label, by_rr, by_joliet = iso_files(build_seed_iso(plan, node, host_key))
    assert label == "cidata"
    assert set(by_rr) == {"user-data", "meta-data"}
    assert by_joliet == by_rr
    assert by_rr["user-data"].decode() == render_user_data(plan, node, host_key)
    assert yaml.safe_load(by_rr["meta-data"]) == {"instance-id": "lab-pal-1", "local-hostname": "pal-1"}


def test_meta_data_names_the_instance_and_host(plan: DeploymentPlan) -> None:
    node = plan.node_specs()[1]
    assert yaml.safe_load(render_meta_data(plan, node)) == {"instance-id": "lab-pal-2", "local-hostname": "pal-2"}


def test_two_builds_are_byte_identical_whatever_the_clock(
    plan: DeploymentPlan, host_key: HostKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = plan.node_specs()[0]
    first = build_seed_iso(plan, node, host_key)
    later = time.time() + 86_400 * 400
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        second = build_seed_iso(plan, node, host_key)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert first == second


def test_another_host_key_or_node_gives_another_seed(plan: DeploymentPlan, host_key: HostKey) -> None:
    node1, node2 = plan.node_specs()[:2]
    base = build_seed_iso(plan, node1, host_key)
    assert build_seed_iso(plan, node1, HostKey.generate()) != base
    assert build_seed_iso(plan, node2, host_key) != base


def test_a_reloaded_host_key_gives_the_same_seed(plan: DeploymentPlan, host_key: HostKey) -> None:
    node = plan.node_specs()[0]
    reloaded = HostKey.from_private_openssh(host_key.private_openssh.reveal())
    assert build_seed_iso(plan, node, reloaded) == build_seed_iso(plan, node, host_key)


# ------------------------------------------------------------------------------------------- the user-data


def test_user_data_starts_with_cloud_config_and_round_trips_through_yaml(
    plan: DeploymentPlan, host_key: HostKey
) -> None:
    node = plan.node_specs()[0]
    text = render_user_data(plan, node, host_key)
    assert text.splitlines()[0] == "#cloud-config"
    doc = yaml.safe_load(text)
    assert doc == SeedModel.from_plan(plan, node, host_key).to_document()
    assert "hostname" not in doc, "the appliance names the host from stylus.site.hostName"
    assert doc["install"] == {"auto": True, "device": "auto", "poweroff": True, "reboot": False}
    stylus = doc["stylus"]
    assert stylus["managementMode"] == "local"
    assert stylus["enableMultiNode"] is True
    assert stylus["disableTui"] is True and "includeTui" not in stylus  # deprecated in the installer reference
    assert stylus["localUI"] == {"port": 5080}
    assert (stylus["site"]["hostName"], stylus["site"]["name"]) == ("pal-1", "lab-pal-1")
    assert stylus["site"]["ntpServers"] == ["ntp.example.org"]
    assert stylus["site"]["network"]["interfaces"] == {
        "eth0": {"type": "static", "ipAddress": "10.251.0.11/24", "gateway": "10.251.0.1", "nameserver": "10.251.0.1"}
    }


def test_the_install_disk_and_the_wipe_step_come_from_the_plan(host_key: HostKey) -> None:
    plan = make_plan(nodes={"count": 1, "size": "small", "install_disk": "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0",
                            "wipe_install_disk": True})  # fmt: skip
    doc = yaml.safe_load(render_user_data(plan, plan.node_specs()[0], host_key))
    device = "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0"
    assert doc["install"]["device"] == device
    assert doc["stages"]["kairos-install.pre"] == [
        {"name": "palette-provision-wipe-install-disk", "commands": [f"wipefs --all {device}"]}
    ]
    unwiped = make_plan(nodes={"count": 1, "size": "small", "install_disk": "/dev/sda"})
    assert "kairos-install.pre" not in yaml.safe_load(render_user_data(unwiped, unwiped.node_specs()[0], host_key))["stages"]


@pytest.mark.parametrize("value", ["auto", "sda", "/dev/../etc/passwd", "/dev/sda; reboot"])
def test_an_install_disk_that_is_not_a_device_path_is_a_plan_error(value: str) -> None:
    data = {"count": 1, "size": "small", "network": {"mode": "dhcp"}, "install_disk": value}
    with pytest.raises(PlanError) as info:
        parse_plan({**make_plan().model_dump(mode="json", exclude={"nodes"}), "nodes": data,
                    "platform": {"provider": "fake"}})  # fmt: skip
    issues = {i.path: i.message for i in info.value.issues}
    assert "nodes.install_disk" in issues, issues
    assert "reboot" not in issues["nodes.install_disk"] and "etc/passwd" not in issues["nodes.install_disk"]


def test_initramfs_stages_carry_the_account_and_the_host_key(plan: DeploymentPlan, host_key: HostKey) -> None:
    doc = yaml.safe_load(render_user_data(plan, plan.node_specs()[0], host_key))
    users_step, keys_step = doc["stages"]["initramfs"]
    assert users_step["name"] == "palette-provision-users"
    account = users_step["users"]["kairos"]
    assert account["groups"] == ["admin"]
    assert account["ssh_authorized_keys"] == [USER_KEY]
    assert keys_step["name"] == "palette-provision-host-keys"
    private, public = keys_step["files"]
    assert (private["path"], private["permissions"], private["owner"], private["group"]) == (
        "/etc/ssh/ssh_host_ed25519_key", 384, 0, 0)  # fmt: skip
    assert HostKey.from_private_openssh(private["content"]) == host_key
    assert (public["path"], public["permissions"], public["content"]) == (
        "/etc/ssh/ssh_host_ed25519_key.pub", 420, host_key.public_line)  # fmt: skip


def test_private_key_is_a_literal_block_as_the_format_shows(plan: DeploymentPlan, host_key: HostKey) -> None:
    text = render_user_data(plan, plan.node_specs()[0], host_key)
    assert "content: |\n" in text
    assert "-----BEGIN OPENSSH PRIVATE KEY-----\n" in text


def test_dhcp_node_gets_type_dhcp_only(host_key: HostKey) -> None:
    plan = make_plan(nodes={"count": 1, "size": "small", "network": {"mode": "dhcp", "interface": "ens192"}})
    doc = yaml.safe_load(render_user_data(plan, plan.node_specs()[0], host_key))
    assert doc["stylus"]["site"]["network"]["interfaces"] == {"ens192": {"type": "dhcp"}}


# ------------------------------------------------------------------------------------------- secrets


def openssl_crypt(password: str, salt: str) -> str:
    # The password goes through stdin: never on a command line (visible in ps).
    proc = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def test_password_appears_only_as_a_sha512_crypt_hash_that_verifies(plan: DeploymentPlan, host_key: HostKey) -> None:
    node = plan.node_specs()[0]
    iso = build_seed_iso(plan, node, host_key)
    text = render_user_data(plan, node, host_key)
    assert PASSWORD.encode() not in iso
    assert PASSWORD not in text
    passwd = yaml.safe_load(text)["stages"]["initramfs"][0]["users"]["kairos"]["passwd"]
    assert passwd.startswith("$6$rounds=")
    salt = passwd.split("$")[3]
    assert len(salt) == 16
    assert openssl_crypt(PASSWORD, f"rounds={SEED_ROUNDS}${salt}") == passwd


@settings(max_examples=25, deadline=None)
@given(
    password=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF), min_size=1, max_size=80),
    salt=st.text(alphabet="./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=1, max_size=16),
)
def test_sha512_crypt_matches_openssl(password: str, salt: str) -> None:
    assert sha512_crypt(password, salt) == openssl_crypt(password, salt)


def test_sha512_crypt_with_custom_rounds_matches_openssl() -> None:
    assert sha512_crypt("pw", "abc", rounds=10_000) == openssl_crypt("pw", "rounds=10000$abc")


def test_password_hash_uses_the_documented_rounds_and_one_salt_per_deployment(
    plan: DeploymentPlan, host_key: HostKey
) -> None:
    def passwd(p: DeploymentPlan, node_index: int, key: HostKey) -> str:
        doc = yaml.safe_load(render_user_data(p, p.node_specs()[node_index], key))
        return str(doc["stages"]["initramfs"][0]["users"]["kairos"]["passwd"])

    first = passwd(plan, 0, host_key)
    assert first.startswith(f"$6$rounds={SEED_ROUNDS}$") and SEED_ROUNDS >= 100_000
    assert first == passwd(plan, 0, HostKey.generate()) == passwd(plan, 1, host_key)  # reproducible, per deployment
    other = plan.model_copy(update={"name": "another-site"})
    assert passwd(other, 0, host_key).split("$")[3] != first.split("$")[3]  # another deployment, another salt
    salt = first.split("$")[3]
    assert openssl_crypt(PASSWORD, f"rounds={SEED_ROUNDS}${salt}") == first


def test_no_seed_object_shows_a_secret_in_repr_or_str(plan: DeploymentPlan, host_key: HostKey) -> None:
    model = SeedModel.from_plan(plan, plan.node_specs()[0], host_key)
    passwd = model.users[0].passwd_hash.reveal()
    private = host_key.private_openssh.reveal()
    shown = [repr(host_key), str(host_key), repr(model), str(model), repr(model.users[0]), repr(model.files[0])]
    for text in shown:
        assert PASSWORD not in text
        assert passwd not in text
        assert "PRIVATE KEY" not in text
        assert private not in text
    assert host_key.public_line in repr(model.files[1])  # public values stay visible


def test_host_key_fingerprint_is_the_one_ssh_keygen_prints(host_key: HostKey, tmp_path: Path) -> None:
    pub = tmp_path / "key.pub"
    pub.write_text(host_key.public_line + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout
    assert out.split()[1] == host_key.fingerprint == ssh_fingerprint(host_key.public_line)
    assert host_key.public_line.startswith("ssh-ed25519 AAAA")
    assert host_key.public_line.endswith(" palette-provision-host-key")


def test_loading_a_non_key_fails_without_quoting_it() -> None:
    from palette_provision.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        HostKey.from_private_openssh("not-a-key-s3cr3t")
    assert "s3cr3t" not in str(info.value)


# ------------------------------------------------------------------------------------------- user_data_extra


def test_extra_merges_mappings_recursively_and_lists_replace(host_key: HostKey) -> None:
    extra = {
        "install": {"device": "/dev/nvme0n1", "grub_options": {"extra_cmdline": "console=ttyS0"}},
        "stylus": {"site": {"ntpServers": ["10.0.0.1"]}, "installationMode": "airgap"},
        "stages": {"boot": [{"name": "motd", "files": [{"path": "/etc/motd", "content": "hi"}]}]},
    }
    plan = make_plan(user_data_extra=extra)
    doc = yaml.safe_load(render_user_data(plan, plan.node_specs()[0], host_key))
    assert doc["install"]["device"] == "/dev/nvme0n1"
    assert doc["install"]["poweroff"] is True  # untouched siblings stay
    assert doc["install"]["grub_options"] == {"extra_cmdline": "console=ttyS0"}
    assert doc["stylus"]["site"]["ntpServers"] == ["10.0.0.1"]  # a list replaces, never concatenates
    assert doc["stylus"]["site"]["network"]["interfaces"]["eth0"]["ipAddress"] == "10.251.0.11/24"
    assert doc["stylus"]["installationMode"] == "airgap"
    assert doc["stages"]["boot"][0]["name"] == "motd"
    assert [s["name"] for s in doc["stages"]["initramfs"]] == ["palette-provision-users", "palette-provision-host-keys"]


def test_deep_merge_leaves_its_inputs_alone() -> None:
    base = {"a": {"b": [1]}}
    extra = {"a": {"c": {"d": 1}}}
    merged = deep_merge(base, extra)
    merged["a"]["c"]["d"] = 2
    assert base == {"a": {"b": [1]}}
    assert extra == {"a": {"c": {"d": 1}}}


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"install": {"poweroff": None}}, "user_data_extra.install.poweroff"),
        ({"install": {"poweroff": False}}, "user_data_extra.install.poweroff"),
        ({"install": "manual"}, "user_data_extra.install.auto"),
        ({"hostname": None}, "user_data_extra.hostname"),
        ({"hostname": "other"}, "user_data_extra.hostname"),
        ({"stylus": {"site": {"hostName": "other"}}}, "user_data_extra.stylus.site.hostName"),
        (
            {"stylus": {"site": {"network": {"interfaces": {"eth0": {"mask": "24"}}}}}},
            "user_data_extra.stylus.site.network.interfaces.eth0.mask",
        ),
        ({"stylus": {"localUI": {"port": 8443}}}, "user_data_extra.stylus.localUI.port"),
        ({"stages": {"initramfs": [{"name": "mine"}]}}, "user_data_extra.stages.initramfs.palette-provision-users"),
        (
            {"stylus": {"site": {"network": {"interfaces": {"eth0": {"ipAddress": "10.9.9.9"}}}}}},
            "user_data_extra.stylus.site.network.interfaces.eth0.ipAddress",
        ),
    ],
)
def test_extra_cannot_remove_or_change_a_key_the_library_depends_on(
    host_key: HostKey, extra: dict[str, Any], key: str
) -> None:
    # Found by validate (the plan's rules) or, for what only the rendered seed shows, by the renderer.
    with pytest.raises(PlanError) as info:
        plan = make_plan(user_data_extra=extra)
        render_user_data(plan, plan.node_specs()[0], host_key)
    assert key in [issue.path for issue in info.value.issues]
    assert key in str(info.value)


def test_extra_that_is_not_plain_yaml_is_refused(host_key: HostKey) -> None:
    plan = make_plan(user_data_extra={"custom": {"when": object()}})
    with pytest.raises(PlanError, match="user_data_extra: is not plain YAML"):
        build_seed_iso(plan, plan.node_specs()[0], host_key)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z"))
def test_any_valid_node_name_renders_and_round_trips(name: str, host_key: HostKey) -> None:
    plan = make_plan(nodes={"count": 1, "names": [name], "size": "small"})
    node = plan.node_specs()[0]
    assert yaml.safe_load(render_user_data(plan, node, host_key))["stylus"]["site"]["hostName"] == name
    assert yaml.safe_load(render_meta_data(plan, node))["local-hostname"] == name


# ------------------------------------------------------------------------------------------- files on disk


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_seed_creates_the_file_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        target = tmp_path / "node.iso"
        write_seed(target, b"seed bytes")
    finally:
        os.umask(old)
    assert mode_of(target) == 0o600
    assert target.read_bytes() == b"seed bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["node.iso"]  # no temporary file left


def test_write_seed_replaces_an_older_world_readable_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "node.iso"
    target.write_bytes(b"old")
    target.chmod(0o644)
    inode_before = target.stat().st_ino
    write_seed(target, b"new")
    assert (target.read_bytes(), mode_of(target)) == (b"new", 0o600)
    assert target.stat().st_ino != inode_before  # a rename, never an in-place rewrite


def test_write_seeds_writes_every_node_0600_returns_fingerprints_and_records_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = make_plan()
    keys = {"pal-1": HostKey.generate()}
    with Journal.open(tmp_path / "journal.db", deployment="lab") as journal:
        written = write_seeds(plan, tmp_path / "seeds", host_keys=keys, journal=journal)
        facts = journal.facts("pal-1")
    paths = [p for seed in written for p in seed.paths]
    names = [p.name for p in paths]
    assert names == [f"pal-{i}.{ext}" for i in (1, 2, 3) for ext in ("iso", "user-data")]
    assert all(mode_of(p) == 0o600 for p in paths)
    assert (tmp_path / "seeds" / "pal-1.iso").read_bytes() == build_seed_iso(plan, plan.node_specs()[0], keys["pal-1"])
    assert written[0].host_key_fingerprint == keys["pal-1"].fingerprint
    assert [w.host_key_fingerprint.startswith("SHA256:") for w in written] == [True] * 3
    assert keys["pal-1"].public_line not in capsys.readouterr().out  # the CLI prints keys; the library does not
    assert facts == {"host_key_public": keys["pal-1"].public_line, "host_key_fingerprint": keys["pal-1"].fingerprint}


def test_write_seeds_writes_nothing_when_a_seed_is_invalid(tmp_path: Path) -> None:
    plan = make_plan(user_data_extra={"install": {"poweroff": False}})
    with pytest.raises(PlanError):
        write_seeds(plan, tmp_path / "seeds")
    assert not (tmp_path / "seeds").exists()


def test_one_seed_three_forms_and_the_disk_image_reads_back_with_real_fat_tools(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from palette_provision.provider import SeedFormat
    from palette_provision.seed import build_seed

    plan = make_plan()
    node, key = plan.node_specs()[0], HostKey.generate()
    user_data = build_seed(plan, node, key, SeedFormat.USER_DATA)
    assert user_data == render_user_data(plan, node, key).encode()
    assert build_seed(plan, node, key, SeedFormat.CIDATA_ISO) == build_seed_iso(plan, node, key)
    disk = build_seed(plan, node, key, SeedFormat.CIDATA_DISK)
    assert disk == build_seed(plan, node, key, SeedFormat.CIDATA_DISK), "reproducible bytes"
    image = tmp_path / "seed.img"
    image.write_bytes(disk)
    for tool in ("fsck.fat", "mdir", "mtype", "mlabel"):
        assert shutil.which(tool), f"{tool} is installed by ./dev (dosfstools, mtools)"
    check = subprocess.run(["fsck.fat", "-n", str(image)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    label = subprocess.run(["mlabel", "-s", "-i", str(image), "::"], capture_output=True, text=True, env=env)
    assert "CIDATA" in label.stdout
    listing = subprocess.run(["mdir", "-b", "-i", str(image), "::"], capture_output=True, text=True, env=env).stdout
    assert sorted(listing.split()) == ["::/meta-data", "::/user-data"]
    read = subprocess.run(["mtype", "-i", str(image), "::/user-data"], capture_output=True, env=env).stdout
    assert read == user_data
    meta = subprocess.run(["mtype", "-i", str(image), "::/meta-data"], capture_output=True, env=env).stdout
    assert meta == render_meta_data(plan, node).encode()


def test_nodes_rendering_at_once_hash_the_password_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time as _time
    from concurrent.futures import ThreadPoolExecutor

    from palette_provision.seed import _model

    calls: list[str] = []
    real = _model.sha512_crypt

    def counting(password: str, salt: str, rounds: int = 5000) -> str:
        calls.append(threading.current_thread().name)
        _time.sleep(0.05)  # long enough for every thread to arrive while the first one computes
        return real(password, salt, rounds)

    monkeypatch.setattr(_model, "sha512_crypt", counting)
    _model._cached_hash.cache_clear()
    plan = make_plan(name="concurrent-hash-test")
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda n: render_user_data(plan, n, HostKey.generate()), plan.node_specs() * 3))
    assert len(calls) == 1, "the 100,000 rounds are paid once per deployment, not per node"
    hashes = {yaml.safe_load(t)["stages"]["initramfs"][0]["users"]["kairos"]["passwd"] for t in texts}
    assert len(hashes) == 1


# ------------------------------------------------------------------------------------------------ address report

REPORT_URL = "http://10.250.0.1:8080/report/" + "T" * 32


def dhcp_plan() -> DeploymentPlan:
    return make_plan(nodes={"count": 2, "size": "small", "network": {"mode": "dhcp"}})


def test_a_dhcp_node_reports_its_addresses_from_a_network_stage(host_key: HostKey) -> None:
    plan = dhcp_plan()
    node = plan.node_specs()[0]
    doc = yaml.safe_load(render_user_data(plan, node, host_key, address_report_url=REPORT_URL))
    [step] = doc["stages"]["network"]
    assert step["name"] == "palette-provision-report-address"
    [command] = step["commands"]
    assert f"'{REPORT_URL}'" in command and command.rstrip().endswith("&"), "in the background, the URL quoted"
    assert subprocess.run(["sh", "-n", "-c", command], check=False).returncode == 0, "valid shell"
    assert check_seed_document(doc) == [], "the stage conforms to the installer reference"
    assert REPORT_URL not in repr(SeedModel.from_plan(plan, node, host_key, address_report_url=REPORT_URL))


def test_the_report_runs_against_a_listener_and_sends_the_nodes_addresses(host_key: HostKey) -> None:
    # The very command, run by sh here: curl posts what `ip` says (this machine's global addresses).
    from palette_provision.media_server import MediaServer

    plan = dhcp_plan()
    with MediaServer("127.0.0.1:0") as server:
        url = server.report_url("node-x")
        doc = yaml.safe_load(render_user_data(plan, plan.node_specs()[0], host_key, address_report_url=url))
        subprocess.run(["sh", "-c", doc["stages"]["network"][0]["commands"][0]], check=True)
        deadline = time.monotonic() + 20
        while server.reported("node-x") is None and time.monotonic() < deadline:
            time.sleep(0.2)
    report = server.reported("node-x")
    assert report is not None and report.addresses, "the node's addresses arrived"


def test_a_node_with_a_planned_address_reports_nothing(plan: DeploymentPlan, host_key: HostKey) -> None:
    doc = yaml.safe_load(render_user_data(plan, plan.node_specs()[0], host_key, address_report_url=REPORT_URL))
    assert "network" not in doc["stages"]


def test_user_data_extra_cannot_replace_the_report_step(host_key: HostKey) -> None:
    plan = make_plan(nodes={"count": 1, "size": "small", "network": {"mode": "dhcp"}},
                     user_data_extra={"stages": {"network": [{"name": "mine", "commands": ["true"]}]}})  # fmt: skip
    with pytest.raises(PlanError) as info:
        render_user_data(plan, plan.node_specs()[0], host_key, address_report_url=REPORT_URL)
    assert [i.path for i in info.value.issues] == ["user_data_extra.stages.network.palette-provision-report-address"]


@pytest.mark.parametrize("url", ["ftp://x/report/t", "http://x/report/t'; rm -rf /", "http://x/$(id)"])
def test_a_report_url_with_shell_characters_is_refused(url: str) -> None:
    from palette_provision.seed._model import address_report_command

    with pytest.raises(ValueError, match="no quotes, blanks or shell characters|http"):
        address_report_command(url)
