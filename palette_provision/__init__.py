"""palette-provision: deploy the Palette Management Appliance onto vSphere, MAAS and bare metal."""

__version__ = "0.1.0"
