"""palette-provision's bare-metal provider: servers enrolled by their BMCs (Redfish, IPMI), booted from the ISO.

Registered under the entry-point group ``palette_provision.providers`` as ``baremetal``. Each server is a
``nodes.hosts`` entry with its BMC (the schema is :class:`BaremetalNodeSettings`)::

    nodes:
      install_disk: /dev/disk/by-path/pci-0000:00:17.0-ata-1    # servers we do not build: name the disks
      storage_disk: /dev/disk/by-path/pci-0000:00:17.0-ata-2
      hosts:
        - name: rack-1
          address: 10.0.10.11/24
          bmc: {protocol: redfish, address: 10.0.0.11, username: admin, password: env:BMC_PASSWORD,
                fingerprint: "3A:...:9F"}      # or ca_bundle, or tls: insecure (logged)
    platform:
      provider: baremetal
      media_server: {bind: "10.0.0.5:8080"}    # an address the BMCs reach

What it does: enrolls each server (never creates or deletes one: ``destroy`` powers it off, ejects what it
inserted and clears the boot override); serves the ISO and each node's seed from the media server
(``palette_provision.media_server``, a process that outlives a killed run); inserts the ISO in the BMC's CD slot
(unless ``media: preinserted``) and the seed in its removable-disk slot (a FAT ``cidata`` image), or in a second CD
when the BMC has no removable slot; boots once from the CD, waits for the installer to power the server off, ejects,
boots from disk. Every BMC command runs in a session of its own, closed at once, one at a time per BMC, with a
minimum interval between them. IPMI BMCs have no virtual media: an IPMI node takes ``media: preinserted``, the
operator attaching the ISO and the node's seed, whose path the first ``apply`` names when it stops that node before
its boot; the next ``apply`` boots it once from the CD and goes on as above::

        - name: rack-2
          address: 10.0.10.12/24
          media: preinserted
          bmc: {protocol: ipmi, address: 10.0.0.12, username: admin, password: env:BMC_PASSWORD}
"""

from palette_provision_baremetal._provider import BaremetalProvider
from palette_provision_baremetal._settings import BaremetalNodeSettings, BaremetalSettings, BmcSettings

__all__ = ["BaremetalNodeSettings", "BaremetalProvider", "BaremetalSettings", "BmcSettings"]
