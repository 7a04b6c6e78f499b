"""One logged-in vSphere session: connect, translate faults, read properties, wait for tasks.

This is the only module (with its siblings imported through it) that imports pyVmomi; the provider imports it on
first use so that ``import palette_provision_vsphere`` stays fast.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from palette_provision.errors import (
    AuthenticationError,
    ConfigurationError,
    PaletteProvisionError,
    ProviderError,
    TLSVerificationError,
    TransientError,
)
from palette_provision.tls import insecure_context, pinned_context, verified_context
from palette_provision.waiting import Backoff, wait_for
from pyVim import connect as _connect
from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from palette_provision_vsphere._settings import VsphereSettings

# pyVmomi's types are built at run time; typed aliases keep mypy --strict meaningful everywhere else.
vim: Any = _vim
vmodl: Any = _vmodl
PC: Any = _vmodl.query.PropertyCollector
_smart_stub_adapter: Any = _connect.SmartStubAdapter

PROVIDER = "vsphere"

# Tasks on vcsim finish in milliseconds, on vCenter in seconds to minutes: poll fast first (10 ms, doubling), then
# back off to 2 s. Most datastore searches and reconfigures are done by the second poll.
_TASK_BACKOFF = Backoff(initial=0.01, maximum=2.0, jitter=0.01)
# Enough HTTP connections for the per-node thread pool of the pipeline (plan.concurrency defaults to 8).
_POOL_SIZE = 16

__all__ = ["PC", "VsphereSession", "VsphereTaskError", "vim", "vmodl"]


class VsphereTaskError(ProviderError):
    """A vSphere task or call ended in a fault. ``fault`` is the fault's class name (``InvalidPowerState``)."""

    def __init__(self, message: str, *, fault: str, resource: str | None = None) -> None:
        super().__init__(message, provider=PROVIDER, resource=resource)
        self.fault = fault


def _fault_name(fault: Any) -> str:
    return str(type(fault).__name__).rsplit(".", 1)[-1]


def _fault_text(fault: Any) -> str:
    msg = getattr(fault, "msg", None) or getattr(fault, "faultMessage", None) or ""
    return f"{_fault_name(fault)}: {msg}" if msg else _fault_name(fault)


@contextlib.contextmanager
def translate(what: str, resource: str | None = None) -> Iterator[None]:
    """Turn pyVmomi faults and socket/TLS errors raised inside the block into our errors, saying ``what`` failed."""
    try:
        yield
    except PaletteProvisionError:
        raise
    except vim.fault.InvalidLogin as exc:
        raise AuthenticationError(
            "vCenter refused the user name or password",
            field="platform.password",
            provider=PROVIDER,
        ) from exc
    except vim.fault.NotAuthenticated as exc:
        raise TransientError(f"{what}: the vSphere session expired", provider=PROVIDER, resource=resource) from exc
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise VsphereTaskError(
            f"{what}: the object no longer exists",
            fault="ManagedObjectNotFound",
            resource=resource,
        ) from exc
    except vmodl.MethodFault as exc:
        raise VsphereTaskError(f"{what}: {_fault_text(exc)}", fault=_fault_name(exc), resource=resource) from exc
    except ssl.SSLCertVerificationError as exc:
        raise TLSVerificationError(
            f"certificate did not verify: {exc.verify_message}",
            field="platform.tls",
            provider=PROVIDER,
        ) from exc
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        # Connection refused or reset, a vcsim handler that panicked and dropped the connection (vcsim 0.24.2
        # does that for CreateVM on an unknown datastore): worth a retry by whoever drives us.
        raise TransientError(
            f"{what}: connection to vCenter failed ({type(exc).__name__}: {exc})",
            provider=PROVIDER,
            resource=resource,
        ) from exc


class VsphereSession:
    """A lazily opened, shared, thread-safe session. Build it without I/O; :meth:`connect` logs in once."""

    def __init__(self, settings: VsphereSettings, log: Any) -> None:
        self.settings = settings
        self._log = log
        self._lock = threading.Lock()
        self._si: Any = None
        self._content: Any = None
        self._ssl: ssl.SSLContext | None = None
        # Container views by (container id, type), created once per session: a view is live (vCenter keeps its
        # contents current), so one view serves every later listing with a single round trip instead of three
        # (create, read, destroy). They end with the session; Logout destroys them.
        self._views: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------------------------------ connection

    def ssl_context(self) -> ssl.SSLContext:
        """The one TLS context for SOAP and the datastore HTTP client, built from the settings."""
        if self._ssl is None:
            s = self.settings
            mode = s.tls_mode
            if mode == "pin":
                if s.thumbprint is None:  # the settings model requires it with tls: pin
                    raise TLSVerificationError("tls: pin needs the thumbprint", field="platform.thumbprint")
                self._ssl = pinned_context(s.thumbprint, server=f"{s.server}:{s.port}")
            elif mode == "insecure":
                self._log.warning(
                    "tls_verification_disabled",
                    server=s.server,
                    port=s.port,
                    setting="platform.tls",
                )
                self._ssl = insecure_context()
            else:
                try:
                    self._ssl = verified_context(s.ca_bundle)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigurationError(
                        f"cannot load CA bundle {s.ca_bundle}: {exc}",
                        field="platform.ca_bundle",
                        provider=PROVIDER,
                    ) from exc
        return self._ssl

    @property
    def content(self) -> Any:
        """The ServiceContent of a logged-in session (logs in on first use)."""
        self.connect()
        return self._content

    @property
    def stub(self) -> Any:
        """The SOAP stub (for building managed-object references from ids)."""
        self.connect()
        return self._si._stub

    def connect(self) -> None:
        """Log in once; later calls reuse the session.

        Raises:
            AuthenticationError, TLSVerificationError: final.
            TransientError: vCenter unreachable.
        """
        with self._lock:
            if self._si is not None:
                return
            s = self.settings
            where = f"connecting to vCenter {s.server}:{s.port}"
            context = self.ssl_context()
            with translate(where):
                try:
                    stub = _smart_stub_adapter(
                        host=s.server, port=s.port, sslContext=context, poolSize=_POOL_SIZE,
                        httpConnectionTimeout=int(s.http_timeout),
                    )  # fmt: skip
                except TLSVerificationError:
                    raise
                except Exception as exc:
                    # SmartStubAdapter raises a bare Exception when the version document is unreadable.
                    if isinstance(exc, (OSError, vmodl.MethodFault, http.client.HTTPException)):
                        raise
                    raise TransientError(f"{where}: {exc}", provider=PROVIDER) from exc
                si = vim.ServiceInstance("ServiceInstance", stub)
                content = si.RetrieveContent()
                content.sessionManager.Login(s.username, s.password.reveal())
            self._si, self._content = si, content
            self._log.info(
                "vsphere_session_opened",
                server=s.server,
                api=content.about.apiVersion,
                tls=s.tls_mode,
            )

    def relogin(self) -> None:
        """Log in again on the same stub (after the session expired); objects built on it stay valid."""
        with self._lock, translate("logging in again"):
            self._views.clear()  # they belonged to the expired session
            if self._content is not None:
                self._content.sessionManager.Login(self.settings.username, self.settings.password.reveal())

    def cookie(self) -> str:
        """The session cookie, ``vmware_soap_session="..."``, for the datastore HTTP interface."""
        self.connect()
        return str(self._si._stub.cookie).split(";", 1)[0]

    def close(self) -> None:
        """Log out. Safe to call twice and when vCenter is gone."""
        with self._lock:
            content, self._si, self._content = self._content, None, None
            self._views.clear()
        if content is not None:
            with contextlib.suppress(Exception):
                content.sessionManager.Logout()

    # ---------------------------------------------------------------------------------------- properties

    def ref(self, kind: str, moid: str) -> Any:
        """A managed-object reference, e.g. ``ref("VirtualMachine", "vm-42")``."""
        return getattr(vim, kind)(moid, self.stub)

    def props(self, obj: Any, paths: Sequence[str], what: str = "reading properties") -> dict[str, Any]:
        """Read ``paths`` of one object in one round trip; unset properties are absent from the result.

        One RetrievePropertiesEx instead of pyVmomi's per-attribute reads: fewer round trips, and vcsim 0.24.2's
        Fetch handler (used by pyVmomi 8+ attribute access) crashes on unset properties unless patched.
        """
        found = self.props_many([obj], paths, what=what)
        return found[0][1] if found else {}

    def props_many(
        self,
        objs: Sequence[Any],
        paths: Sequence[str],
        what: str = "reading properties",
    ) -> list[tuple[Any, dict[str, Any]]]:
        """Read ``paths`` of several objects of one type (the first object's) in one round trip."""
        if not objs:
            return []
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=o, skip=False) for o in objs],
            propSet=[PC.PropertySpec(type=type(objs[0]), pathSet=list(paths))],
        )
        return self._retrieve(spec, what)

    def list_view(
        self,
        container: Any,
        kind: str,
        paths: Sequence[str],
        what: str = "listing inventory",
    ) -> list[tuple[Any, dict[str, Any]]]:
        """Every ``kind`` object below ``container`` (recursive) with ``paths`` read, via a container view."""
        key = (str(container._moId), kind)
        prop_set = [PC.PropertySpec(type=getattr(vim, kind), pathSet=list(paths))]
        view_manager = self.content.viewManager
        for fresh in (False, True):
            with self._lock:
                view = None if fresh else self._views.get(key)
            if view is None:
                view = self.call(lambda: view_manager.CreateContainerView(container, [getattr(vim, kind)], True), what)
                with self._lock:
                    self._views[key] = view
            spec = PC.FilterSpec(
                objectSet=[
                    PC.ObjectSpec(
                        obj=view, skip=True,
                        selectSet=[PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)],
                    )
                ],
                propSet=prop_set,
            )  # fmt: skip
            try:
                return self._retrieve(spec, what)
            except VsphereTaskError as exc:
                # A cached view can vanish (destroyed with an expired session): make a new one, once.
                if fresh or exc.fault != "ManagedObjectNotFound":
                    raise
        raise AssertionError("unreachable")

    def call(self, fn: Callable[[], Any], what: str, resource: str | None = None) -> Any:
        """Run one SOAP call with our error translation; if the session expired, log in again and retry once.

        vCenter drops idle sessions (30 minutes by default) and an appliance install can take longer than that
        between two of our calls.
        """
        try:
            with translate(what, resource):
                return fn()
        except TransientError as exc:
            if not isinstance(exc.__cause__, vim.fault.NotAuthenticated):
                raise
        self._log.info("vsphere_session_renewed", reason="NotAuthenticated")
        self.relogin()
        with translate(what, resource):
            return fn()

    def _retrieve(self, spec: Any, what: str) -> list[tuple[Any, dict[str, Any]]]:
        pc = self.content.propertyCollector

        def fetch() -> list[tuple[Any, dict[str, Any]]]:
            out: list[tuple[Any, dict[str, Any]]] = []
            result = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions())
            while result is not None:
                for oc in result.objects or []:
                    out.append((oc.obj, {p.name: p.val for p in oc.propSet or []}))
                result = pc.ContinueRetrievePropertiesEx(result.token) if result.token else None
            return out

        found: list[tuple[Any, dict[str, Any]]] = self.call(fetch, what)
        return found

    # --------------------------------------------------------------------------------------------- tasks

    def wait_task(
        self,
        task: Any,
        what: str,
        resource: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Wait for ``task`` through the PropertyCollector with a deadline; return its result.

        Not pyVim.task.WaitForTask: on vcsim 0.24.2 it raises TypeError for FileManager tasks, whose
        ``info.entity`` is not a ManagedEntity. We read only state, error and result.

        Raises:
            VsphereTaskError: the task failed (``fault`` names the vSphere fault).
            WaitTimeout: still running at the deadline.
        """
        paths = ["info.state", "info.error", "info.result"]

        def probe() -> dict[str, Any]:
            return self.props(task, paths, what=f"polling the task for {what}")

        done = wait_for(
            probe,
            what=what,
            timeout=timeout or self.settings.task_timeout,
            until=lambda p: p.get("info.state") in ("success", "error"),
            backoff=_TASK_BACKOFF,
        )
        if done["info.state"] == "error":
            fault = done.get("info.error")
            raise VsphereTaskError(
                f"{what}: {_fault_text(fault)}",
                fault=_fault_name(fault),
                resource=resource,
            )
        return done.get("info.result")

    def run_task(
        self,
        start: Any,
        what: str,
        resource: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Start a task with ``start()`` (a zero-argument callable) and wait for it."""
        task = self.call(start, what, resource)
        return self.wait_task(task, what, resource, timeout)
