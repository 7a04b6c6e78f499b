"""What every plan model shares: the base model's configuration and secrets given by reference."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from palette_provision.secrets import Secret, SecretReferenceError, resolve_secret


def _to_secret(value: Any, info: ValidationInfo) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("secret_reference", "a secret must be a reference 'env:NAME' or 'file:PATH'")
    base_dir = (info.context or {}).get("base_dir")
    try:
        if (info.context or {}).get("defer_secrets"):
            return Secret.deferred(value, base_dir=base_dir)
        return resolve_secret(value, base_dir=base_dir)
    except SecretReferenceError as exc:
        # The message names the reference (env var or file), never a value.
        raise PydanticCustomError("secret_reference", str(exc)) from None


#: A secret given by reference (``env:NAME`` or ``file:PATH``); serialises back to the reference, never the value.
SecretRef = Annotated[
    Secret,
    PlainValidator(_to_secret),
    PlainSerializer(lambda s: s.source, return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^(env|file):.+$"}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
