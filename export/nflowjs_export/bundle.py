"""Writing model bundles; the schema and the reader live with the runtime (``nflowjs_perception``).

A bundle is written to a temporary folder and renamed into place, so a crash never leaves half a
bundle, and an existing bundle is replaced only once the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from nflowjs_perception.bundle import Bundle, load_bundle, sha256_file


def write_bundle(folder: str | Path, bundle: Bundle, model_files: dict[str, Path]) -> Path:
    """Create ``folder`` with ``model_files`` (name -> source path) and ``bundle.json``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        for name, source in model_files.items():
            shutil.copyfile(source, staging / name)
            bundle.files[name] = sha256_file(staging / name)
        bundle.validate()
        (staging / "bundle.json").write_text(bundle.to_json())
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left by a run killed between the renames
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def add_bundle_file(folder: str | Path, source: Path, name: str) -> None:
    """Add a file (a TensorRT engine built later) to an existing bundle and record its hash."""
    folder = Path(folder)
    bundle = load_bundle(folder, verify_files=False)
    tmp = folder / f".{name}.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, folder / name)
    bundle.files[name] = sha256_file(folder / name)
    _write_atomically(folder / "bundle.json", bundle.to_json())


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
