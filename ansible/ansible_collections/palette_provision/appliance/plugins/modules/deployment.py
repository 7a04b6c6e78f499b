#!/usr/bin/python
# Copyright: palette-provision contributors
# Apache License 2.0 (see LICENSE in the palette-provision repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deployment
short_description: Apply, plan or destroy a Palette appliance deployment with palette-provision
version_added: 0.1.0
description:
  - Deploys Spectro Cloud's Palette Management Appliance (or Palette Edge hosts) onto vSphere, MAAS or bare metal from
    a palette-provision plan, calling the palette-provision library in-process (not its command line).
  - C(state=present) applies the plan; every step is journaled, so running the task again resumes where a failed or
    interrupted run stopped, and repeats no side effect.
  - C(state=absent) undoes what the journal recorded, newest first (resumable too).
  - In check mode nothing is touched (no platform I/O, no journal written); the module returns the dry run
    (the actions apply would take, with the journal's state of each) and a diff of them.
  - Secrets stay references in the plan (C(env:NAME), C(file:PATH)); values for C(env:) references come from the
    module's environment or from O(secret_env). No secret value is ever returned or logged.
  - The task fails with the report's per-node errors (phase, error, last state) when a node or the hand-off failed.
author:
  - palette-provision maintainers (@palette-provision)
requirements:
  - palette-provision (the library, with the provider the plan names) in the Python that runs the module
    (C(ansible_python_interpreter) of the host it runs on, usually localhost)
extends_documentation_fragment: []
attributes:
  check_mode:
    description: The dry run (C(Deployment.actions())); reads the plan and the journal only.
    support: full
  diff_mode:
    description: The actions before and after, one a line; for O(state=absent), the live resources.
    support: full
options:
  plan_file:
    description:
      - The plan file (YAML or JSON). Relative paths and C(file:) references inside it resolve against its folder.
      - Exactly one of O(plan_file) and O(plan) is required.
    type: path
  plan:
    description:
      - The plan as data (for instance templated in the playbook), with secrets still as references
        (C(env:NAME), C(file:PATH)); an inline secret value is refused by the plan's validation.
      - Relative paths inside resolve against O(base_dir).
    type: dict
  base_dir:
    description:
      - Folder that relative paths of an inline O(plan) are relative to.
      - Defaults to O(state_dir), else the module's working directory. Ignored with O(plan_file).
    type: path
  state:
    description:
      - V(present) applies the plan (resumable); V(absent) destroys what the journal recorded.
      - V(absent) reads only the secrets it uses (the platform's credentials, when the provider logs in), so
        O(secret_env) need not carry the node account's password to take a deployment down.
    type: str
    choices: [present, absent]
    default: present
  until:
    description:
      - With O(state=present), stop every node after this per-node phase (for instance V(power_on)); nodes that got
        there count as done, and there is no hand-off. A later run without O(until) continues from there.
    type: str
  state_dir:
    description:
      - Folder of the journal, the seeds and the providers' caches.
      - Defaults to C(.palette-provision/<plan name>) beside the plan file (or under O(base_dir)).
      - With a PostgreSQL journal (the plan's C(journal) section), the journal lives in the database, and this
        folder holds only the seeds and caches.
    type: path
  purge_media:
    description:
      - With O(state=absent), also delete the staged appliance ISO (kept by default, for the next deployment).
    type: bool
    default: false
  secret_env:
    description:
      - Values of the environment variables the plan's C(env:) references name, set in the module's own process
        only (never on a command line, never in a file). Use it for values from Ansible Vault.
      - Without it, the module's process environment is used (on localhost, the environment of ansible-playbook,
        for instance what an AWX credential injects).
    type: dict
    default: {}
notes:
  - C(changed) is read from the journal before and after the run; see RV(journal_changes) for the rule.
  - The journal admits one writer at a time; a second O(state=present) task on the same deployment while one runs
    fails with RV(error=JournalError). Use M(palette_provision.appliance.deployment_info) to watch a running
    deployment.
seealso:
  - module: palette_provision.appliance.deployment_info
  - plugin: palette_provision.appliance.journal
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Deploy the site's appliance (resumable; a re-run changes nothing once done)
  palette_provision.appliance.deployment:
    plan_file: /srv/palette/site-a/plan.yaml
  register: site_a

- name: Show where each node is
  ansible.builtin.debug:
    msg: "{{ site_a.report.nodes | map(attribute='address') | list }}"

- name: Deploy from a plan templated in the playbook, the node password from Ansible Vault
  palette_provision.appliance.deployment:
    plan: "{{ lookup('ansible.builtin.template', 'plan.yaml.j2') | from_yaml }}"
    base_dir: /srv/palette/site-b
    secret_env:
      PALETTE_NODE_PASSWORD: "{{ vault_palette_node_password }}"

- name: Dry run (check mode) with the actions as a diff
  palette_provision.appliance.deployment:
    plan_file: /srv/palette/site-a/plan.yaml
  check_mode: true
  diff: true

- name: Bring the machines up to power-on only
  palette_provision.appliance.deployment:
    plan_file: /srv/palette/site-a/plan.yaml
    until: power_on

- name: Destroy, ISO included
  palette_provision.appliance.deployment:
    plan_file: /srv/palette/site-a/plan.yaml
    state: absent
    purge_media: true
"""

RETURN = r"""
report:
  description:
    - The run's report (C(Report.to_dict())). Per node, its status, the phase reached, the error and last state seen
      when it failed, its address, host key fingerprint, timings and readiness evidence; the hand-off's outcome.
    - Holds no secret.
  returned: when O(state=present) and not in check mode, also when a node failed
  type: dict
  sample:
    deployment: site-a
    provider: vsphere
    ok: true
    started_at: 1767225600.0
    finished_at: 1767225900.0
    nodes:
      - name: site-a-1
        status: ready
        phase: await_ready
        address: 10.10.0.11
        host_key_fingerprint: "SHA256:8Zk..."
        error: null
        last_state: null
        machine_id: vm-42
        seed_left: null
        timings: {acquire: 2.1}
        evidence: []
    handoff: {kind: inventory, files: [/srv/palette/site-a/out/inventory.yaml]}
    handoff_error: null
ok:
  description: Whether every node is ready and the hand-off (if any) succeeded.
  returned: when O(state=present) and not in check mode
  type: bool
  sample: true
errors:
  description: One line per failed node (phase and error) and for a failed hand-off (C(Report.failures())).
  returned: when a node or the hand-off failed
  type: list
  elements: str
  sample: ["site-a-3 failed in power_on: the BMC refused the request (last state: Off)"]
journal_changes:
  description:
    - What this run changed, read from the journal before and after it; C(changed) is true exactly when this list
      is not empty.
    - A change is a resource recorded (a machine created or allocated, media uploaded, a seed staged), destroyed or
      recorded again; a step that ran for the first time, was reset, or whose status changed; a step that ran again.
      The deployment-wide checks apply runs on every run (preflight's read-only checks, and staging's
      content-addressed check) count only when staging uploaded something, so a preflight the platform rejected
      is no change.
    - A re-run whose failing step fails again is therefore C(changed=true), and fails again; the step was tried
      again (its attempts grew, and this list holds a C(ran again) line for it), whether or not that attempt
      reached the platform. Steps that were done are not run again and add nothing.
  returned: when not in check mode, also when the task failed
  type: list
  elements: str
  sample: ["step acquire on site-a-1: ran (done)", "resource machine vm-42 (site-a-1): recorded"]
actions:
  description:
    - The dry run, for O(state=present) in check mode (C(Deployment.actions())), every action apply would take,
      with its state in the journal (V(pending), V(started), V(failed) or V(done)).
  returned: in check mode with O(state=present)
  type: list
  elements: dict
  contains:
    phase:
      description: The phase (deployment-wide or per node).
      type: str
    node:
      description: The node, or C(*) for a deployment-wide phase.
      type: str
    action:
      description: What the phase does.
      type: str
    state:
      description: The journal's state of the step.
      type: str
  sample: [{phase: acquire, node: site-a-1, action: "create or allocate the machine", state: pending}]
destroyed:
  description:
    - For O(state=absent), one entry per resource the journal held (C(Deployment.destroy())), with its result
      (V(deleted), V(released), V(restored), V(ejected), V(cleared), V(kept)...); in check mode, what would be
      undone, with the result V(would be undone) or V(kept).
  returned: when O(state=absent)
  type: list
  elements: dict
  sample: [{kind: machine, id: vm-42, node: site-a-1, result: deleted}]
diff:
  description: The actions (O(state=present)) or live resources (O(state=absent)) before and after, one a line.
  returned: in check mode, or with C(--diff)
  type: dict
  sample: {before: "[pending] acquire site-a-1: create the machine\n", after: "[done] acquire site-a-1: ...\n"}
error:
  description: The kind of error when the task failed before a report (V(PlanError), V(ConfigurationError),
    V(JournalError), V(ProviderError)...).
  returned: on failure
  type: str
  sample: PlanError
issues:
  description: Every problem of an invalid plan, each with its field path.
  returned: when the plan is invalid
  type: list
  elements: dict
  sample: [{path: nodes.count, message: "the appliance runs on 1 or 3 nodes, got 2"}]
field:
  description: The plan field the platform rejected in preflight.
  returned: when preflight rejected the settings
  type: str
  sample: platform.password
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.palette_provision.appliance.plugins.module_utils.common import (
    PLAN_MUTUALLY_EXCLUSIVE,
    PLAN_OPTIONS,
    PLAN_REQUIRED_ONE_OF,
    WarningCollector,
    action_lines,
    changes_after_error,
    fail_with_error,
    journal_changes,
    load,
    mask_secrets,
    require_library,
    resource_lines,
    state_dir,
    until_issue,
)


def _argument_spec() -> dict:
    return {
        **PLAN_OPTIONS,
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "until": {"type": "str"},
        "purge_media": {"type": "bool", "default": False},
    }


def _dry_run(module: AnsibleModule, deployment) -> dict:
    """Check mode of state=present: the actions apply would take (up to ``until``), as data and as a diff."""
    from palette_provision.errors import PlanError

    until = module.params["until"]
    actions = [a.to_dict() for a in deployment.actions()]
    if until is not None:
        chain = [entry.name for entry in deployment.chain()]
        if until not in chain:
            raise PlanError([until_issue(until, chain)])
        kept = set(chain[: chain.index(until) + 1])
        # Per-node phases up to `until`, the deployment-wide ones before the nodes; no hand-off.
        actions = [a for a in actions if (a["node"] != "*" and a["phase"] in kept)
                   or (a["node"] == "*" and a["phase"] in ("preflight", "stage_media"))]
    pending = [a for a in actions if a["state"] != "done"]
    name = deployment.plan.name
    return {
        "changed": bool(pending),
        "actions": actions,
        "diff": {
            "before_header": f"{name}: the journal",
            "after_header": f"{name}: after apply" + (f" --until {until}" if until else ""),
            "before": action_lines(actions),
            "after": action_lines(actions, as_done=True),
        },
    }


def _apply(module: AnsibleModule, deployment, uploaded: set) -> dict:
    before = deployment.status()
    actions_before = [a.to_dict() for a in deployment.actions()] if module._diff else None
    try:
        report = deployment.apply(until=module.params["until"])
    except Exception as exc:
        fail_with_error(module, exc, **changes_after_error(deployment, before, uploaded))
    after = deployment.status()
    changes = journal_changes(before, after, uploaded)
    result = {"changed": bool(changes), "report": report.to_dict(), "ok": report.ok, "journal_changes": changes}
    if actions_before is not None:
        result["diff"] = {
            "before_header": f"{deployment.plan.name}: the journal before",
            "after_header": f"{deployment.plan.name}: the journal after",
            "before": action_lines(actions_before),
            "after": action_lines([a.to_dict() for a in deployment.actions()]),
        }
    if not report.ok:
        result["errors"] = report.failures()
    return result


def _destroy(module: AnsibleModule, deployment) -> dict:
    purge = module.params["purge_media"]
    before = deployment.status()
    live = [r for r in before["resources"] if not r["destroyed"]]
    # The appliance ISO is the one deployment-wide medium; destroy keeps it unless purge_media.
    kept = [r for r in live if r["kind"] == "media" and r["node"] == "*" and not purge]
    diff = {
        "before_header": f"{deployment.plan.name}: live resources",
        "after_header": f"{deployment.plan.name}: after destroy",
        "before": resource_lines(live),
        "after": resource_lines(kept),
    }
    undone = [{**{k: r[k] for k in ("kind", "id", "node")}, "result": "kept" if r in kept else "would be undone"}
              for r in live]
    if not before["steps"] and len(kept) == len(live):
        # Nothing to undo and no step to reset (at most the kept ISO): destroy would change nothing, and is not
        # called (no journal is created to say so).
        return {"changed": False, "destroyed": undone if module.check_mode else [], "journal_changes": [],
                "diff": diff}
    if module.check_mode:
        return {"changed": True, "destroyed": undone, "diff": diff}
    try:
        done = deployment.destroy(purge_media=purge)
    except Exception as exc:
        fail_with_error(module, exc, **changes_after_error(deployment, before))
    changes = journal_changes(before, deployment.status())
    return {"changed": bool(changes), "destroyed": done, "journal_changes": changes, "diff": diff}


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
        # state=absent reads only the secrets destroy uses (the platform's credentials, at login): tearing a site
        # down needs no node or Palette password. What it read is masked again below, before any output.
        absent = module.params["state"] == "absent"
        plan = load(module, defer_secrets=absent)
        uploaded: set = set()

        def on_event(event) -> None:
            if event.status == "done" and event.data.get("uploaded_bytes"):
                uploaded.add((event.phase, event.node))

        result: dict = {}
        try:
            with Deployment(plan, state_dir=state_dir(module), on_event=on_event) as deployment:
                if module.params["state"] == "absent":
                    result = _destroy(module, deployment)
                elif module.check_mode:
                    result = _dry_run(module, deployment)
                else:
                    result = _apply(module, deployment, uploaded)
        except Exception as exc:
            mask_secrets(module)
            for line in warnings.lines:
                module.warn(line)
            fail_with_error(module, exc)
    mask_secrets(module)
    for line in warnings.lines:
        module.warn(line)
    if result.get("errors"):
        module.fail_json(msg=f"deployment {plan.name}: " + "; ".join(result["errors"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
