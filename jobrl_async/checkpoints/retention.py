"""Retention: which step folders a checkpoints URI keeps. Pure: no I/O.

Invariant (`folders_to_delete`): with B and L the folders best.json and latest.json point at
and N = checkpoints.keep_latest, a folder is deleted only if it is older than the newer of B
and L and is neither B, L nor one of the N newest resumable folders up to that pointer. So a
pointer never names a deleted folder, and a folder newer than both pointers (a write may be
on its way there) is never touched. The writer then deletes only the files in it that it
could have written itself (`Folder.own_files`): anything else under the URI is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..storage import ObjectInfo
from .formats import FOLDER_RE, LEARNER_FILES, MANIFEST, OWN_FILES, folder_order


@dataclass(frozen=True)
class Folder:
    name: str
    files: dict[str, int]  # direct children: name -> size

    @property
    def order(self) -> tuple[int, int]:
        return folder_order(self.name)

    @property
    def complete(self) -> bool:
        return MANIFEST in self.files

    @property
    def resumable(self) -> bool:
        return self.complete and all(name in self.files for name in LEARNER_FILES)

    @property
    def own_files(self) -> list[str]:
        """The files here this writer could have written: the only ones it ever deletes."""
        return [name for name in self.files if name in OWN_FILES]


def folders_from_listing(objects: Iterable[ObjectInfo]) -> dict[str, Folder]:
    """The step folders in a recursive listing of the checkpoints root (other keys ignored)."""
    files: dict[str, dict[str, int]] = {}
    for obj in objects:
        parts = obj.key.split("/")
        if len(parts) == 2 and FOLDER_RE.match(parts[0]):
            files.setdefault(parts[0], {})[parts[1]] = obj.size
    return {name: Folder(name, f) for name, f in sorted(files.items(), key=lambda kv: folder_order(kv[0]))}


def folders_to_delete(
    folders: dict[str, Folder], best: str | None, latest: str | None, keep_latest: int
) -> list[str]:
    """Retention: keep what `best` and `latest` point at and the last `keep_latest` resumable
    folders up to the newer pointer; delete every other folder older than that pointer."""
    pointed = [folders[n] for n in (best, latest) if n is not None and n in folders]
    if not pointed:
        return []
    boundary = max(f.order for f in pointed)
    resumable = sorted((f for f in folders.values() if f.resumable and f.order <= boundary),
                       key=lambda f: f.order, reverse=True)
    keep = {best, latest} | {f.name for f in resumable[:keep_latest]}
    return [f.name for f in folders.values() if f.order < boundary and f.name not in keep]
