"""Walk a volume in the byte order of its path keys, applying kvmedia's skip rules.

The walk yields entries in exactly the order LMDB keeps `media:path:` keys (children sorted
by name, a directory as "name/"), so the scanner can merge-join the walk with the stored keys
in one pass and constant memory. Never follows symlinks; never opens anything but directories.

Skipped: hidden entries (".x"), NAS clutter (`@eaDir`, `#recycle`, `.DS_Store`...), system
trees (/proc /sys /dev /run), directories holding a `.nomedia` file, and paths matched by a
`.kvmediaignore` (gitignore syntax, applies to its directory and below) or the configured
excludes. When an include list is configured, only files inside it are yielded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

import pathspec

from .pathbytes import dir_prefix, is_under

CLUTTER_NAMES = frozenset(
    {
        b"@eaDir", b"#recycle", b"#snapshot", b"@Recycle", b"@Recently-Snapshot",
        b"@sharebin", b"@tmp", b".@__thumb", b".AppleDouble", b".AppleDB", b".DS_Store",
        b"Thumbs.db", b"desktop.ini", b"$RECYCLE.BIN", b"System Volume Information",
        b"lost+found", b".nas-trash", b".Trash-1000", b".snapshot", b".streams",
    }
)
SYSTEM_DIRS = frozenset({b"/proc", b"/sys", b"/dev", b"/run", b"/var/run"})
NOMEDIA = b".nomedia"
IGNORE_FILE = b".kvmediaignore"


@dataclass(slots=True, eq=False)
class FileEntry:
    """A regular file seen by the walk. Treat as immutable (`dataclasses.replace` for a new
    look); not frozen only because a frozen __init__ costs 4x more per file."""

    path: bytes
    name: bytes
    ino: int
    dev: int
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True, slots=True)
class KeepPrefix:
    """A directory that could not be read: everything stored under `prefix` must be kept."""

    prefix: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Warning_:
    path: bytes
    message: str


WalkItem = FileEntry | KeepPrefix | Warning_


@dataclass
class WalkRules:
    """Which entries the walk yields. `include`: absolute dirs; `exclude`: gitignore lines."""

    include: list[bytes] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    skip_hidden: bool = True

    def allows_dir(self, path: bytes) -> bool:
        if not self.include:
            return True
        return any(is_under(path, inc) or is_under(inc, path) for inc in self.include)

    def allows_file(self, path: bytes) -> bool:
        return not self.include or any(is_under(path, inc) for inc in self.include)


@dataclass
class WalkCounters:
    dirs: int = 0
    files: int = 0
    symlinks: int = 0
    special: int = 0
    ignored: int = 0
    current_dir: bytes = b""


def _spec(lines: list[str]) -> pathspec.PathSpec | None:
    lines = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _read_ignore(path: bytes) -> pathspec.PathSpec | None:
    try:
        with open(path, "rb") as fh:
            text = fh.read(1 << 20).decode("utf-8", "surrogateescape")
    except OSError:
        return None
    return _spec(text.splitlines())


def _open_dir(path: bytes) -> int:
    """A descriptor of directory `path` to stat its files by name (-1: stat by full path).
    O_NOFOLLOW: a directory swapped for a symlink mid-walk is not followed."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return -1


class Walker:
    """Iterate `root` (bytes, absolute) in path-key order. Errors become items, never raise."""

    def __init__(self, root: bytes, rules: WalkRules | None = None,
                 specs: list[tuple[bytes, pathspec.PathSpec]] | None = None) -> None:
        """`specs`: ignore specs already in force at `root` (see `inherited_specs`), for a
        walk of a directory below a scan root; default: the configured excludes at `root`."""
        self.root = root.rstrip(b"/") or b"/"
        self.rules = rules or WalkRules()
        self.counters = WalkCounters()
        if specs is None:
            root_spec = _spec(self.rules.exclude)
            specs = [(dir_prefix(self.root), root_spec)] if root_spec else []
        # (base dir prefix, spec): ignore specs in force, outermost first
        self._root_specs = specs

    def inherited_specs(self, directory: bytes) -> list[tuple[bytes, pathspec.PathSpec]]:
        """The ignore specs in force inside `directory` (below this walk's root), not counting
        the directory's own `.kvmediaignore`: the configured excludes plus every ignore file
        from the root down to its parent. A walk started there with them skips what the
        scan of the whole root would skip."""
        specs = list(self._root_specs)
        prefix = dir_prefix(self.root)
        if directory == self.root or not is_under(directory, self.root):
            return specs
        for name in directory[len(prefix):].split(b"/"):
            if os.path.lexists(prefix + IGNORE_FILE):
                spec = _read_ignore(prefix + IGNORE_FILE)
                if spec is not None:
                    specs.append((prefix, spec))
            prefix = prefix + name + b"/"
        return specs

    def _ignored(self, specs: list[tuple[bytes, pathspec.PathSpec]], path: bytes, is_dir: bool
                 ) -> bool:
        for base, spec in specs:
            rel = path[len(base):].decode("utf-8", "surrogateescape")
            if is_dir:
                rel += "/"
            if spec.match_file(rel):
                return True
        return False

    def excludes(self, path: bytes, *, is_dir: bool = False) -> bool:
        """True when the rules skip `path`, a file under the root that exists now: the walk
        did not yield it because of a hidden or clutter component, a `.nomedia`, an ignore
        pattern or the include/exclude config. A record of such a file must not outlive the
        rule. Checked from the root down, reading the same marker files the walk reads."""
        if path == self.root or not is_under(path, self.root):
            return False
        specs = list(self._root_specs)
        prefix = dir_prefix(self.root)
        parts = path[len(prefix):].split(b"/")
        for depth, name in enumerate(parts):
            if os.path.lexists(prefix + NOMEDIA):
                return True
            if os.path.lexists(prefix + IGNORE_FILE):
                spec = _read_ignore(prefix + IGNORE_FILE)
                if spec is not None:
                    specs.append((prefix, spec))
            if (self.rules.skip_hidden and name.startswith(b".")) or name in CLUTTER_NAMES:
                return True
            full = prefix + name
            part_is_dir = depth < len(parts) - 1 or is_dir
            if part_is_dir and (full in SYSTEM_DIRS or not self.rules.allows_dir(full)):
                return True
            if not part_is_dir and not self.rules.allows_file(full):
                return True
            if specs and self._ignored(specs, full, part_is_dir):
                return True
            prefix = full + b"/"
        return False

    def __iter__(self) -> Iterator[WalkItem]:
        return self._walk_dir(self.root, self._root_specs)

    def _walk_dir(self, top: bytes, inherited: list[tuple[bytes, pathspec.PathSpec]]
                  ) -> Iterator[WalkItem]:
        """Depth-first with an explicit stack of per-directory iterators: depth 1000 must not
        hit the recursion limit, and a file passes through one generator, not one per level."""
        stack: list[Iterator[object]] = [self._dir_items(top, inherited)]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
            elif type(item) is tuple:  # ("descend", path, specs)
                _, path, specs = item
                stack.append(self._dir_items(path, specs))
            else:
                yield item  # type: ignore[misc]

    def _dir_items(self, path: bytes, inherited: list[tuple[bytes, pathspec.PathSpec]]
                   ) -> Iterator[object]:
        """The walk items of one directory in key order, with ("descend", path, specs) where
        a subdirectory's items go. The listing keeps only (key, is_dir) per entry and each
        file is stat'ed when its turn comes, so a directory of a million entries costs about
        a hundred bytes an entry, not a DirEntry and a FileEntry each."""
        counters = self.counters
        counters.dirs += 1
        counters.current_dir = path
        prefix = dir_prefix(path)
        keyed: list[tuple[bytes, bool]] = []
        skip_hidden = self.rules.skip_hidden
        nomedia = has_ignore = False
        try:
            with os.scandir(path) as it:
                for entry in it:
                    name = entry.name
                    if name == NOMEDIA:
                        nomedia = True
                    elif name == IGNORE_FILE:
                        has_ignore = True
                    if (skip_hidden and name.startswith(b".")) or name in CLUTTER_NAMES:
                        counters.ignored += 1
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    keyed.append((name + b"/" if is_dir else name, is_dir))
        except FileNotFoundError:
            yield KeepPrefix(prefix, "directory vanished during the scan")
            return
        except OSError as exc:
            yield Warning_(path, f"cannot read directory: {exc.strerror or exc}")
            yield KeepPrefix(prefix, "unreadable directory")
            return
        if nomedia:
            counters.ignored += 1
            return
        specs = inherited
        if has_ignore:
            spec = _read_ignore(prefix + IGNORE_FILE)
            if spec is not None:
                specs = [*inherited, (prefix, spec)]
        keyed.sort(key=lambda t: t[0])
        allows_file = self.rules.allows_file if self.rules.include else None
        dir_fd: int | None = None
        try:
            for key, is_dir in keyed:
                name = key[:-1] if is_dir else key
                full = prefix + name
                if is_dir:
                    if full in SYSTEM_DIRS or not self.rules.allows_dir(full):
                        counters.ignored += 1
                        continue
                    if specs and self._ignored(specs, full, True):
                        counters.ignored += 1
                        continue
                    if dir_fd is not None:  # at most one directory open at any depth
                        if dir_fd >= 0:
                            os.close(dir_fd)
                        dir_fd = None
                    yield ("descend", full, specs)
                    continue
                if dir_fd is None:
                    dir_fd = _open_dir(path)
                try:  # relative to the open directory: the kernel resolves one name
                    st = os.lstat(name, dir_fd=dir_fd) if dir_fd >= 0 else os.lstat(full)
                except FileNotFoundError:
                    continue  # vanished between readdir and stat: simply not there any more
                except OSError as exc:
                    yield Warning_(full, f"cannot stat: {exc.strerror or exc}")
                    yield KeepPrefix(full, "unstattable file")
                    continue
                mode = st.st_mode
                if not stat.S_ISREG(mode):
                    if stat.S_ISLNK(mode):
                        counters.symlinks += 1
                    elif not stat.S_ISDIR(mode):
                        counters.special += 1
                        yield Warning_(full, "not a regular file (FIFO, socket or device): "
                                       "skipped")
                    continue
                if (allows_file is not None and not allows_file(full)) or (
                        specs and self._ignored(specs, full, False)):
                    counters.ignored += 1
                    continue
                counters.files += 1
                yield FileEntry(full, name, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns,
                                st.st_ctime_ns)
        finally:
            if dir_fd is not None and dir_fd >= 0:
                os.close(dir_fd)
