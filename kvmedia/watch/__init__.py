"""The watcher daemon (`kvmedia watch`), one module per job:

    daemon.py    start-up order, the apply loop, signals, state      (Watcher, WatchOptions)
    debounce.py  coalescing, debounce, settle, move groups            (DebounceQueue)
    observe.py   watchdog events -> queue; overflow / watch-limit hooks
    sweep.py     directory-mtime sweeps where inotify cannot see
    limits.py    inotify watch limits (`kvmedia doctor`)
    notify.py    the unix socket of `kvmedia notify`
    runlog.py    state.json and the rotated logs

Import direction: commands -> watch -> library (and below).
"""

from .daemon import Watcher, WatchOptions

__all__ = ["Watcher", "WatchOptions"]
