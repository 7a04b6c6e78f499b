#!/usr/bin/python
# Copyright: palette-provision contributors
# Apache License 2.0 (see LICENSE in the palette-provision repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deployment_info
short_description: What a palette-provision deployment's journal recorded
version_added: 0.1.0
description:
  - Returns the journal's view of a deployment (C(Deployment.status())), that is each step's state, the resources
    recorded (live or destroyed), and what is known about each node (address, host key fingerprint...).
  - Read-only, no platform I/O, no lock taken and nothing written (not even the state folder), so it is safe while
    another job applies the same deployment.
  - Optionally the dry run too (O(actions)), as read-only.
author:
  - palette-provision maintainers (@palette-provision)
requirements:
  - palette-provision (the library) in the Python that runs the module
extends_documentation_fragment: []
attributes:
  check_mode:
    description: Reads only; the same in check mode.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
options:
  plan_file:
    description:
      - The plan file (YAML or JSON). Exactly one of O(plan_file) and O(plan) is required.
    type: path
  plan:
    description:
      - The plan as data, with secrets as references (C(env:NAME), C(file:PATH)).
    type: dict
  base_dir:
    description:
      - Folder that relative paths of an inline O(plan) are relative to (default O(state_dir), else the module's
        working directory).
    type: path
  state_dir:
    description:
      - Folder of the journal (default C(.palette-provision/<plan name>) beside the plan file).
    type: path
  actions:
    description:
      - Also return the dry run (C(Deployment.actions())), every action apply would take with its journal state.
    type: bool
    default: false
  secret_env:
    description:
      - Values of the environment variables the plan's C(env:) references name, set in the module's own process
        only. Only the secrets the journal's view reads need be set (a PostgreSQL journal's password), as for
        C(palette-provision status); the others are checked for form only.
    type: dict
    default: {}
notes:
  - The plan is validated as a whole, but its secret references are read only when used (a PostgreSQL journal's
    password); a status job needs no platform or node credentials.
seealso:
  - module: palette_provision.appliance.deployment
"""

EXAMPLES = r"""
- name: Where is site-a?
  palette_provision.appliance.deployment_info:
    plan_file: /srv/palette/site-a/plan.yaml
  register: site_a

- name: Nodes whose await_ready step is done
  ansible.builtin.debug:
    msg: "{{ site_a.status.steps | selectattr('phase', 'eq', 'await_ready') | selectattr('status', 'eq', 'done')
             | map(attribute='node') | list }}"

- name: Live resources, and what apply would still do
  palette_provision.appliance.deployment_info:
    plan_file: /srv/palette/site-a/plan.yaml
    actions: true
  register: site_a_full
"""

RETURN = r"""
status:
  description: The journal's view (C(Deployment.status())).
  returned: always
  type: dict
  contains:
    deployment:
      description: The deployment (plan) name.
      type: str
    journal:
      description: Where the journal is (a file path, or a PostgreSQL location without credentials).
      type: str
    steps:
      description: Every step started, in order, with C(phase), C(node), C(status), C(attempts) and C(error).
      type: list
      elements: dict
    resources:
      description: Every resource recorded, with C(kind), C(id), C(node) and C(destroyed).
      type: list
      elements: dict
    nodes:
      description: Per node, the facts recorded (C(address), C(host_key_fingerprint), C(host_key_public)...).
      type: dict
  sample:
    deployment: site-a
    journal: /srv/palette/site-a/.palette-provision/site-a/journal.sqlite
    steps: [{phase: acquire, node: site-a-1, status: done, attempts: 1, error: null}]
    resources: [{kind: machine, id: vm-42, node: site-a-1, destroyed: false}]
    nodes: {site-a-1: {address: 10.10.0.11, host_key_fingerprint: "SHA256:8Zk..."}}
live_resources:
  description: How many resources the journal holds that were not destroyed.
  returned: always
  type: int
  sample: 16
ready_nodes:
  description: The nodes whose C(await_ready) step is done.
  returned: always
  type: list
  elements: str
  sample: [site-a-1, site-a-2, site-a-3]
actions:
  description: The dry run, with each action's journal state (as the deployment module's check mode returns it).
  returned: when O(actions=true)
  type: list
  elements: dict
  sample: [{phase: acquire, node: site-a-1, action: "create or allocate the machine", state: done}]
error:
  description: The kind of error when the task failed (V(PlanError), V(JournalError)...).
  returned: on failure
  type: str
  sample: JournalError
issues:
  description: Every problem of an invalid plan, each with its field path.
  returned: when the plan is invalid
  type: list
  elements: dict
  sample: [{path: cluster.vip, message: "value is not a valid IPv4 address"}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.palette_provision.appliance.plugins.module_utils.common import (
    PLAN_MUTUALLY_EXCLUSIVE,
    PLAN_OPTIONS,
    PLAN_REQUIRED_ONE_OF,
    WarningCollector,
    fail_with_error,
    load,
    mask_secrets,
    require_library,
    state_dir,
)


def _argument_spec() -> dict:
    return {**PLAN_OPTIONS, "actions": {"type": "bool", "default": False}}


def main() -> None:
    module = AnsibleModule(
        argument_spec=_argument_spec(),
        mutually_exclusive=PLAN_MUTUALLY_EXCLUSIVE,
        required_one_of=PLAN_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    require_library(module)
    from palette_provision.pipeline import Deployment

    with WarningCollector() as warnings:
        plan = load(module, defer_secrets=True)  # read-only: a secret the journal's view does not use need not be set
        try:
            with Deployment(plan, state_dir=state_dir(module)) as deployment:
                status = deployment.status()
                actions = [a.to_dict() for a in deployment.actions()] if module.params["actions"] else None
        except Exception as exc:
            mask_secrets(module)
            fail_with_error(module, exc)
    mask_secrets(module)
    for line in warnings.lines:
        module.warn(line)
    ready = sorted({s["node"] for s in status["steps"] if s["phase"] == "await_ready" and s["status"] == "done"})
    result = {
        "changed": False,
        "status": status,
        "live_resources": sum(1 for r in status["resources"] if not r["destroyed"]),
        "ready_nodes": ready,
    }
    if actions is not None:
        result["actions"] = actions
    module.exit_json(**result)


if __name__ == "__main__":
    main()
