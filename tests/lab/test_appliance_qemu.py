"""The test appliance end to end, in QEMU: install from the ISO with a seed, power off, boot from disk, SSH in.

Two boots in all (TCG is slow and the machine has 2 cores), so this one test checks a lot. Its seed asks for DHCP
(a lease from the lab LAN's udhcpd): the static path is what tests/e2e boots, with the library's own seeds.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import socket
import time
from pathlib import Path

import paramiko
import pytest
from pplab import net
from pplab._cmd import link_exists
from pplab.disk import create_disk, read_install_state
from pplab.net import LanDhcp
from pplab.qemu import GuestSpec, cached_boot_files, start_guest

from palette_provision.waiting import wait_for
from tests.keys import Ed25519

from .conftest import make_iso, sha512_crypt

# Not .11/.12: other lab tests boot guests with those at the same time.
ADDRESS = "10.251.0.61"
MAC = "52:54:00:5e:00:61"
HOSTNAME = "lab-node-61"
ACCOUNT = "pplabuser"
BOOT_TIMEOUT = 240  # TCG under load; ~10 s on a quiet machine


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.strip().splitlines())


BY_PATH = "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0"


def user_data(host: Ed25519, client: Ed25519, passwd_hash: str, device: str = "/dev/sda") -> str:
    """The seed's user-data, laid out as docs/seed-format.md, plus keys the appliance must ignore (the top-level
    cloud-init ``hostname``: the appliance names itself from ``stylus.site.hostName``)."""
    return f"""#cloud-config
hostname: ignored-top-level-name
install:
  auto: true
  device: {device}
  poweroff: true
  reboot: false
  grub_options: {{extra_cmdline: "console=ttyS0"}}
stylus:
  managementMode: local
  enableMultiNode: true
  disableTui: true
  localUI:
    port: 5080
  site:
    hostName: {HOSTNAME}
    name: labtest-{HOSTNAME}
    ntpServers: [pool.ntp.org]
    network:
      interfaces:
        eth0:
          type: dhcp
pplab_unknown_key: {{nested: [1, 2, {{deep: true}}]}}
stages:
  initramfs:
    - name: palette-provision-users
      users:
        {ACCOUNT}:
          passwd: "{passwd_hash}"
          groups: [admin]
          ssh_authorized_keys:
            - {client.public_openssh}
    - name: palette-provision-host-keys
      files:
        - path: /etc/ssh/ssh_host_ed25519_key
          permissions: 384
          owner: 0
          group: 0
          content: |
{_indent(host.private_openssh, 12)}        - path: /etc/ssh/ssh_host_ed25519_key.pub
          permissions: 420
          owner: 0
          group: 0
          content: "{host.public_openssh}"
  boot:
    - name: something-the-appliance-ignores
      commands: [echo hi]
"""


def fingerprint(public_openssh: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line."""
    blob = base64.b64decode(public_openssh.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def ssh_connect(host: Ed25519, key: Ed25519, deadline: float) -> paramiko.SSHClient:
    """Connect with the host key pinned (RejectPolicy), retrying while the guest is not up yet."""
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(key.private_openssh))
    pinned = paramiko.Ed25519Key(data=base64.b64decode(host.public_openssh.split()[1]))
    while True:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.get_host_keys().add(ADDRESS, "ssh-ed25519", pinned)
        try:
            client.connect(
                ADDRESS, username=ACCOUNT, pkey=pkey, look_for_keys=False, allow_agent=False,
                timeout=5, banner_timeout=10, auth_timeout=10,
            )  # fmt: skip
            return client
        except (OSError, paramiko.ssh_exception.NoValidConnectionsError, EOFError):
            client.close()
        except paramiko.SSHException as exc:
            client.close()
            # Only a missing banner means "not up yet"; a host-key or auth failure is final.
            if "banner" not in str(exc).lower():
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SSH session to {ADDRESS} in time")
        time.sleep(1)


def run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=20)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, f"{command}: {stderr.read().decode()}"
    return out.strip()


@pytest.mark.lab
@pytest.mark.qemu
@pytest.mark.timeout(600)
def test_install_from_iso_then_boot_from_disk_and_ssh(appliance_iso: Path, tmp_path: Path) -> None:
    host = Ed25519.generate("palette-provision-host-key")
    client_key = Ed25519.generate("user@test")
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    # The install disk by the by-path name the vSphere provider writes (SCSI 0:0:0:0; the lab's disk controller is
    # IDE, primary master, the same SCSI address): the appliance resolves it, as udev would.
    (seed_dir / "user-data").write_text(user_data(host, client_key, sha512_crypt("lab-password"), device=BY_PATH))
    (seed_dir / "meta-data").write_text(f"instance-id: labtest-{HOSTNAME}\nlocal-hostname: {HOSTNAME}\n")
    seed = make_iso(seed_dir, tmp_path / "seed.iso", "cidata")
    disk = create_disk(tmp_path / "node.raw", "300G")
    storage = create_disk(tmp_path / "storage.raw", "500G")  # larger: "auto" would pick it
    net.ensure_lan()
    with LanDhcp({MAC: ADDRESS}) as dhcp:
        _install_then_boot_from_disk(appliance_iso, seed, disk, host, client_key, tmp_path, storage)
        assert dhcp.log_path is not None
        log = dhcp.log_path.read_text()
    # The address came from this server's static lease, not from anywhere else.
    assert f"sending ACK to {ADDRESS}" in log, log


def _install_then_boot_from_disk(
    appliance_iso: Path, seed: Path, disk: Path, host: Ed25519, client_key: Ed25519, tmp_path: Path, storage: Path
) -> None:

    # Boot 1: the ISO installs onto the named disk (not the larger storage disk) and powers the guest off.
    spec = GuestSpec(
        name="lab-install", disk=disk, mac=MAC, cdroms=[appliance_iso, seed], install_delay_s=2,
        console_log=tmp_path / "install.log", storage_disk=storage,
    )  # fmt: skip
    started = time.monotonic()
    with start_guest(spec) as guest:
        status = guest.wait(BOOT_TIMEOUT)
        console = guest.console()
        assert status == 0, f"guest did not power itself off (status {status}):\n{console[-3000:]}"
    install_s = time.monotonic() - started
    assert "pplab: " in console and "seed found on /dev/sr1" in console, console
    assert "install: waiting 2s" in console, console  # the runner's install delay reached the guest
    assert "install: complete #1" in console and "install: powering off" in console, console
    # Resolved by its SCSI address, whichever sdX name the kernel gave it this boot (the names follow the order the
    # asynchronous probes finish: the reason for by-path names).
    assert re.search(rf"install: {re.escape(BY_PATH)} is /dev/sd[ab]\b", console), console
    assert "RE-INSTALL" not in console
    assert not link_exists(spec.tap, net.LAN_NAMESPACE), "Guest.stop() left the tap behind"

    state = read_install_state(disk)
    assert state is not None, "nothing installed on the disk"
    assert read_install_state(storage) is None, "the storage-pool disk was left alone"
    assert (state.count, state.hostname) == (1, HOSTNAME) and state.device in ("/dev/sda", "/dev/sdb")
    assert state.instance_id == f"labtest-{HOSTNAME}"
    assert state.config["ACCOUNT"] == ACCOUNT
    assert state.config["NET_TYPE"] == "dhcp" and not state.config.get("NET_ADDRESS")
    assert disk.stat().st_size == 300 << 30 and disk.stat().st_blocks * 512 < 16 << 20, "disk is not sparse"
    assert all(p.is_file() for p in cached_boot_files(disk)), "kernel/initrd not cached beside the disk"

    # Boot 2: from disk (no CD): static address, hostname, account, seeded host key, SSH.
    spec = GuestSpec(name="lab-disk", disk=disk, mac=MAC, console_log=tmp_path / "disk.log")
    started = time.monotonic()
    with start_guest(spec) as guest:
        client = ssh_connect(host, client_key, time.monotonic() + BOOT_TIMEOUT)
        ssh_s = time.monotonic() - started
        try:
            assert run(client, "hostname") == HOSTNAME
            assert run(client, "id -un") == ACCOUNT
            assert f"inet {ADDRESS}/24" in run(client, "ip -4 addr show dev eth0")
            assert "default via 10.251.0.1" in run(client, "ip route")
            assert client_key.public_openssh in run(client, "cat ~/.ssh/authorized_keys")
            assert run(client, "cat /etc/ssh/ssh_host_ed25519_key.pub") == host.public_openssh
            assert run(client, "grep '^admin:' /etc/group").endswith(ACCOUNT)
        finally:
            client.close()
        console = guest.console()
        assert f"ssh: host key {fingerprint(host.public_openssh)}" in console, console
        assert f"network: eth0 dhcp lease {ADDRESS}/24 router=10.251.0.1" in console, console
        assert guest.is_running(), "a disk boot must stay up"

        # Only the seeded key opens the account.
        with pytest.raises(paramiko.AuthenticationException):
            ssh_connect(host, Ed25519.generate("stranger"), time.monotonic() + 30)
        # The TCP port is the guest's own (not a forward that accepts anything).
        with socket.create_connection((ADDRESS, 22), timeout=5) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-dropbear")
    assert not guest.is_running()
    print(f"install boot: {install_s:.1f} s, disk boot to SSH session: {ssh_s:.1f} s")


@pytest.mark.lab
@pytest.mark.qemu
@pytest.mark.timeout(300)
def test_an_auto_install_device_with_two_disks_is_refused(appliance_iso: Path, tmp_path: Path) -> None:
    """The real installer takes the largest drive; the lab's appliance refuses to guess, so a seed that leaves the
    install disk to chance fails in the lab instead of wiping a storage disk in the field."""
    host, client_key = Ed25519.generate("k"), Ed25519.generate("user@test")
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / "user-data").write_text(user_data(host, client_key, sha512_crypt("pw"), device="auto"))
    (seed_dir / "meta-data").write_text(f"instance-id: labtest-{HOSTNAME}\n")
    seed = make_iso(seed_dir, tmp_path / "seed.iso", "cidata")
    disk, storage = create_disk(tmp_path / "node.raw", "300G"), create_disk(tmp_path / "storage.raw", "500G")
    net.ensure_lan()
    spec = GuestSpec(name="lab-auto", disk=disk, mac=MAC, cdroms=[appliance_iso, seed], storage_disk=storage,
                     console_log=tmp_path / "auto.log")  # fmt: skip
    with start_guest(spec) as guest:
        console = wait_for(
            guest.console, what="the appliance to refuse the auto install device", timeout=BOOT_TIMEOUT,
            until=lambda text: "refusing to guess" in text or not guest.is_running(),
        )  # fmt: skip
        assert "install.device is auto and there are 2 disks; refusing to guess" in console, console[-3000:]
        assert guest.is_running(), "it stays up at the console, as the interactive installer would"
    assert read_install_state(disk) is None and read_install_state(storage) is None, "nothing was installed"
