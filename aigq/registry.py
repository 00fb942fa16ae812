"""The model registry: versioned model folders on disk, each with a manifest.

Layout under the root (``AIGQ_MODEL_REGISTRY``, default ``~/.cache/aigq/models``)::

    <root>/<name>/<version>/            a Hugging Face folder: config, weights, tokenizer
    <root>/<name>/<version>/manifest.json   what made it: data, config, metrics, parent
    <root>/<name>/LATEST                the newest published version's name

A version is ``v0001``, ``v0002``...: the next free number, taken by creating the folder
(``mkdir`` fails if another trainer took it first). A version is *published* once its
folder holds a manifest; LATEST is written last, through a rename, so a reader never sees a
version that is half written. ``resolve`` turns what a user types into a folder: a path to
a model folder, ``name`` (its LATEST) or ``name@version``.

The repository carries a trained default, ``models/aigq-direct/`` (:data:`SHIPPED`: a small
model folder with the manifest of the run that made it, whose ``data.command`` reproduces it
from ../shared/data). A bare ``aigq-direct`` resolves to it while the registry has no version
of its own, so ``aigq generate``, ``aigq demo`` and ``aigq eval`` work on a fresh checkout
without training first; a version trained here wins over it. The same holds for every model
folder beside it (``models/aigq-think``, the AIGQ-Think model ``aigq x2q build`` loads).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigq.errors import RegistryError

MANIFEST = "manifest.json"
DEFAULT_NAME = "aigq-direct"  # the embedded default model: what `aigq generate` loads
SHIPPED = Path(__file__).resolve().parents[1] / "models" / DEFAULT_NAME
"""The trained default the repository carries (see the module docstring)."""


def shipped_default() -> Path:
    """Where the trained default is: ``AIGQ_SHIPPED_MODEL`` when set (an installed package has
    no ``models/`` beside it: the images put it in ``/app/models/aigq-direct`` and say so), else
    :data:`SHIPPED`. Read when called, not at import."""
    env = os.environ.get("AIGQ_SHIPPED_MODEL")
    return Path(env).expanduser() if env else SHIPPED


_DEFAULT: Any = object()  # Registry(shipped=...) not given: shipped_default()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"v(\d{4,})")


def default_root() -> Path:
    """``AIGQ_MODEL_REGISTRY`` or ``~/.cache/aigq/models`` (read when called, not at import)."""
    env = os.environ.get("AIGQ_MODEL_REGISTRY")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aigq" / "models"


@dataclass(frozen=True)
class ModelRef:
    """One published (or being written) version of a model."""

    name: str
    version: str
    path: Path

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def manifest(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{self.tag}: no readable manifest at {self.path}") from exc
        return data


class Registry:
    """Versioned model folders under ``root`` (see the module docstring)."""

    def __init__(self, root: Path | None = None, shipped: Path | None = _DEFAULT) -> None:
        self.root = root if root is not None else default_root()
        self.shipped: Path | None = shipped_default() if shipped is _DEFAULT else shipped

    @staticmethod
    def _check_name(name: str) -> str:
        if not _NAME.fullmatch(name):
            raise RegistryError(f"model name {name!r}: 1-64 of A-Z a-z 0-9 . _ -")
        return name

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first."""
        folder = self.root / self._check_name(name)
        if not folder.is_dir():
            return []
        found = [
            p.name
            for p in folder.iterdir()
            if _VERSION.fullmatch(p.name) and (p / MANIFEST).is_file()
        ]
        return sorted(found, key=lambda v: int(v[1:]))

    def reserve(self, name: str) -> ModelRef:
        """A new, empty version folder of ``name`` (the next number)."""
        folder = self.root / self._check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        taken = [int(m.group(1)) for p in folder.iterdir() if (m := _VERSION.fullmatch(p.name))]
        number = max(taken, default=0) + 1
        while True:
            version = f"v{number:04d}"
            try:
                (folder / version).mkdir()
            except FileExistsError:  # another trainer took it: the next one
                number += 1
                continue
            return ModelRef(name, version, folder / version)

    def publish(self, ref: ModelRef, manifest: dict[str, Any]) -> ModelRef:
        """Write the manifest, then point LATEST at this version."""
        body = {"name": ref.name, "version": ref.version, **manifest}
        tmp = ref.path / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str))
        tmp.replace(ref.path / MANIFEST)
        latest = self.root / ref.name / ".LATEST.tmp"
        latest.write_text(ref.version + "\n")
        latest.replace(self.root / ref.name / "LATEST")
        return ref

    def set_latest(self, name: str, version: str) -> ModelRef:
        """Point LATEST at an already published ``version`` (a rollback), through a rename so
        that a reader sees the old or the new one, never half of it."""
        ref = self.get(name, version)  # raises unless published
        latest = self.root / ref.name / ".LATEST.tmp"
        latest.write_text(ref.version + "\n")
        latest.replace(self.root / ref.name / "LATEST")
        return ref

    def latest(self, name: str = DEFAULT_NAME) -> ModelRef | None:
        """The version LATEST names; with none published, the model of that name the
        repository carries (version ``shipped``: :data:`DEFAULT_NAME` at the shipped default,
        another name in the folder beside it, e.g. ``models/aigq-think``); else None."""
        folder = self.root / self._check_name(name)
        try:
            version = (folder / "LATEST").read_text().strip()
        except OSError:
            version = ""
        ref = ModelRef(name, version, folder / version)
        if version and (ref.path / MANIFEST).is_file():
            return ref
        shipped = self.shipped
        if shipped is not None and name != DEFAULT_NAME:
            shipped = shipped.parent / name
        if shipped is not None and (shipped / MANIFEST).is_file():
            return ModelRef(name, "shipped", shipped)
        return None

    def unfinished(self, spec: str) -> ModelRef:
        """``name@version`` of a reserved, not yet published version (to resume training)."""
        name, _, version = spec.partition("@")
        if not _VERSION.fullmatch(version):
            raise RegistryError(f"{spec!r}: give name@version, e.g. {DEFAULT_NAME}@v0003")
        ref = ModelRef(name, version, self.root / self._check_name(name) / version)
        if (ref.path / MANIFEST).is_file():
            raise RegistryError(f"{ref.tag} is already published; nothing to resume")
        if not ref.path.is_dir():
            raise RegistryError(f"{ref.tag} does not exist under {self.root}")
        return ref

    def get(self, name: str, version: str) -> ModelRef:
        ref = ModelRef(name, version, self.root / self._check_name(name) / version)
        if not (ref.path / MANIFEST).is_file():
            raise RegistryError(f"{ref.tag} is not in the registry at {self.root}")
        return ref

    def resolve(self, spec: str) -> ModelRef:
        """A folder path, ``name`` or ``name@version`` -> the model's folder.

        A path wins when it is a folder with a ``config.json`` (any Hugging Face model).
        """
        path = Path(spec).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            path = path.resolve()
            # a version folder of some registry (an unpublished candidate): say whose
            name = f"{path.parent.name}/{path.name}" if _VERSION.fullmatch(path.name) else path.name
            return ModelRef(name, "external", path)
        name, _, version = spec.partition("@")
        if version:
            return self.get(name, version)
        ref = self.latest(name)
        if ref is None:
            raise RegistryError(
                f"no model {spec!r}: not a model folder, and the registry at {self.root} has "
                f"no published {name!r} (train one: aigq train sft)"
            )
        return ref
