"""The SSH rungs: banner, pinned host key, authenticated session (paramiko, reject-unknown policy)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import socket
from typing import Any

import paramiko

from palette_provision.errors import (
    HostKeyMismatch,
    ReadinessError,
    SessionAuthenticationFailed,
    TransientError,
)
from palette_provision.readiness._model import (
    _CONNECT_TIMEOUT_S,
    _MAX_BANNER_BYTES,
    _PROBE_COMMAND,
    _SSH_TIMEOUT_S,
    FACT_HOST_KEY_FINGERPRINT,
    FACT_HOST_KEY_PUBLIC,
)
from palette_provision.readiness._state import _Climb, _transient


def _read_banner(sock: socket.socket) -> str:
    data = b""
    while len(data) < _MAX_BANNER_BYTES:
        chunk = sock.recv(512)
        if not chunk:
            raise EOFError("connection closed before an SSH banner")
        data += chunk
        for line in data.split(b"\n")[:-1]:
            if line.startswith(b"SSH-"):
                return line.rstrip(b"\r").decode("ascii", "replace")
    raise EOFError("no SSH banner in the first 8 KiB")


def _climb_banner(state: _Climb, address: str) -> None:
    port = state.target.ssh_port

    def probe() -> str:
        try:
            with state.connect(address, port, state.remaining(_CONNECT_TIMEOUT_S)) as sock:
                sock.settimeout(state.remaining(_CONNECT_TIMEOUT_S))
                return _read_banner(sock)
        except (OSError, EOFError) as exc:
            raise _transient("SSH banner", exc) from exc

    banner = state.wait(probe, f"the SSH banner at {address}:{port}")
    if not banner.startswith(("SSH-2.0-", "SSH-1.99-")):
        raise ReadinessError(state.target.node, state.last_rung, f"not an SSH-2 server: {banner!r}", banner)
    state.reached("ssh_banner", {"banner": banner[:255], "port": port})


def _key_from_line(line: str) -> paramiko.PKey:
    parts = line.split()
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except (IndexError, binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise ValueError("the pinned host key is not an OpenSSH public key line") from exc


def _key_types(key: paramiko.PKey) -> list[str]:
    # Ask the server for the pinned key's type only: a node holding several host keys would otherwise answer
    # with paramiko's favourite type (ed25519 first) and look like a mismatch against, say, a pinned RSA key.
    name = key.get_name()
    return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if name == "ssh-rsa" else [name]


def _fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(_sha256(key.asbytes())).decode("ascii").rstrip("=")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _pinned_line(state: _Climb) -> str | None:
    if state.target.pinned_host_key:
        return state.target.pinned_host_key
    if state.journal is not None:
        fact = state.journal.fact(state.target.node, FACT_HOST_KEY_PUBLIC)
        return str(fact) if fact else None
    return None


def _mismatch(state: _Climb, seen: paramiko.PKey, pinned: paramiko.PKey | None, why: str) -> HostKeyMismatch:
    want = _fingerprint(pinned) if pinned is not None else "?"
    message = f"host key mismatch: the node presented {seen.get_name()} {_fingerprint(seen)}, pinned is {want}"
    return HostKeyMismatch(state.target.node, state.last_rung, f"{message} ({why})", message)


def _climb_host_key(state: _Climb, address: str) -> paramiko.PKey:
    target = state.target
    line = _pinned_line(state)
    if line is None and not target.trust_on_first_use:
        raise ReadinessError(
            target.node,
            state.last_rung,
            "no pinned SSH host key (journal fact host_key_public) and trust on first use is off",
        )
    try:
        pinned = _key_from_line(line) if line else None
    except ValueError as exc:
        raise ReadinessError(target.node, state.last_rung, str(exc)) from None

    def probe() -> paramiko.PKey:
        sock = state.connect_or_transient(address, target.ssh_port)
        try:
            transport = paramiko.Transport(sock)
        except BaseException:
            sock.close()
            raise
        try:
            transport.banner_timeout = state.remaining(_SSH_TIMEOUT_S)
            if pinned is not None:
                transport.get_security_options().key_types = _key_types(pinned)
            transport.start_client(timeout=state.remaining(_SSH_TIMEOUT_S))
            return transport.get_remote_server_key()
        except paramiko.ssh_exception.IncompatiblePeer as exc:
            # The node offers no key of the pinned type: as final as a different key.
            raise HostKeyMismatch(
                target.node,
                state.last_rung,
                f"the node offers no {pinned.get_name() if pinned else ''} host key",
                f"{type(exc).__name__}: {exc}",
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _transient("SSH key exchange", exc) from exc
        finally:
            transport.close()

    seen = state.wait(probe, f"the SSH host key of {address}:{target.ssh_port}")
    if pinned is None:
        # Trust on first use: this key is now the pin, for this climb and every later one.
        pinned = seen
        if state.journal is not None:
            state.journal.set_fact(target.node, FACT_HOST_KEY_PUBLIC, f"{seen.get_name()} {seen.get_base64()}")
            state.journal.set_fact(target.node, FACT_HOST_KEY_FINGERPRINT, _fingerprint(seen))
        how = "recorded on first use"
        # The plan opted out of the seeded pin: say so where operators look, with what was trusted.
        state.log.warning("ssh_host_key_trusted_on_first_use", node=target.node, fingerprint=_fingerprint(seen),
                          detail="readiness.host_key is trust-on-first-use; this key is pinned from now on")
    elif seen.get_name() != pinned.get_name() or seen.asbytes() != pinned.asbytes():
        raise _mismatch(state, seen, pinned, "refusing to log in; not retried")
    else:
        how = "pinned"
    state.reached("host_key", {"type": seen.get_name(), "fingerprint": _fingerprint(seen), "trust": how})
    return pinned


def _load_private_key(state: _Climb) -> paramiko.PKey:
    secret = state.target.private_key
    if secret is None:
        raise ReadinessError(state.target.node, state.last_rung, "no SSH private key for the node account")
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key: paramiko.PKey = cls.from_private_key(io.StringIO(secret.reveal()))
            return key
        except paramiko.PasswordRequiredException:
            raise ReadinessError(
                state.target.node,
                state.last_rung,
                "the account's SSH private key is encrypted; give an unencrypted key",
            ) from None
        except (paramiko.SSHException, ValueError):
            continue
    # Never the key text, nor paramiko's message (it may quote key material).
    raise ReadinessError(state.target.node, state.last_rung, "the account's SSH private key could not be loaded")


def _is_final_auth_failure(exc: paramiko.AuthenticationException) -> bool:
    # paramiko says "Authentication failed." when the server answered USERAUTH_FAILURE: the key is refused.
    # "Authentication timeout." and "... transport shut down or saw EOF" come from a lossy or dropped link (seen
    # at 30 % loss in the lab): retry those.
    return isinstance(exc, paramiko.BadAuthenticationType) or str(exc) == "Authentication failed."


def _climb_session(state: _Climb, address: str, host_key: paramiko.PKey) -> None:
    target = state.target
    pkey = _load_private_key(state)

    def probe() -> dict[str, Any]:
        client = paramiko.SSHClient()
        # The pinned key is the only one this client knows; anything else is rejected, never added.
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        name = address if target.ssh_port == 22 else f"[{address}]:{target.ssh_port}"
        client.get_host_keys().add(name, host_key.get_name(), host_key)
        try:
            sock = state.connect_or_transient(address, target.ssh_port)
            timeout = state.remaining(_SSH_TIMEOUT_S)
            client.connect(
                address,
                port=target.ssh_port,
                username=target.username,
                pkey=pkey,
                sock=sock,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                look_for_keys=False,
                allow_agent=False,
            )
            _stdin, stdout, _stderr = client.exec_command(_PROBE_COMMAND, timeout=timeout)
            output = stdout.read(256).decode("utf-8", "replace").strip()
            if not stdout.channel.status_event.wait(timeout):
                raise TimeoutError("no exit status from the probe command")
            status = stdout.channel.exit_status
        except paramiko.BadHostKeyException as exc:
            raise _mismatch(state, exc.key, host_key, "seen at login; not retried") from None
        except paramiko.AuthenticationException as exc:
            if _is_final_auth_failure(exc):
                raise SessionAuthenticationFailed(
                    target.node,
                    state.last_rung,
                    f"the node refused the key of user {target.username!r} ({exc}); not retried",
                    f"{type(exc).__name__}: {exc}",
                ) from None
            raise _transient("SSH authentication", exc) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _transient("SSH session", exc) from exc
        finally:
            client.close()
        if status != 0 or output != "ok":
            raise TransientError(f"probe command {_PROBE_COMMAND!r} exited {status} with output {output!r}")
        return {"user": target.username, "command": _PROBE_COMMAND, "exit_status": status, "output": output}

    detail = state.wait(probe, f"an SSH session as {target.username} on {address}:{target.ssh_port}")
    state.reached("ssh_session", detail)
