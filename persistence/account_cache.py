"""Parsed accounts kept between consumer batches while their rows stay unchanged."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from laer_domain.model import Account


@dataclass(frozen=True)
class RowStamp:
    """An account row's version stamp: every writer bumps `version`, `updated_at` too."""

    version: int
    updated_at: datetime


class AccountCache:
    """Accounts as this process last committed (or read) them, keyed by id and row stamp.

    An entry serves a batch only while the account row still has the stamp it was stored
    with: every writer of `accounts` bumps the version (the ORM's version_id_col,
    `BatchRepository.write`), so a change by another consumer, the sweeper or a flow is seen
    and the state is parsed from the row again. An entry is handed out once: `take` removes
    it, the batch that took it changes it in place, and `put` brings it back only after that
    batch committed (a batch that fails leaves its accounts to be parsed again). At most
    `size` accounts are kept, least recently used first out, so memory stays bounded however
    many accounts there are.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[RowStamp, Account]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def take(self, account_id: str, stamp: RowStamp) -> Account | None:
        """Remove and return the cached state if it is the one with this stamp."""
        item = self._items.pop(account_id, None)
        if item is None or item[0] != stamp:
            return None
        return item[1]

    def put(self, items: Iterable[tuple[str, RowStamp, Account]]) -> None:
        """Remember committed states (call only once their transaction committed)."""
        if self.size <= 0:
            return
        for account_id, stamp, account in items:
            self._items[account_id] = (stamp, account)
            self._items.move_to_end(account_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def entries(self) -> list[tuple[str, RowStamp, Account]]:
        """What the cache holds, least recently used first."""
        return [(account_id, stamp, account)
                for account_id, (stamp, account) in self._items.items()]
