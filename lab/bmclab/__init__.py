"""BMCs for the offline lab: real IPMI and Redfish simulators whose machines really boot in QEMU.

* :mod:`bmclab.ipmi`: one OpenIPMI ``ipmi_sim`` per IPMI node; its ``chassis_control`` program (:mod:`bmclab.chassis`)
  powers a QEMU guest (pplab) on and off, with the ISO attached only when the boot device is the CD.
* :mod:`bmclab.redfish`: sushy-tools' Redfish emulator (fake driver) for Redfish nodes; its change notifications
  (:mod:`bmclab.notify`) boot in QEMU the very ISO the emulator downloaded through virtual media.

Read ``../shared/reference/lab-facts.md`` (IPMI, Redfish) for the quirks these modules work around.
"""
