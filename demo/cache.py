"""Per-session inversion cache: a second edit of the same image reuses its inversion.

Bounded three ways (bytes per session, bytes over all sessions, number of
sessions), least recently used out first. Every lookup names its session, so
one visitor can never be served another's inversion.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass, field

import torch

CACHE_BYTES_TOTAL = int(float(os.environ.get("APP_CACHE_MB", "1024")) * 2**20)  # a server's whole cache (benchmarks/load.py lowers it)
CACHE_BYTES_PER_SESSION = min(256 * 2**20, CACHE_BYTES_TOTAL)
CACHE_SESSIONS = 64


@dataclass
class Entry:
    """A cached inversion with what the UI shows of it."""

    inversion: object
    x: torch.Tensor  # the input as the model took it
    notes: tuple[str, ...] = ()  # what happened to the input on its way in (resized, cropped)
    warnings: tuple[str, ...] = ()  # what the model raised while inverting (a float16 fallback)
    size: tuple[int, int] | None = None  # the upload's (width, height): where a painted region lives
    # measured after the first edit is on the page (Engine.measured): not on the edit's critical path
    reconstruction: torch.Tensor | None = None
    report: dict | None = None  # inversion.pipeline.evaluate's numbers
    shown: dict = field(default_factory=dict, repr=False)  # display files of its images: (name, size) -> (path, written at)

    @property
    def nbytes(self) -> int:
        images = self.x.numel() + (0 if self.reconstruction is None else self.reconstruction.numel())
        return self.inversion.nbytes() + images * 4


class InversionCache:
    def __init__(self, max_bytes: int = CACHE_BYTES_PER_SESSION, max_sessions: int = CACHE_SESSIONS, max_total: int = CACHE_BYTES_TOTAL):
        self.max_bytes, self.max_sessions, self.max_total = max_bytes, max_sessions, max_total
        self.sessions: collections.OrderedDict[str, collections.OrderedDict] = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, session: str, key: str) -> Entry | None:
        with self.lock:
            store = self.sessions.get(session)
            if store is None or key not in store:
                return None
            self.sessions.move_to_end(session)
            store.move_to_end(key)
            return store[key]

    def put(self, session: str, key: str, entry: Entry) -> None:
        with self.lock:
            store = self.sessions.setdefault(session, collections.OrderedDict())
            self.sessions.move_to_end(session)
            store[key] = entry
            while sum(e.nbytes for e in store.values()) > self.max_bytes and len(store) > 1:
                store.popitem(last=False)
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
            while self._total() > self.max_total and len(self.sessions) > 1:
                oldest = next(iter(self.sessions.values()))  # the least recent session loses its oldest entry
                oldest.popitem(last=False)
                if not oldest:
                    self.sessions.popitem(last=False)

    def entries(self, session: str) -> list[tuple[str, Entry]]:
        with self.lock:
            return list(self.sessions.get(session, {}).items())

    def _total(self) -> int:
        return sum(e.nbytes for st in self.sessions.values() for e in st.values())

    def nbytes(self, session: str | None = None) -> int:
        with self.lock:
            stores = [self.sessions.get(session, {})] if session else list(self.sessions.values())
            return sum(e.nbytes for s in stores for e in s.values())
