"""Boot resources as MAAS shows them, the custom-image lookup of ``deploy``, and the chunk store of uploads.

A resource record (``region.data["boot_resources"][str(id)]``) holds its sets, newest last; each file records
``size`` (announced), ``received`` (bytes stored so far), ``complete`` and ``path`` (``<state-dir>/images/<file id>``).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from .errors import bad_request
from .region import Region

__all__ = ["FILETYPES", "add_set", "append_chunk", "find_custom_image", "find_file", "render_resource"]

API = "/MAAS/api/2.0"
#: Upload ``filetype`` → the file's ``filetype`` value (MAAS's ``BOOT_RESOURCE_FILE_TYPE``).
FILETYPES = {
    "tgz": "root-tgz", "tbz": "root-tbz", "txz": "root-txz", "ddtgz": "root-dd", "ddtbz": "root-dd.tar.bz2",
    "ddtxz": "root-dd.tar.xz", "ddtar": "root-dd.tar", "ddbz2": "root-dd.bz2", "ddgz": "root-dd.gz",
    "ddxz": "root-dd.xz", "ddraw": "root-dd.raw",
}
_FILENAMES = {"tgz": "root.tgz", "tbz": "root.tbz", "txz": "root.txz"}
READ_SIZE = 1 << 20


def _progress(received: int, size: int) -> float:
    return 100.0 * received / size if size else 100.0


def _render_file(resource: dict[str, Any], rfile: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "filename": rfile["filename"], "filetype": rfile["filetype"], "sha256": rfile["sha256"],
        "filename_on_disk": rfile["sha256"][:7], "size": rfile["size"], "complete": rfile["complete"],
    }
    if not rfile["complete"]:
        # MAAS shows how much arrived only as this percentage (sync_progress): 100 * received / size.
        result["progress"] = _progress(rfile["received"], rfile["size"])
        if resource["type"] == "Uploaded":
            result["upload_uri"] = f"{API}/boot-resources/{resource['id']}/upload/{rfile['id']}/"
    return result


def render_resource(resource: dict[str, Any], *, with_sets: bool) -> dict[str, Any]:
    """A resource as ``GET boot-resources/`` (``with_sets=False``) or ``GET boot-resources/{id}/`` shows it."""
    result: dict[str, Any] = {
        "id": resource["id"], "type": resource["type"], "name": resource["name"],
        "architecture": resource["architecture"], "resource_uri": f"{API}/boot-resources/{resource['id']}/",
        "last_deployed": resource.get("last_deployed"), "subarches": resource["subarches"],
    }
    if resource["type"] == "Uploaded":
        result["title"] = resource.get("title", "")
    if resource.get("base_image"):
        result["base_image"] = resource["base_image"]
    if with_sets:
        sets: dict[str, Any] = {}
        for rset in reversed(resource["sets"]):
            files = {f["filename"]: _render_file(resource, f) for f in rset["files"]}
            size = sum(f["size"] for f in rset["files"])
            complete = all(f["complete"] for f in rset["files"])
            entry: dict[str, Any] = {"version": rset["version"], "label": rset["label"], "size": size,
                                     "complete": complete}
            if not complete:
                entry["progress"] = _progress(sum(f["received"] for f in rset["files"]), size)
            entry["files"] = files
            sets[rset["version"]] = entry
        result["sets"] = sets
    return result


def add_set(region: Region, resource: dict[str, Any], *, filetype: str, sha256: str, size: int,
            keep_old: bool) -> dict[str, Any]:
    """Add a new set with one (empty) file to ``resource``; older files are deleted unless ``keep_old``."""
    versions = {s["version"] for s in resource["sets"]}
    version = base = time.strftime("%Y%m%d", time.gmtime())
    n = 0
    while version in versions:
        n += 1
        version = f"{base}.{n}"
    file_id = region.data["next_file_id"]
    region.data["next_file_id"] = file_id + 1
    path = region.images_dir / str(file_id)
    path.write_bytes(b"")
    rfile = {"id": file_id, "filename": _FILENAMES.get(filetype, FILETYPES[filetype]), "filetype": FILETYPES[filetype],
             "sha256": sha256, "size": size, "received": 0, "complete": False, "path": str(path)}
    if not keep_old:
        for old in resource["sets"]:
            for f in old["files"]:
                if f.get("path"):
                    Path(f["path"]).unlink(missing_ok=True)
        resource["sets"] = []
    resource["sets"].append({"version": version, "label": "uploaded", "files": [rfile]})
    return rfile


def find_file(region: Region, resource_id: str, file_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The (resource, file) of an upload URI, or ``None``."""
    resource = region.data["boot_resources"].get(resource_id)
    if resource is None:
        return None
    for rset in resource["sets"]:
        for rfile in rset["files"]:
            if str(rfile["id"]) == file_id:
                return resource, rfile
    return None


def find_custom_image(region: Region, series: str, architecture: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The uploaded resource named ``custom/<series>`` (or ``<series>``) for this architecture, if its newest file
    is complete: (resource, file)."""
    names = {series, f"custom/{series}"}
    for resource in region.data["boot_resources"].values():
        if resource["type"] != "Uploaded" or resource["name"] not in names or not resource["sets"]:
            continue
        if resource["architecture"].partition("/")[0] != architecture.partition("/")[0]:
            continue
        rfile = resource["sets"][-1]["files"][0]
        if rfile["complete"]:
            return resource, rfile
    return None


def usable_custom_names(region: Region) -> list[str]:
    """``custom/<name>`` of every complete uploaded image (for MAAS's "should be one of" message)."""
    names = []
    for resource in region.data["boot_resources"].values():
        if resource["type"] == "Uploaded" and resource["sets"] and resource["sets"][-1]["files"][0]["complete"]:
            name = resource["name"]
            names.append(name if name.startswith("custom/") else f"custom/{name}")
    return sorted(set(names))


def finish_if_complete(region: Region, rfile: dict[str, Any]) -> None:
    """When every byte arrived, check the SHA-256: complete, or reset the file and answer 400 (hold the lock)."""
    if rfile["received"] != rfile["size"]:
        return
    digest = hashlib.sha256()
    with open(rfile["path"], "rb") as handle:
        while piece := handle.read(READ_SIZE):
            digest.update(piece)
    if digest.hexdigest() == rfile["sha256"]:
        rfile["complete"] = True
        region.data["uploads"]["completed"] += 1
        return
    Path(rfile["path"]).write_bytes(b"")
    rfile["received"] = 0
    region.data["uploads"]["sha_mismatches"] += 1
    region.save()
    raise bad_request("Saved content does not match given SHA256 value.")


def append_chunk(
    region: Region, rfile: dict[str, Any], source: Any, length: int, *, stop_after: int | None = None
) -> int:
    """Append ``length`` bytes read from ``source`` (``.read(n)``) at the file's current end; return bytes kept.

    All or nothing, like MAAS (which reads the whole body before storing it): if the body ends early or
    ``stop_after`` bytes were read (a dropped connection), the file is truncated back and 0 is returned.
    """
    start = rfile["received"]
    with open(rfile["path"], "r+b") as handle:
        handle.truncate(start)
        handle.seek(start)
        got = 0
        try:
            while got < length:
                want = min(READ_SIZE, length - got)
                if stop_after is not None:
                    want = min(want, stop_after - got)
                    if want <= 0:
                        break
                piece = source.read(want)
                if not piece:
                    break
                handle.write(piece)
                got += len(piece)
        except BaseException:
            handle.truncate(start)
            raise
        if got != length:
            handle.truncate(start)
            return 0
    rfile["received"] = start + length
    return length
