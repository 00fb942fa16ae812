"""Tiny AOL log folders for the evaluation's end-to-end tests: users on either side of the
default split, and one file per user in the log's own format."""

from __future__ import annotations

from pathlib import Path

from training.split import DEFAULT_SALT, is_heldout


def split_users(held: bool, n: int) -> list[str]:
    """``n`` user ids that the default split holds out (or keeps for training)."""
    ids = (str(1000 + i) for i in range(10_000))
    return [u for u in ids if is_heldout(u, 0.1, DEFAULT_SALT) == held][:n]


def write_user(folder: Path, user: str, searches: list[tuple[str, str]]) -> None:
    """``user``'s searches ``(query, "YYYY-MM-DD HH:MM:SS")``, each with a click on
    ``http://www.<first word>.com/``."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = [
        f"{query}\t{stamp}\nhttp://www.{query.split()[0]}.com/\n" for query, stamp in searches
    ]
    (folder / f"{user}.txt").write_text("\n".join(blocks))
