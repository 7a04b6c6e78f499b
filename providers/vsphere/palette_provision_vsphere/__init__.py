"""palette-provision's vSphere provider: the appliance ISO on a datastore, one VM per node.

Registered under the entry-point group ``palette_provision.providers`` as ``vsphere``. A plan's ``platform``
section (the schema is :class:`VsphereSettings`)::

    platform:
      provider: vsphere
      server: vcenter.example.com
      port: 443
      username: administrator@vsphere.local
      password: env:VSPHERE_PASSWORD        # or file:secrets/vsphere-password
      # TLS: verified against the system store by default; or ca_bundle: /etc/ssl/vcenter-ca.pem;
      # or pinned to the certificate's SHA-256 (tls: pin is implied by a thumbprint);
      # tls: insecure turns checking off and is logged as a warning.
      thumbprint: "36:2B:96:AE:...:6E:4F"
      datacenter: DC0
      cluster: DC0_C0                       # and/or esxi_host: esxi-01.example.com
      resource_pool: palette                # optional, a path below the root pool
      folder: palette/appliance             # optional, a path below the datacenter's VM folder
      datastore: datastore1
      network: VM Network                   # a standard or a distributed portgroup
      vm_prefix: pma-
      media_folder: palette-provision       # datastore folder for the ISO and seeds

What it does: logs in once per run (``close()`` logs out); stages media content-addressed
(``[datastore] <media_folder>/<name>`` plus a ``<name>.sha256`` sidecar written only after a verified upload, so
a re-run uploads nothing, and reads no sidecar that nothing touched since: sizes and modification times are kept in
``verified-media.json`` in the provider's state folder); creates UEFI VMs with a paravirtual SCSI controller, two
thin disks, vmxnet3 and two CD drives (ISO, seed) booting CD first; powers them; detaches the CDs after install;
reads the address VMware Tools reports. pyVmomi is imported on first use and httpx on the first upload, so
importing this package, and a re-run with nothing to upload, stay cheap.
"""

from palette_provision_vsphere._provider import VsphereProvider
from palette_provision_vsphere._settings import VsphereSettings

__all__ = ["VsphereProvider", "VsphereSettings"]
