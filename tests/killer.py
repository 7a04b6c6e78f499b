"""A deployment run that SIGKILLs itself right after a chosen phase finished (the journal has recorded it), or was
skipped as done: the ISO uploads while nodes prepare, so a node's early phase may already be done when the kill
after ``stage_media`` lands, and the next run must still stop right there.

Run as ``python -c KILL_AFTER_PHASE <plan> <phase> <node>``; ``node`` is ``*`` for deployment-wide phases.
"""

KILL_AFTER_PHASE = r"""
import os, signal, sys
from palette_provision.plan import load_plan
from palette_provision.pipeline import Deployment
phase, node = sys.argv[2], sys.argv[3]
def on_event(event):
    if event.status in ("done", "skipped") and event.phase == phase and event.node == node:
        os.kill(os.getpid(), signal.SIGKILL)
with Deployment(load_plan(sys.argv[1]), on_event=on_event) as d:
    d.apply()
"""
