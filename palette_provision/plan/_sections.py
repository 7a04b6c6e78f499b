"""The plan's sections about the run rather than the machines: journal, timeouts, readiness, and what follows the
install (the hand-off, validating Palette, uploading packs)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from palette_provision.plan._base import SecretRef, _Model


class JournalSettings(_Model):
    """Where the journal lives when it must outlive the machine that runs ``apply`` (an AWX job's container): a
    PostgreSQL database, one schema per deployment. Without this section: SQLite in the state folder."""

    url: str = Field(description="postgresql://USER@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=PATH]; "
                     "no password in it: give it as password.")
    password: SecretRef | None = Field(default=None, description="A secret reference to the database password.")
    schema_name: str | None = Field(
        default=None, alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="The schema holding this deployment's journal (default: pp_ and the deployment's name).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
            raise PydanticCustomError("journal_url", "a journal URL is postgresql://user@host[:port]/database")
        if parts.password is not None:
            raise PydanticCustomError(
                "journal_url", "no password in the URL (it would be in the plan in clear): give journal.password"
            )
        return v


class Timeouts(_Model):
    """Deadlines in seconds, sized for the appliance (install >= 15 min, cluster creation 20-30 min)."""

    install: float = Field(default=3600, gt=0, description="The installer to finish and power the node off.")
    ready: float = Field(default=1200, gt=0, description="A node to climb the readiness ladder after boot.")
    configured: float = Field(default=1800, gt=0, description="Local API: host configured.")
    link: float = Field(default=900, gt=0, description="Local API: every follower linked.")
    content_sync: float = Field(default=3600, gt=0, description="Local API: content synced to every peer.")
    cluster: float = Field(default=5400, gt=0, description="Local API: cluster Running and Healthy.")
    unreachable: float = Field(
        default=900, gt=0,
        description="How long the platform (a BMC, MAAS, vCenter) may fail every look during an install or a "
        "deployment before the node fails; the next apply resumes the wait.",
    )


class ReadinessSettings(_Model):
    """Which rungs of the readiness ladder to climb and how to trust the SSH host key."""

    ssh: bool = Field(default=True, description="Check the SSH banner, host key and an authenticated session.")
    local_api: bool | None = Field(
        default=None, description="Check the Local API on 5080 (default: when the hand-off needs it)."
    )
    host_key: Literal["seeded", "trust-on-first-use"] = Field(
        default="seeded", description="Pin the seeded host key, or record the first one seen and pin it after."
    )


class HandoffSettings(_Model):
    """What happens once every node is ready."""

    kind: Literal["palette-local-api", "inventory", "none"] = "palette-local-api"
    leader: str | None = Field(default=None, description="Leader node name (default: the first node).")
    output_dir: str = Field(default="palette-provision-out", description="Where kubeconfig/inventory are written.")
    local_api_port: int = Field(default=5080, ge=1, le=65535)
    tls: Literal["pin-on-first-use", "insecure"] = Field(
        default="pin-on-first-use",
        description="Node certificates are self-signed: pin each on first contact, or (logged) verify nothing.",
    )


#: The namespaces whose pods the appliance's documentation checks after the install.
VALIDATED_NAMESPACES = ("cp-system", "hubble-system", "ingress-nginx", "jet-system", "ui-system")


class ConsoleSettings(_Model):
    """The system console at ``https://<vip>/system``: its first-login password rotated, its health checked."""

    password: SecretRef = Field(
        description="The system admin's new password (at least 14 characters with upper, lower, digit and special): "
        "the first-login admin/admin is rotated to it, so no deployment is left with the default."
    )
    email: str = Field(
        default="admin@palette.local", max_length=254, description="The admin's email the forced reset asks for."
    )
    tls: Literal["verify", "pin-on-first-use", "insecure"] = Field(
        default="pin-on-first-use",
        description="verify (system store or ca_bundle), pin-on-first-use (record the certificate's SHA-256, then "
        "require it), or insecure (logged).",
    )
    ca_bundle: str | None = None

    @model_validator(mode="after")
    def _tls(self) -> ConsoleSettings:
        if self.ca_bundle and self.tls != "verify":
            raise PydanticCustomError("console_tls", "ca_bundle is for tls: verify")
        # The console's documented policy, checked here so a weak password fails before anything is changed.
        value = self.password.reveal()
        missing = [what for what, ok in (
            ("14 characters", len(value) >= 14), ("an upper-case letter", any(c.isupper() for c in value)),
            ("a lower-case letter", any(c.islower() for c in value)), ("a digit", any(c.isdigit() for c in value)),
            ("a special character", any(not c.isalnum() for c in value)),
        ) if not ok]  # fmt: skip
        if missing:
            raise PydanticCustomError(
                "console_password", "the system console's password policy wants at least {missing}",
                {"missing": ", ".join(missing)},
            )
        return self


class ValidateSettings(_Model):
    """Validate the installed Palette as its documentation does (a part of the hand-off, and ``validate-install``)."""

    console: ConsoleSettings
    namespaces: tuple[str, ...] = Field(
        default=VALIDATED_NAMESPACES, description="Namespaces whose pods must all be Running and ready."
    )
    timeout: float = Field(default=1800, gt=0, description="How long the applications and pods may take.")


class ExternalRegistry(_Model):
    """An external OCI registry the packs are pushed to, then registered (or found) and synced in the console."""

    url: str = Field(pattern=r"^https://[^/\s]+$", description="https://host[:port] of the registry.")
    base_content_path: str = Field(default="spectro-content", pattern=r"^[a-z0-9][a-z0-9._/-]{0,100}$",
                                   description="Bundles go to <base_content_path>/<pack>:<version>.")
    name: str = Field(default="palette-provision-packs", max_length=100, description="Its name in the console.")
    username: str | None = None
    password: SecretRef | None = None
    tls: Literal["verify", "pin", "insecure"] = "verify"
    ca_bundle: str | None = Field(default=None, description="verify: the CA (also given to the console).")
    fingerprint: str | None = Field(default=None, description="pin: the registry certificate's SHA-256.")

    @model_validator(mode="after")
    def _tls(self) -> ExternalRegistry:
        if self.tls == "pin" and not self.fingerprint:
            raise PydanticCustomError("registry_tls", "tls: pin needs the certificate's fingerprint")
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError("registry_auth", "give both username and password, or neither")
        return self


class PacksSettings(_Model):
    """Pack bundles (``.zst`` files from Artifact Studio) to upload once Palette runs, so profiles can be built."""

    bundles: tuple[str, ...] = Field(min_length=1, description="The bundle files (paths relative to the plan).")
    registry: Literal["internal", "external"] = Field(
        default="internal",
        description="internal: the appliance's Zot registry, through the leader's Local API content upload; "
        "external: pushed to packs.external with the OCI distribution protocol. Then the registry's sync.",
    )
    external: ExternalRegistry | None = None

    sync_timeout: float = Field(default=1800, gt=0, description="How long the registry's sync may take.")

    @model_validator(mode="after")
    def _external(self) -> PacksSettings:
        if (self.registry == "external") != (self.external is not None):
            raise PydanticCustomError("packs_registry", "registry: external goes with packs.external (and only it)")
        return self
