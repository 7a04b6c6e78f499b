"""``boot-resources/``: list, read, create (multipart or url-encoded), delete, and chunked uploads (``PUT``)."""

from __future__ import annotations

import re
from pathlib import Path

from .boot import FILETYPES, add_set, append_chunk, find_file, finish_if_complete, render_resource
from .errors import DropConnection, MaasApiError, bad_request, forbidden, not_found, validation_error
from .machines import KNOWN_ARCHES
from .server import API, Request, Response, Router

SUPPORTED_OS = ("centos", "custom", "esxi", "ol", "rhel", "suse", "ubuntu", "windows")
RESERVED = ("ubuntu", "centos", "rhel", "custom", "windows", "ubuntu/noble", "ubuntu/jammy", "noble", "jammy")


def list_resources(request: Request) -> Response:
    """``GET boot-resources/[?type=all|synced|uploaded]``."""
    kind = (request.query.get("type") or ["all"])[-1]
    if kind not in ("all", "synced", "uploaded"):
        raise bad_request(f"'{kind[:40]}' is not a valid boot resource type. Available types: ['synced', 'uploaded']")
    region = request.region
    with region.lock:
        resources = [r for r in region.data["boot_resources"].values() if kind == "all" or r["type"].lower() == kind]
        resources.sort(key=lambda r: (r["type"] != "Synced", r["name"], r["architecture"]))
        return Response(200, [render_resource(r, with_sets=False) for r in resources])


def is_importing(request: Request) -> Response:
    """``GET boot-resources/?op=is_importing``: never importing."""
    return Response(200, False)


def import_resources(request: Request) -> Response:
    """``POST boot-resources/?op=import``: accepted, nothing to import."""
    return Response(200, "Import of boot resources started")


def _validate(request: Request) -> tuple[str, str, str, str, int]:
    form = request.form()
    errors: dict[str, list[str]] = {}
    for name in ("name", "architecture", "sha256", "size"):
        if not form.get(name):
            errors[name] = ["This field is required."]
    name, arch = form.get("name") or "", form.get("architecture") or ""
    sha256, size_text = (form.get("sha256") or "").lower(), form.get("size") or ""
    filetype = form.get("filetype") or "tgz"
    if name and "/" in name and name.split("/", 1)[0] not in SUPPORTED_OS:
        errors["name"] = [f"Unsupport operating system {name.split('/', 1)[0][:40]}, supported operating systems: "
                          f"{list(SUPPORTED_OS)}"]
    elif name in RESERVED or re.fullmatch(r"centos\d\d?", name):
        errors["name"] = [f"{name} is a reserved name"]
    with request.region.lock:
        arches = sorted(set(KNOWN_ARCHES) | {m["architecture"] for m in request.region.machines.values()})
    if arch and arch not in arches:
        errors["architecture"] = [f"'{arch[:40]}' is not a valid architecture.  It should be one of: "
                                  + ", ".join(f"'{a}'" for a in arches) + "."]
    if sha256 and len(sha256) != 64:
        errors["sha256"] = [f"Ensure this value has exactly 64 characters (it has {len(sha256)})."]
    elif sha256 and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        errors["sha256"] = ["Enter a valid SHA-256 hex digest."]
    if size_text and not size_text.isdigit():
        errors["size"] = ["Enter a whole number."]
    if filetype not in FILETYPES:
        errors["filetype"] = [f"Select a valid choice. {filetype[:20]} is not one of the available choices."]
    if errors:
        raise validation_error(errors)
    return name, arch, sha256, filetype, int(size_text)


def create_resource(request: Request) -> Response:
    """``POST boot-resources/`` (``name``, ``architecture``, ``sha256``, ``size``, ``filetype``, ``title``,
    ``base_image``, ``keep_old``, optional ``content`` file): 201 with the resource and its upload URI."""
    name, arch, sha256, filetype, size = _validate(request)
    form = request.form()
    region = request.region
    with region.lock:
        for other in region.data["boot_resources"].values():
            for rset in other["sets"]:
                if any(f["sha256"] == sha256 and f["size"] != size for f in rset["files"]):
                    raise validation_error({"__all__": ["File already exists with sha256 that is of different size."]})
        resource = next((r for r in region.data["boot_resources"].values()
                         if r["type"] == "Uploaded" and r["name"] == name and r["architecture"] == arch), None)
        if resource is None:
            resource_id = region.data["next_resource_id"]
            region.data["next_resource_id"] = resource_id + 1
            resource = {"id": resource_id, "type": "Uploaded", "name": name, "architecture": arch, "sets": [],
                        "subarches": arch.split("/")[1], "title": form.get("title") or "",
                        "base_image": form.get("base_image") or ("ubuntu/noble" if "/" not in name
                                                                 or name.startswith("custom/") else "")}
            region.data["boot_resources"][str(resource_id)] = resource
        elif form.get("title") is not None:
            resource["title"] = form.get("title") or ""
        rfile = add_set(region, resource, filetype=filetype, sha256=sha256, size=size,
                        keep_old=form.get_bool("keep_old"))
        content = form.files.get("content")
        if content is not None:
            if content.size > size:
                raise bad_request("Too much data received.")
            with open(content.path, "rb") as source:
                append_chunk(region, rfile, source, content.size)
            region.data["uploads"]["bytes"] += content.size
            finish_if_complete(region, rfile)
        region.save()
        return Response(201, render_resource(resource, with_sets=True))


def read_resource(request: Request) -> Response:
    """``GET boot-resources/{id}/``."""
    with request.region.lock:
        resource = request.region.data["boot_resources"].get(request.params["id"])
        if resource is None:
            raise not_found("BootResource")
        return Response(200, render_resource(resource, with_sets=True))


def delete_resource(request: Request) -> Response:
    """``DELETE boot-resources/{id}/``: 204."""
    region = request.region
    with region.lock:
        resource = region.data["boot_resources"].pop(request.params["id"], None)
        if resource is None:
            raise not_found("BootResource")
        for rset in resource["sets"]:
            for rfile in rset["files"]:
                if rfile.get("path"):
                    Path(rfile["path"]).unlink(missing_ok=True)
        region.save()
    return Response(204)


def upload(request: Request) -> Response:
    """``PUT boot-resources/{id}/upload/{file}/``: append the raw body at the file's end (``Content-Length`` needed).

    The last chunk triggers the SHA-256 check: 400 and the file emptied on a mismatch.
    """
    region = request.region
    length_header = request.headers.get("Content-Length")
    length = int(length_header) if length_header and length_header.isdigit() else 0
    with region.upload_lock:
        with region.lock:
            found = find_file(region, request.params["id"], request.params["file"])
            if found is None:
                raise not_found("BootResourceFile")
            resource, rfile = found
            if length == 0:
                raise bad_request("Missing data.")
            if resource["type"] != "Uploaded":
                raise forbidden(f"Cannot upload to a resource of type: {resource['type']}.")
            if rfile["complete"]:
                raise bad_request("Cannot upload to a complete file.")
            if rfile["received"] + length > rfile["size"]:
                raise bad_request("Too much data received.")
        drop = region.knobs.take_upload_drop()
        stop_after = None
        if drop is not None and drop.drop_upload_mode == "partial":
            stop_after = max(0, min(drop.drop_upload_after_bytes, length - 1))
        kept = append_chunk(region, rfile, request.body, length, stop_after=stop_after)
        with region.lock:
            region.data["uploads"]["puts"] += 1
            region.data["uploads"]["bytes"] += kept
            if drop is not None:
                region.data["uploads"]["dropped"] += 1
            if kept != length and drop is None:
                region.save()
                raise MaasApiError(400, "Content-Length doesn't equal size of received data.")
            try:
                if kept:
                    finish_if_complete(region, rfile)
            except MaasApiError:
                if drop is None:
                    raise
            finally:
                region.save()
        if drop is not None:
            raise DropConnection
    return Response(200, "OK")


def register(router: Router) -> None:
    """Add this module's routes."""
    router.add("GET", f"{API}boot-resources/", list_resources)
    router.add("GET", f"{API}boot-resources/", is_importing, op="is_importing")
    router.add("POST", f"{API}boot-resources/", create_resource)
    router.add("POST", f"{API}boot-resources/", import_resources, op="import")
    router.add("GET", f"{API}boot-resources/{{id}}/", read_resource)
    router.add("DELETE", f"{API}boot-resources/{{id}}/", delete_resource)
    router.add("PUT", f"{API}boot-resources/{{id}}/upload/{{file}}/", upload)
