"""palette-provision's MAAS provider: machines allocated from a MAAS region (REST API 2.0, our own client).

Registered under the entry-point group ``palette_provision.providers`` as ``maas``. Two modes::

    platform:
      provider: maas
      url: https://maas.example:5240/MAAS
      api_key: env:MAAS_API_KEY                 # consumer:token:secret
      fingerprint: "3A:...:9F"                  # or ca_bundle, or tls: insecure (logged)
      mode: image                               # deploy custom/<image.name> with the seed as user-data
      image: {name: palette-appliance-4-6, file: palette-appliance.raw.gz}
      constraints: {arch: amd64, cpu_count: 8, mem: 16384, tags: [palette], pool: palette}
    nodes:
      count: 3
      hosts:
        - name: palette-1
          system_id: d8n3re                     # or hostname, or constraints of its own

or ``mode: bmc``: allocate through MAAS, read each machine's BMC from MAAS's power parameters and boot the appliance
ISO through it (Redfish virtual media from the media server, or IPMI with media an operator attached), as the
bare-metal provider does. See docs/providers/maas.md, and docs/decisions/0001-maas-client.md for why the client is
our own.
"""

from palette_provision_maas._client import MaasClient
from palette_provision_maas._provider import MaasProvider
from palette_provision_maas._settings import MaasConstraints, MaasImage, MaasNodeSettings, MaasSettings

__all__ = ["MaasClient", "MaasConstraints", "MaasImage", "MaasNodeSettings", "MaasProvider", "MaasSettings"]
