"""Content bundles: the streamed upload, its details, and the registry sync seen from each node."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import PurePosixPath
from typing import Any

from . import linking
from .body import BodyReader
from .errors import ApiError, bad_request, not_found
from .multipart import FileSink, MemorySink, PartHeaders, Sink, boundary_of, parse_multipart
from .node import Node
from .profiles import OVERRIDDEN_ARCHIVE_DIR
from .timefmt import iso

UPLOAD_PATH_DIR = "/opt/spectrocloud/content"
FILE_FIELDS = ("uploadFile", "signature")


class _Discard:
    """Sink for form fields the spec does not define (read, counted, then refused)."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        """Count and drop ``data``."""
        self.size += len(data)

    def close(self) -> None:
        """Nothing to release."""


def _safe_name(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name
    return name if name not in ("", ".", "..") else "upload.bin"


def receive(node: Node, content_type: str | None, reader: BodyReader, kind: str) -> dict[str, Any]:
    """Stream a ``multipart/form-data`` upload to disk; return the 201 ``uploadResponse``.

    ``kind`` is ``content`` (upload-content) or ``clusterconfig`` (upload-clusterconfig).
    """
    boundary = boundary_of(content_type)
    files: dict[str, FileSink] = {}
    names: dict[str, str] = {}
    unknown: list[str] = []

    def open_sink(headers: PartHeaders) -> Sink:
        if headers.name in FILE_FIELDS:
            if headers.name in files:
                raise bad_request(f"form field {headers.name!r} given twice", field=headers.name)
            if headers.filename is None:
                raise bad_request(f"form field {headers.name!r} must be a file part (with a"
                                  " filename)", field=headers.name)
            tmp = node.content_dir / f".upload-{secrets.token_hex(6)}-{headers.name}.part"
            files[headers.name] = FileSink(tmp)
            names[headers.name] = _safe_name(headers.filename)
            return files[headers.name]
        unknown.append(headers.name)
        return _Discard() if headers.filename is not None else MemorySink(headers.name)

    started = time.time()
    try:
        parse_multipart(reader, boundary, open_sink)
        if "uploadFile" not in files:
            raise bad_request("multipart form field 'uploadFile' is required", field="uploadFile")
        if unknown:
            raise bad_request(f"unknown form fields {unknown}; allowed: {list(FILE_FIELDS)}",
                              field=unknown[0])
    except BaseException as exc:
        for sink in files.values():
            sink.discard()
        reason = exc.message if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
        node.record("uploads", {"kind": kind, "result": "rejected", "reason": reason,
                                "bytesReceived": reader.bytes_read})
        raise
    upload = files["uploadFile"]
    final = node.content_dir / f"{kind}-{names['uploadFile']}"
    signature = files.get("signature")
    entry: dict[str, Any] = {
        "kind": kind, "result": "stored", "fileName": names["uploadFile"], "path": str(final),
        "sizeInBytes": upload.size, "sha256Hash": upload.sha256, "seconds": time.time() - started,
        "signature": None,
    }
    if signature is not None:
        sig_path = final.with_name(final.name + ".sig")
        os.replace(signature.path, sig_path)
        entry["signature"] = {"fileName": names["signature"], "sizeInBytes": signature.size,
                              "sha256Hash": signature.sha256, "path": str(sig_path)}
    with node.lock:
        key = "content" if kind == "content" else "overridden"
        previous = node.state.get(key)
        if previous and previous["path"] != str(final):
            for stale in (previous["path"], previous["path"] + ".sig"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(stale)
        os.replace(upload.path, final)
        node.state[key] = {**entry, "uploadedAt": time.time(),
                           "syncDelay": node.knobs.snapshot().sync_delay_s}
        node.state["stats"]["uploads"].append({"at": time.time(), **entry})
        node.save()
    if kind == "content":
        upload_path = f"{UPLOAD_PATH_DIR}/{names['uploadFile']}"
    else:
        upload_path = f"{OVERRIDDEN_ARCHIVE_DIR}/{names['uploadFile']}"
    return {"message": f"{names['uploadFile']} uploaded successfully", "uploadPath": upload_path}


def uploaded_details(node: Node) -> dict[str, Any]:
    """``v1UploadedContentDetails`` of the last content upload (404 when none)."""
    with node.lock:
        content = node.state.get("content")
    if content is None:
        raise not_found("no content has been uploaded to this host")
    size = int(content["sizeInBytes"])
    return {
        "fileName": content["fileName"],
        "sha256Hash": content["sha256Hash"],
        "sizeInBytes": size,
        "sizeInMiB": round(size / 2**20, 2),
        "sizeInGiB": round(size / 2**30, 2),
        "uploadDateTime": iso(float(content["uploadedAt"])),
    }


def _group(node: Node) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Return (members, leader content summary) of this node's group."""
    with node.lock:
        link_state = node.state["link"]
        role, leader = link_state["role"], link_state["leader"]
    if role == "follower":
        view = linking.fetch_group(node, leader["ip"])
        if view is None:
            return [], None
        return view["peers"], view.get("content")
    view = linking.group_view(node, time.time())
    return view["peers"], view.get("content")


def sync_status_details(node: Node) -> dict[str, Any]:
    """``v1HarborContentsSyncStatus``: one pending item per member still waiting for the content."""
    members, content = _group(node)
    if content is None:
        return {"statusMessage": "no content uploaded", "errors": {}, "pendingItems": []}
    leader_ip = members[0]["ip"] if members else ""
    pending = [
        {"name": content["fileName"], "version": "", "size": str(content["sizeInBytes"]),
         "contentType": "artifact", "source": leader_ip, "target": member["ip"],
         "status": "pending", "msg": f"syncing content to {member['ip']}",
         "creationTimestamp": iso(float(content["uploadedAt"])), "lastSyncTimestamp": ""}
        for member in members if member["contentSyncStatus"] != "synced"
    ]
    message = f"sync in progress: {len(pending)} host(s) pending" if pending else "content synced"
    return {"statusMessage": message, "errors": {}, "pendingItems": pending}


def pack_uploads(node: Node, since: float) -> list[dict[str, Any]]:
    """Pack bundles uploaded to this node since ``since`` (the cluster's creation): stored content uploads whose
    file name ends in ``.zst``, the latest upload per file name, as ``{fileName, name, version, sizeInBytes,
    sha256Hash, at}``. The content bundle is uploaded before the cluster exists, so it is not one of them."""
    with node.lock:
        uploads = [u for u in node.state["stats"]["uploads"]
                   if u.get("kind") == "content" and u.get("result") == "stored" and u["at"] >= since
                   and str(u.get("fileName", "")).endswith(".zst")]
    latest = {u["fileName"]: u for u in uploads}
    packs = []
    for upload in latest.values():
        stem = re.sub(r"(\.tar)?\.zst$", "", upload["fileName"])
        found = re.fullmatch(r"(.+?)-v?([0-9]+\.[0-9]+[0-9A-Za-z.+-]*)", stem)
        name, version = (found.group(1), found.group(2)) if found else (stem, "")
        packs.append({"fileName": upload["fileName"], "name": name, "version": version,
                      "sizeInBytes": upload["sizeInBytes"], "sha256Hash": upload["sha256Hash"], "at": upload["at"]})
    return packs


def registry_details(node: Node) -> dict[str, Any]:
    """``v1HarborContentsDetails``: the uploaded bundle once this node has it, plus the packs uploaded since the
    cluster was created (``contentType: pack``, one per file name)."""
    members, content = _group(node)
    own = [m for m in members if m["id"] == node.host_id]
    with node.lock:
        record = node.state.get("cluster")
    packs = pack_uploads(node, record["createdAt"]) if record else []
    pack_names = {p["fileName"] for p in packs}
    items = [{"name": p["name"], "version": p["version"], "size": str(p["sizeInBytes"]), "contentType": "pack",
              "dateAdded": iso(float(p["at"]))} for p in packs]
    if content is None or not own or own[0]["contentSyncStatus"] != "synced" or content["fileName"] in pack_names:
        return {"status": items}
    return {"status": [{"name": content["fileName"], "version": "",
                        "size": str(content["sizeInBytes"]), "contentType": "artifact",
                        "dateAdded": iso(float(content["uploadedAt"]))}, *items]}

