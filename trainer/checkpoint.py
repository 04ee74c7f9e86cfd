"""Checkpoints of the unified trainer: save, find the latest, load networks, resume training.

Layout (DESIGN.md "Runs and results"), `results/<config name>/models/weights_<epoch>/` (or
`weights_<epoch>_step<step>/`):
    <network name>.pth   one state_dict per network, always in the plain single-process form (no
                         DDP `module.` or torch.compile `_orig_mod.` prefix)
    optimizer.pth, scheduler.pth, scaler.pth   their state_dicts, where the run has them
    trainer_state.pth    the trainer's state (step, epoch, config name, ...) plus, under "rng", the
                         states of the Python, NumPy, torch CPU and CUDA generators (trainer/rng.py)

Atomicity: every file is written through utils.atomic, into a scratch folder
`<folder>.tmp-<pid>` beside the target, which is renamed into place once everything is written.
A folder named `weights_*` therefore only ever exists complete, whenever the process dies (SIGKILL
included). An existing folder of the same name is replaced by renaming it to `<folder>.old-<pid>`,
renaming the new one in, then deleting the old one; a run killed between these two renames leaves
the old folder, which `latest_checkpoint` renames back.

Loading (fixing the reference's silent partial load, spec/vfdepth.md §7): wrapper prefixes are
normalised in both directions (a DDP checkpoint loads into a plain model and a plain one into a
DDP-wrapped model), a state_dict nested under a "model" or "state_dict" entry is accepted, and any
missing key, unexpected key or shape mismatch raises `CheckpointMismatchError` naming the file and
the keys, unless strict=False, which loads the matching part, warns and returns the report.

Every file is read with `torch.load(weights_only=True)`: checkpoints hold only tensors and plain
values (save_checkpoint converts NumPy values, paths and dataclasses in the trainer state and
refuses anything else when saving, not when resuming).
"""

import dataclasses
import os
import pickle
import re
import shutil
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from trainer.rng import capture_rng_state, restore_rng_state
from utils.atomic import atomic_open

PathLike = Union[str, os.PathLike]

OPTIMIZER_FILE = "optimizer.pth"
SCHEDULER_FILE = "scheduler.pth"
SCALER_FILE = "scaler.pth"
STATE_FILE = "trainer_state.pth"
RNG_KEY = "rng"  # the entry of trainer_state.pth holding the generator states

_RESERVED_NAMES = {Path(f).stem for f in (OPTIMIZER_FILE, SCHEDULER_FILE, SCALER_FILE, STATE_FILE)}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / DataParallel, torch.compile
_NESTED_ENTRIES = ("state_dict", "model")  # layouts that keep the weights under one entry
_CHECKPOINT_NAME = re.compile(r"^weights_(\d+)(?:_step(\d+))?$")
_SCRATCH_NAME = re.compile(r"^(?P<base>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")
_LIST_LIMIT = 5  # keys of each kind named in a mismatch message


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model (or optimizer) it is loaded into. `reports` holds the
    LoadReport of each network that did not fit (empty for an optimizer/scheduler mismatch)."""

    def __init__(self, message: str, reports: Optional[List["LoadReport"]] = None):
        super().__init__(message)
        self.reports = list(reports or [])


@dataclasses.dataclass
class LoadReport:
    """How a network's checkpoint file fitted the network it was loaded into."""
    name: str
    file: str
    missing: List[str] = dataclasses.field(default_factory=list)  # in the model, not in the file
    unexpected: List[str] = dataclasses.field(default_factory=list)  # in the file, not in the model
    # (key, shape in the file, shape in the model)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = dataclasses.field(default_factory=list)
    ignored: List[str] = dataclasses.field(default_factory=list)  # non-tensor entries of the file
    stripped_prefix: str = ""  # wrapper prefix removed from the file's keys ("module." for DDP)
    loaded: int = 0  # entries copied into the model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = _LIST_LIMIT) -> str:
        def listed(keys: List[str]) -> str:
            more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s) (in the model, not in the file): "
                         f"{listed(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s) (in the file, not in the model): "
                         f"{listed(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{key} {list(file_shape)} in the file vs {list(model_shape)} in the model"
                      for key, file_shape, model_shape in self.mismatched]
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {listed(shapes)}")
        if not parts:
            return f"{self.file}: all {self.loaded} entries fit network {self.name!r}"
        return f"{self.file} (network {self.name!r}): " + "; ".join(parts)


# ------------------------------------------------------------------------------------------------
# Wrappers and keys


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers (any
    nesting). A module whose only child is `module`, with no parameters or buffers of its own,
    counts as a wrapper too: the same rule applies on saving and on loading."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model = inner
            continue
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and _is_wrapper(model):
            model = inner
    return model


def _is_wrapper(model: nn.Module) -> bool:
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return True
    return list(model._modules) == ["module"] and not model._parameters and not model._buffers


def _strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> Tuple[Mapping[str, Any], str]:
    """Remove the wrapper prefixes that every key carries (`module.`, `_orig_mod.`, nested);
    returns the new state_dict (its `_metadata` renamed alike) and the prefix removed."""
    keys = list(state_dict)
    stripped = ""
    while keys:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            break
        keys = [k[len(prefix):] for k in keys]
        stripped += prefix
    if not stripped:
        return state_dict, ""
    out = OrderedDict((key[len(stripped):], value) for key, value in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:  # keyed by module path without the trailing dot ("" is the root)
        renamed = OrderedDict()
        for path, value in metadata.items():
            dotted = f"{path}." if path else ""
            if dotted.startswith(stripped):
                renamed[dotted[len(stripped):].rstrip(".")] = value
        out._metadata = renamed
    return out, stripped


def _extract_state_dict(obj: Any, file: Path) -> Tuple[Mapping[str, Any], List[str]]:
    """The state_dict in a loaded network file: the file itself, or its "state_dict" / "model"
    entry (other layouts). Non-tensor entries beside the weights (e.g. monodepth2's `height`,
    `width`) are left out and returned by name; `_extra_state` entries are kept."""
    while isinstance(obj, Mapping):
        nested = next((obj[k] for k in _NESTED_ENTRIES if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{file}: holds a {type(obj).__name__}, not a state_dict")
    ignored = [key for key, value in obj.items()
               if not torch.is_tensor(value) and not str(key).endswith("_extra_state")]
    if ignored:
        kept = OrderedDict((key, value) for key, value in obj.items() if key not in ignored)
        if getattr(obj, "_metadata", None) is not None:
            kept._metadata = obj._metadata
        obj = kept
    return obj, [str(key) for key in ignored]


def _compare(name: str, file: Path, model_sd: Mapping[str, Any], file_sd: Mapping[str, Any],
             stripped: str, ignored: List[str]) -> LoadReport:
    report = LoadReport(name=name, file=str(file), stripped_prefix=stripped, ignored=ignored)
    report.missing = [key for key in model_sd if key not in file_sd]
    report.unexpected = [key for key in file_sd if key not in model_sd]
    for key, value in file_sd.items():
        target = model_sd.get(key)
        if torch.is_tensor(value) and torch.is_tensor(target) and value.shape != target.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(target.shape)))
    return report


def _read(path: Path, map_location: Any = "cpu") -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise RuntimeError(f"{path}: not a checkpoint of tensors and plain values "
                           f"(torch.load with weights_only=True refused it: {error})") from error


# ------------------------------------------------------------------------------------------------
# Saving


def _plain(value: Any, where: str) -> Any:
    """`value` as tensors and plain Python values (what weights_only loading accepts)."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    if isinstance(value, (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"trainer state {where}: key {key!r} is not a str or int")
            out[key] = _plain(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"trainer state {where}: a {type(value).__name__} cannot be checkpointed "
                    "(only tensors, numbers, strings, None, and lists/tuples/dicts of them)")


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush a file or folder to the disk where the platform allows it (durability against a
    power cut; atomicity against a killed process does not need it)."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _move_into_place(scratch: Path, folder: Path) -> None:
    if not os.path.lexists(folder):
        os.rename(scratch, folder)
        return
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if os.path.lexists(old):
        shutil.rmtree(old)
    os.rename(folder, old)
    try:
        os.rename(scratch, folder)
    except BaseException:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(folder: PathLike, networks: Mapping[str, nn.Module], optimizer=None,
                    scheduler=None, scaler=None, state: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a complete checkpoint folder atomically (see the module docstring) and return it.

    networks: {name: module}, each saved as `<name>.pth` in plain single-process form (wrappers
        are unwrapped). optimizer / scheduler / scaler: saved where given.
    state: the trainer state; must hold "step" (the order of `latest_checkpoint`); "epoch", the
        config name and anything else plain are kept as given. The RNG states are added under "rng".
    """
    folder = Path(folder)
    state = dict(state or {})
    if "step" not in state:
        raise ValueError("save_checkpoint: state must hold 'step' (checkpoints are ordered by it)")
    if RNG_KEY in state:
        raise ValueError(f"save_checkpoint: state key {RNG_KEY!r} is reserved for the RNG states")
    for name in networks:
        if (not name or name != Path(name).name or name.startswith(".")
                or name in _RESERVED_NAMES):
            raise ValueError(f"save_checkpoint: {name!r} cannot name a network file "
                             f"(reserved: {sorted(_RESERVED_NAMES)})")
    if _SCRATCH_NAME.match(folder.name):
        raise ValueError(f"save_checkpoint: {folder.name!r} looks like a scratch folder name")

    # Everything is gathered before the disk is touched.
    files: List[Tuple[str, Any]] = [(f"{name}.pth", unwrap_model(module).state_dict())
                                    for name, module in networks.items()]
    files = [(file, _strip_wrapper_prefixes(sd)[0]) for file, sd in files]
    if optimizer is not None:
        files.append((OPTIMIZER_FILE, optimizer.state_dict()))
    if scheduler is not None:
        files.append((SCHEDULER_FILE, scheduler.state_dict()))
    if scaler is not None:
        files.append((SCALER_FILE, scaler.state_dict()))
    trainer_state = _plain(state, "")
    trainer_state[RNG_KEY] = capture_rng_state()
    files.append((STATE_FILE, trainer_state))

    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    if os.path.lexists(scratch):
        shutil.rmtree(scratch)
    scratch.mkdir()
    try:
        for file, obj in files:
            with atomic_open(scratch / file, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
        _fsync(scratch, directory=True)
        _move_into_place(scratch, folder)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _fsync(folder.parent, directory=True)
    return folder


# ------------------------------------------------------------------------------------------------
# Finding


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def clean_stale_scratch(models_root: PathLike) -> None:
    """Remove the `<name>.tmp-<pid>` folders of saves that died (their process is gone; this
    process's own count as stale, so do not call this while a save of this process is running),
    and rename a `<name>.old-<pid>` back to `<name>` where a replacement died between its renames.
    Folders of a live process on this machine are left alone. Call it on one rank only."""
    root = Path(models_root)
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        match = _SCRATCH_NAME.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _pid_alive(pid):
            continue
        base = root / match["base"]
        if match["kind"] == "old" and not os.path.lexists(base):
            os.rename(entry, base)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def latest_checkpoint(models_root: PathLike, clean_stale: bool = True) -> Optional[Path]:
    """The complete `weights_<epoch>` / `weights_<epoch>_step<step>` folder of `models_root` with
    the highest saved step (then epoch, then modification time); None where there is none. Scratch
    folders are ignored (and, with clean_stale, the stale ones cleaned first); folders without a
    readable trainer_state.pth (e.g. the reference's weights-only folders) are skipped."""
    root = Path(models_root)
    if not root.is_dir():
        return None
    if clean_stale:
        clean_stale_scratch(root)
    best_key, best = None, None
    for entry in root.iterdir():
        match = _CHECKPOINT_NAME.match(entry.name)
        state_path = entry / STATE_FILE
        if not match or not entry.is_dir() or not state_path.is_file():
            continue
        try:
            saved = _read(state_path)
            step = int(saved["step"])
            epoch = int(saved.get("epoch", match.group(1)))
        except Exception as error:  # an unreadable folder must not hide the others
            warnings.warn(f"skipping checkpoint {entry}: cannot read its step ({error})", stacklevel=2)
            continue
        key = (step, epoch, state_path.stat().st_mtime_ns, entry.name)
        if best_key is None or key > best_key:
            best_key, best = key, entry
    return best


# ------------------------------------------------------------------------------------------------
# Loading


def load_networks(folder: PathLike, networks: Mapping[str, nn.Module],
                  names: Optional[Iterable[str]] = None, strict: bool = True,
                  map_location: Any = "cpu") -> Dict[str, LoadReport]:
    """Load `<folder>/<name>.pth` into networks[name] for each requested name (default: all of
    `networks`; `load.models_to_load` for evaluation). Wrappers are handled on both sides.

    All files are read and checked before any network is changed. strict=True: any missing key,
    unexpected key or shape mismatch raises CheckpointMismatchError (nothing is loaded). strict=False:
    the entries that fit are loaded, a warning describes the rest. Returns {name: LoadReport}.
    """
    folder = Path(folder)
    names = [names] if isinstance(names, str) else list(networks if names is None else names)
    unknown = [name for name in names if name not in networks]
    if unknown:
        raise KeyError(f"load_networks: no network named {unknown} (networks: {list(networks)})")
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")

    plans = []
    for name in names:
        path = folder / f"{name}.pth"
        if not path.is_file():
            present = sorted(p.name for p in folder.glob("*.pth"))
            raise FileNotFoundError(f"{path}: no checkpoint file for network {name!r} "
                                    f"(the folder holds {present})")
        file_sd, ignored = _extract_state_dict(_read(path, map_location), path)
        file_sd, stripped = _strip_wrapper_prefixes(file_sd)
        target = unwrap_model(networks[name])
        report = _compare(name, path, target.state_dict(), file_sd, stripped, ignored)
        plans.append((target, file_sd, report))

    failing = [report for _, _, report in plans if not report.ok]
    if failing and strict:
        raise CheckpointMismatchError(
            "checkpoint does not fit the model (strict loading; strict=False loads the part that "
            "fits):\n  " + "\n  ".join(report.describe() for report in failing), failing)

    for target, file_sd, report in plans:
        if report.ok:
            target.load_state_dict(file_sd, strict=True)
            report.loaded = len(file_sd)
        else:
            bad = {key for key, _, _ in report.mismatched} | set(report.unexpected)
            fitting = OrderedDict((k, v) for k, v in file_sd.items() if k not in bad)
            if getattr(file_sd, "_metadata", None) is not None:
                fitting._metadata = file_sd._metadata
            target.load_state_dict(fitting, strict=False)
            report.loaded = len(fitting)
            warnings.warn(f"partial load, {report.loaded} entries loaded: {report.describe()}",
                          stacklevel=2)
    return {report.name: report for _, _, report in plans}


def _load_into(obj: Any, state_dict: Any, path: Path) -> None:
    try:
        obj.load_state_dict(state_dict)
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointMismatchError(f"{path}: does not fit the {type(obj).__name__} of this run: "
                                      f"{error}") from error


def load_training_state(folder: PathLike, optimizer=None, scheduler=None, scaler=None,
                        restore_rng: bool = True, map_location: Any = "cpu") -> Dict[str, Any]:
    """Restore the optimizer, scheduler and scaler given (each file must exist) and the RNG states
    from a checkpoint folder; returns the saved trainer state (step, epoch, ...; without "rng").
    All files are read before anything is changed. Load the networks first (load_networks)."""
    folder = Path(folder)
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path}: no trainer state (not a checkpoint of this trainer, "
                                "or an incomplete one)")
    saved = dict(_read(state_path))
    pending = []
    for obj, file in ((optimizer, OPTIMIZER_FILE), (scheduler, SCHEDULER_FILE), (scaler, SCALER_FILE)):
        if obj is None:
            continue
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the checkpoint holds no {Path(file).stem} state "
                                    f"but a {type(obj).__name__} was given to restore")
        pending.append((obj, _read(path, map_location), path))

    for obj, state_dict, path in pending:
        if obj is scaler:
            enabled = getattr(scaler, "is_enabled", lambda: True)()
            if not state_dict or not enabled:
                if state_dict or enabled:  # one of the two runs used the scaler, the other not
                    warnings.warn(f"{path}: the scaler was {'disabled' if enabled else 'enabled'} "
                                  "in the saved run and is not now: its state is not restored",
                                  stacklevel=2)
                continue
        _load_into(obj, state_dict, path)

    rng = saved.pop(RNG_KEY, None)
    if restore_rng:
        if rng is None:
            warnings.warn(f"{state_path}: holds no RNG states; the random streams are not restored",
                          stacklevel=2)
        else:
            restore_rng_state(rng)
    return saved
