"""Where a job's files go: names, folders, and a check that they can be written before any work."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KernelvizError
from ..files.images import IMAGE_SUFFIXES

__all__ = ["QUIET", "Log", "check_folder", "check_writable", "output_paths", "unique_stems"]


def _quiet(message: str) -> None:
    return None


@dataclass(frozen=True)
class Log:
    """Where a job reports as it goes: ``info`` for what it wrote, ``warn`` for what the user should know.

    The CLI prints them (warnings on stderr); the Python API default says nothing.
    """

    info: Callable[[str], None] = field(default=_quiet)
    warn: Callable[[str], None] = field(default=_quiet)


#: A log that says nothing (the default of every job).
QUIET = Log()


def output_paths(output: Path | None, stems: Sequence[str], suffix: str = ".png") -> list[Path]:
    """One output file per stem: ``output`` itself for a single ``.png``, else ``output/stem + suffix``.

    Raises:
        KernelvizError: a file name for several outputs, or an image suffix kernelviz does not write.
    """
    if output is not None and output.suffix.lower() in IMAGE_SUFFIXES - {suffix}:
        raise KernelvizError(
            f"-o {output}: kernelviz writes {suffix} files; give a name ending in {suffix}, or a folder"
        )
    if len(stems) == 1 and output is not None and output.suffix.lower() == suffix:
        return [output]
    folder = output if output is not None else Path(".")
    if folder.suffix.lower() == suffix:
        raise KernelvizError(f"-o {folder} is a file name, but there are {len(stems)} outputs: give a folder")
    return [folder / f"{stem}{suffix}" for stem in stems]


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems for naming outputs, with ``_i`` added where two inputs share a stem."""
    stems = [p.stem for p in paths]
    return [f"{s}_{i}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


def check_folder(folder: Path) -> None:
    """Make sure files can be created in ``folder``, before any computing.

    Creates the folder (as writing would) and a temporary file in it, removed at once.

    Raises:
        KernelvizError: a folder that cannot be created or written, or one whose path is a file.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".kernelviz-check.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise KernelvizError(f"cannot write into {folder}: {reason}; choose another -o") from err


def check_writable(paths: Sequence[Path]) -> None:
    """:func:`check_folder` for the folder of each of the files ``paths``."""
    for folder in dict.fromkeys(Path(p).parent for p in paths):
        check_folder(folder)
