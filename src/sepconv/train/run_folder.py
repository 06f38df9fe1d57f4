"""An output folder belongs to one run: claimed with a lock, marked with a run id, refused to others.

Without this, a second run into the same ``--out`` kept the first run's checkpoints, pruned its own, and
``--resume`` silently continued the other run. Now:

* :func:`check_out_dir` refuses empty or unsafe folders (the current directory, one of its parents,
  the home folder, the file-system root, an existing file, device, FIFO or socket);
* :func:`claim_run_folder` takes an exclusive lock (``.sepconv.lock``; a second process on the same
  folder is refused at once, and the lock dies with its process), then refuses a folder that holds
  another run's files unless the run is resumed (same run id) or ``overwrite`` clears it first, and
  writes ``run.json`` (``run_id``, ``kind``, start time) for a new run;
* :meth:`RunFolder.abandon` gives a new run's folder back when the run fails before training starts
  (everything in it was written by this run: the claim needs an empty folder), so that the corrected
  command is not refused as "already holds a run"; runs validate everything they can *before*
  claiming, so this is for what cannot be checked earlier (a trainer that fails to start);
* :func:`finished_run` tells a finished run (its ``result.json``) from one that can be resumed.

And what a run folder says about the model files in it, one function per question, for every command
that is handed a model file: :func:`model_file_path` (the weights a checkpoint's ``.state`` stands
for), :func:`training_config` (the run's ``config.json``), :func:`trained_on` (the data set and split
seed the model was trained on) and :func:`data_for_model` (which data set and split seed to use with
it, by the one seed rule of :func:`split_seed`).

The run id also goes into every checkpoint's file name, so only this run's checkpoints are pruned or
resumed (:mod:`sepconv.train.checkpoint`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sepconv.errors import SepconvError
from sepconv.io.atomic import atomic_write_bytes, non_regular_kind

__all__ = [
    "CONFIG_FILE",
    "LOCK_NAME",
    "RESULT_FILE",
    "RUN_FILE",
    "STATE_SUFFIX",
    "WEIGHTS_SUFFIX",
    "RunFolder",
    "RunFolderError",
    "check_out_dir",
    "claim_run_folder",
    "data_for_model",
    "finished_run",
    "model_file_path",
    "new_run_id",
    "read_run_file",
    "split_seed",
    "trained_on",
    "training_config",
]

#: The file that says which run owns the folder.
RUN_FILE = "run.json"
#: The file a finished run writes its result into.
RESULT_FILE = "result.json"
#: The lock file that keeps two runs out of one folder.
LOCK_NAME = ".sepconv.lock"
#: The run's settings (TrainConfig.to_dict()), written when it starts: the data set, the split seed.
CONFIG_FILE = "config.json"
# A checkpoint is two files, step-N-RUN.state (training state) and step-N-RUN.safetensors (the model
# file); sepconv.train.checkpoint writes them, this module and every command read them.
#: The suffix of a checkpoint's training-state file (``step-N-RUN.state``).
STATE_SUFFIX = ".state"
#: The suffix of a checkpoint's model file (``step-N-RUN.safetensors``).
WEIGHTS_SUFFIX = ".safetensors"
# Files an earlier sepconv (before run.json) left in its folders: enough to recognise one to clear.
_LEGACY_MARKERS = (CONFIG_FILE, "results.json")


class RunFolderError(SepconvError, ValueError):
    """The output folder cannot be used for this run (unsafe, locked, or another run's)."""


def new_run_id() -> str:
    """A short random id, unique enough to tell runs apart in one folder: 12 hex digits."""
    return secrets.token_hex(6)


def check_out_dir(out_dir: str | os.PathLike[str], *, param: str = "out_dir") -> Path:
    """``out_dir`` as a path, or :class:`RunFolderError` when it is empty or unsafe to fill or clear.

    ``param`` is the name of the caller's parameter that gave the folder: the errors name it.
    """
    text = os.fspath(out_dir)
    if not text.strip():
        raise RunFolderError(f"{param} must name a folder, got {text!r}", param=param)
    path = Path(text).expanduser()
    resolved = path.resolve()
    if path.exists() and not path.is_dir():
        kind = non_regular_kind(path) or "an existing file"
        raise RunFolderError(
            f"{param} {text!r} is {kind}, not a folder; give a folder (new or empty)", param=param
        )
    current = Path.cwd().resolve()
    unsafe = {Path(resolved.anchor), Path.home().resolve()}
    if resolved in unsafe or resolved == current or resolved in current.parents:
        raise RunFolderError(
            f"{param} {text!r} is {resolved}, the current folder, one of its parents, the home folder or the "
            "root; give a folder of its own (e.g. runs/NAME)",
            param=param,
        )
    return path


def read_run_file(folder: Path) -> dict[str, Any] | None:
    """The ``run.json`` of ``folder``, or None when there is none (or it is unreadable)."""
    try:
        document = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and isinstance(document.get("run_id"), str) else None


def finished_run(folder: Path, run_id: str) -> dict[str, Any] | None:
    """The ``result.json`` of run ``run_id`` in ``folder`` if that run finished, else None.

    A run writes ``result.json`` when it ends (its last epoch, ``max_steps`` or early stopping); a run
    stopped by Ctrl-C, a crash or a kill has none, and is resumed from its newest checkpoint.
    """
    try:
        document = json.loads((folder / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("run_id") != run_id:
        return None
    return document


@dataclass
class RunFolder:
    """A claimed output folder; ``release()`` (or the end of the process) drops the lock.

    ``created``: the outermost folder the claim made (the folder itself or a missing parent), which
    :meth:`abandon` removes again; None when the folder existed.
    """

    path: Path
    run_id: str
    kind: str
    resumed: bool = False
    created: Path | None = None
    _lock: IO[bytes] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Drop the folder's lock, so another run may claim it (a second call does nothing)."""
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def holds_only_its_claim(self) -> bool:
        """Whether nothing but ``run.json`` (and the lock) is in the folder: the run has written nothing."""
        return [path.name for path in _contents(self.path)] == [RUN_FILE]

    def abandon(self) -> None:
        """Give the folder back after the run failed before training started, and release the lock.

        A new run's folder was empty when claimed, so everything in it is this run's and is removed
        (the folder too, when the claim created it): the corrected command then starts without
        ``--overwrite``. A resumed run's folder holds the run being resumed: only the lock is released.
        """
        try:
            if not self.resumed and self._lock is not None:
                for path in _contents(self.path):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                if self.created is not None:
                    (self.path / LOCK_NAME).unlink(missing_ok=True)
                    for folder in (self.path, *self.path.parents):
                        folder.rmdir()  # each is empty: the claim made it for this run
                        if folder == self.created:
                            break
        finally:
            self.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lock(folder: Path, param: str) -> IO[bytes]:
    handle = open(folder / LOCK_NAME, "a+b")  # noqa: SIM115 (held open for the whole run)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the other checks still apply
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunFolderError(
            f"{param} {folder} is in use by another sepconv run right now; wait for it or choose another folder",
            param=param,
        ) from None
    return handle


def _contents(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.name != LOCK_NAME)


def _clear(folder: Path, param: str) -> None:
    contents = _contents(folder)
    if (
        contents
        and read_run_file(folder) is None
        and not any((folder / name).exists() for name in _LEGACY_MARKERS)
    ):
        raise RunFolderError(
            f"{param} {folder} holds files that are not a sepconv run ({contents[0].name}, ...); refusing to "
            "overwrite it: choose another folder",
            param=param,
        )
    for path in contents:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def claim_run_folder(
    out_dir: str | os.PathLike[str],
    *,
    kind: str,
    overwrite: bool = False,
    resume_run_id: str | None = None,
    param: str = "out_dir",
) -> RunFolder:
    """Lock ``out_dir`` for one run of ``kind`` ("train", "demo"); create it if needed.

    A new run needs an empty folder, or ``overwrite`` (which clears an earlier run's files, and refuses
    a folder that is not a sepconv run). A resumed run (``resume_run_id``) needs the folder's
    ``run.json`` to carry that id. Raises :class:`RunFolderError` naming the folder otherwise.
    """
    folder = check_out_dir(out_dir, param=param)
    created = None
    for missing in (folder, *folder.parents):
        if missing.exists():
            break
        created = missing
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder, param)
    try:
        existing = read_run_file(folder)
        if resume_run_id is not None:
            if existing is None or existing["run_id"] != resume_run_id:
                found = "no run.json" if existing is None else f"run {existing['run_id']}"
                raise RunFolderError(
                    f"{param} {folder} does not hold the run being resumed (run {resume_run_id}; found {found})",
                    param=param,
                )
            return RunFolder(folder, resume_run_id, kind, resumed=True, _lock=lock)
        if overwrite:
            _clear(folder, param)
        elif _contents(folder):
            what = f"{existing.get('kind', 'a')} run {existing['run_id']}" if existing else "files"
            hint = "resume it to continue, " if existing and existing.get("kind") == "train" else ""
            raise RunFolderError(
                f"{param} {folder} already holds {what} ({_contents(folder)[0].name}, ...); {hint}"
                "overwrite it to clear it first, or choose another folder",
                param=param,
            )
        run_id = new_run_id()
        document = {"run_id": run_id, "kind": kind, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_bytes(folder / RUN_FILE, (json.dumps(document, indent=2) + "\n").encode())
        return RunFolder(folder, run_id, kind, created=created, _lock=lock)
    except BaseException:
        lock.close()
        raise


# --- what a run folder says about a model file in it ---------------------------------------------


def model_file_path(path: str | os.PathLike[str]) -> Path:
    """The model file ``path`` names: itself, or for a checkpoint's ``.state`` the weights beside it.

    >>> model_file_path("runs/a/checkpoints/step-00000012-0a1b2c3d4e5f.state").name
    'step-00000012-0a1b2c3d4e5f.safetensors'
    >>> model_file_path("runs/a/model.safetensors").name
    'model.safetensors'
    """
    file = Path(path)
    return file.with_suffix(WEIGHTS_SUFFIX) if file.suffix == STATE_SUFFIX else file


def training_config(model_file: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.json`` of the training run that wrote ``model_file`` (or its ``.state``), if any.

    A run writes its model file into its folder (``model.safetensors``) and its checkpoints into the
    ``checkpoints/`` subfolder, so the config is beside the file or one folder up. None for anything
    else: a registered model name, a file outside a run folder, an unreadable config.
    """
    file = model_file_path(model_file)
    if not file.is_file():
        return None
    for folder in (file.parent, file.parent.parent):
        config = folder / CONFIG_FILE
        if config.is_file():
            try:
                document = json.loads(config.read_text())
            except (OSError, ValueError):
                return None
            return document if isinstance(document, dict) else None
    return None


def trained_on(model_file: str | os.PathLike[str]) -> tuple[str, int] | None:
    """(data set name, split seed) the model in ``model_file`` was trained on, from its run; else None."""
    config = training_config(model_file)
    if config is None or not config.get("dataset"):
        return None
    return str(config["dataset"]), int(config.get("seed") or 0)


def split_seed(model_file: str | os.PathLike[str], dataset: str, seed: int | None = None) -> int:
    """The split seed to load ``dataset`` with for the model in ``model_file``: the one seed rule.

    ``seed`` when one is given. Otherwise, when ``dataset`` is the data set the model was trained on,
    the seed of its run: the split seed decides which images are test images, so only the run's seed
    keeps its test split the images the model never saw (and calibration images inside its training
    split). Otherwise 0, every command's default seed.
    """
    if seed is not None:
        return seed
    found = trained_on(model_file)
    return found[1] if found is not None and found[0] == dataset else 0


def data_for_model(
    model_file: str | os.PathLike[str], dataset: str | None = None, seed: int | None = None
) -> tuple[str, int] | None:
    """(data set name, split seed) to use with ``model_file``; None when there is no data set to use.

    The data set is ``dataset`` when given, else the one the model was trained on (its run's
    ``config.json``); the seed follows :func:`split_seed`.
    """
    if dataset is None:
        found = trained_on(model_file)
        if found is None:
            return None
        dataset = found[0]
    return dataset, split_seed(model_file, dataset, seed)
