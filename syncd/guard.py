"""The deletion guard's memory between looks (the rules themselves are the planner's).

Which folders' deletions are held (until ``syncd sync --force-delete``, or a look at the whole
folder that needs them no more) and which paths they are, and the deletions made in the last
``DELETE_WINDOW`` seconds, by live batches and by looks at the whole folder alike (a mass delete
arriving in pieces is still one, whichever way each piece came). The
planner consults it through a ``GuardState``; the engine tells it what each plan held.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable

from syncd.planner import GuardState, Plan

DELETE_WINDOW = 60.0  # seconds: deletions this close together count as one for max_delete
HELD_RECHECK = 5.0  # seconds between whole rescans of a held folder that files come back to


class Guard:
    def __init__(self) -> None:
        self._scopes: set[str] = set()  # folders whose deletions are held
        self._rels: dict[str, set[str]] = {}  # which paths live batches held, per scope
        self._deleted: collections.deque[tuple[float, int]] = collections.deque()
        self._recheck_at: dict[str, float] = {}  # per scope: see HELD_RECHECK

    def load(self, scopes: Iterable[str]) -> None:
        """The holds the manifest kept from an earlier run."""
        self._scopes = set(scopes)

    def held(self, scope: str) -> bool:
        return scope in self._scopes

    def whole_state(self, *, force: bool) -> GuardState:
        """What the planner is to know for a look at a whole folder: it decides afresh what is
        held, so only the window of recent deletions (and ``--force-delete``) bears on it."""
        return GuardState(force=force, recent_deletes=self.recent_deletes())

    def state(self, scope: str) -> GuardState:
        """What the planner is to know for a live batch of ``scope``."""
        return GuardState(
            held=scope in self._scopes,
            recent_deletes=self.recent_deletes(),
            held_rels=self._rels.get(scope, set()),
        )

    def looked_whole(self, scope: str, plan: Plan) -> None:
        """A look at the whole folder decides afresh what is held; what it deletes counts
        toward the next look's ``max_delete`` as a live batch's does."""
        self._scopes.discard(scope)
        self._rels.pop(scope, None)
        if plan.held:
            self._scopes.add(scope)
            self._rels[scope] = set(plan.held_rels)
        if plan.deleting:
            self._deleted.append((time.monotonic(), plan.deleting))

    def looked_live(self, scope: str, plan: Plan, *, found_files: bool) -> bool:
        """Keep what a live batch held and deleted. Returns whether the whole folder is to be
        planned again: files came back into a folder whose deletions are held (a restore), so
        that the hold counts only what is still missing (at most every HELD_RECHECK s)."""
        now = time.monotonic()
        recount = scope in self._scopes and found_files and self._recheck_at.get(scope, 0.0) <= now
        if recount:
            self._recheck_at[scope] = now + HELD_RECHECK
        if plan.held:
            self._scopes.add(scope)
            self._rels.setdefault(scope, set()).update(plan.held_rels)
        if plan.deleting:
            self._deleted.append((now, plan.deleting))
        return recount

    def recent_deletes(self) -> int:
        """Deletions planned in the last DELETE_WINDOW seconds (live batches and whole looks):
        they count toward ``max_delete`` with the next look's, so a mass delete arriving in
        pieces is held."""
        cutoff = time.monotonic() - DELETE_WINDOW
        while self._deleted and self._deleted[0][0] < cutoff:
            self._deleted.popleft()
        return sum(n for _, n in self._deleted)


__all__ = ["DELETE_WINDOW", "HELD_RECHECK", "Guard"]
