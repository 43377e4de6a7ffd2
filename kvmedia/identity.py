"""Stable identity: the UUID of a file, and the filesystem UUID of the volume holding it.

UUID = RFC 4122 version 5 (SHA-1) with namespace bytes b"media-nas-id" + 4 zero bytes over the
name "<fsuuid>:<ino>:<ctime_seconds>" — the same id PlainNAS gives the same file. Keeping the
id across renames (where ctime changes) is the store's job (see scan.resolve_identity); this
module only mints ids.
"""

from __future__ import annotations

import hashlib
import os
import uuid as _uuid
from dataclasses import dataclass

import xxhash

from .pathbytes import is_under

NAMESPACE = _uuid.UUID(bytes=b"media-nas-id" + b"\x00" * 4)


def _uuid5(name: str) -> str:
    """RFC 4122 v5 of `name` under NAMESPACE (uuid.uuid5 without its object overhead)."""
    digest = bytearray(hashlib.sha1(_NS_BYTES + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NS_BYTES = NAMESPACE.bytes


def uuid_from_triplet(fs_uuid: str, ino: int, ctime_seconds: int) -> str:
    """The id of a file never seen before (RFC 4122 v5)."""
    return _uuid5(f"{fs_uuid}:{ino}:{ctime_seconds}")


def uuid_for_hardlink(fs_uuid: str, ino: int, ctime_seconds: int, path: bytes) -> str:
    """A second name of an inode that already has a record gets its own id, derived from its
    path."""
    return _uuid5(f"{fs_uuid}:{ino}:{ctime_seconds}:" + xxhash.xxh128_hexdigest(path))


@dataclass(frozen=True)
class Mount:
    dev: int  # st_dev of files on this mount (major:minor from mountinfo)
    mount_point: bytes
    fstype: str
    source: str


def _unescape(field: str) -> bytes:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    raw = field.encode("utf-8", "surrogateescape")
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def read_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    mounts: list[Mount] = []
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return mounts
    for line in lines:
        parts = line.split(" ")
        try:
            sep = parts.index("-")
            major, minor = (int(x) for x in parts[2].split(":"))
            mounts.append(
                Mount(
                    dev=os.makedev(major, minor),
                    mount_point=_unescape(parts[4]),
                    fstype=parts[sep + 1],
                    source=_unescape(parts[sep + 2]).decode("utf-8", "replace"),
                )
            )
        except (ValueError, IndexError):
            continue
    return mounts


def read_uuid_links(by_uuid: str = "/dev/disk/by-uuid") -> dict[int, str]:
    """Block device number -> filesystem UUID, from udev's symlinks."""
    found: dict[int, str] = {}
    try:
        names = os.listdir(by_uuid)
    except OSError:
        return found
    for name in names:
        try:
            found[os.stat(os.path.join(by_uuid, name)).st_rdev] = name
        except OSError:
            continue
    return found


class FsUuidResolver:
    """Maps (path, st_dev) to a filesystem UUID, cached per device.

    The filesystem UUID comes from /dev/disk/by-uuid when the mount's source is a block device
    listed there; otherwise (overlay, tmpfs, NFS, containers) a stable identifier derived from
    the fstype, source and mount point — stable across reboots, unlike st_dev numbers.
    """

    def __init__(self, mountinfo: str = "/proc/self/mountinfo",
                 by_uuid: str = "/dev/disk/by-uuid") -> None:
        self._mounts = read_mounts(mountinfo)
        self._uuids = read_uuid_links(by_uuid)
        self._cache: dict[int, str] = {}

    def mount_for(self, path: bytes, dev: int | None = None) -> Mount | None:
        """The mount holding `path`: same device when known, longest mount-point prefix."""
        candidates = [m for m in self._mounts if is_under(path, m.mount_point)]
        if dev is not None:
            same_dev = [m for m in candidates if m.dev == dev]
            if same_dev:
                candidates = same_dev
        if not candidates:
            return None
        # The last mount over a point hides earlier ones; max() keeps the first of equals.
        best = max(len(m.mount_point) for m in candidates)
        return [m for m in candidates if len(m.mount_point) == best][-1]

    def fs_uuid(self, path: bytes, dev: int) -> str:
        cached = self._cache.get(dev)
        if cached is not None:
            return cached
        mount = self.mount_for(path, dev)
        value = self._uuid_of(mount, dev)
        self._cache[dev] = value
        return value

    def _uuid_of(self, mount: Mount | None, dev: int) -> str:
        if dev in self._uuids:
            return self._uuids[dev]
        if mount is not None and mount.source.startswith("/dev/"):
            try:
                rdev = os.stat(mount.source).st_rdev
                if rdev in self._uuids:
                    return self._uuids[rdev]
            except OSError:
                pass
        if mount is None:
            return f"dev-{os.major(dev)}-{os.minor(dev)}"
        digest = xxhash.xxh64_hexdigest(
            mount.fstype.encode() + b"\0" + mount.source.encode() + b"\0" + mount.mount_point
        )
        return f"{mount.fstype}-{digest[:12]}"
