"""The vSphere part of the offline lab: govmomi's vcsim (built by ``build.sh``) and the watcher that boots its VMs.

Import with ``lab/`` on ``sys.path`` (``PYTHONPATH=lab``): ``from vcsim.lab import start_vcsim``; the watcher is
``vcsim.watcher``. Nothing is imported here, so ``python -m vcsim.lab`` runs without a double import.
The lab deliberately does not import ``palette_provision``: the code under test must not also be the test bench.
"""
