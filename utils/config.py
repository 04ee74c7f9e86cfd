"""Load an experiment config: YAML file + command-line overrides, merged over the schema defaults,
validated, with derived values resolved, returned as one typed `Config` object.

Every error names where the value came from (file and line, or the command-line override), the
dotted key and what was expected, and suggests the closest valid key for a typo. All problems of a
file are reported together, before any data or model is touched.
"""

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from utils.atomic import write_text_atomic
from utils.config_schema import (ALIASES, DATA_REQUIREMENTS, REFERENCE_SIX_CAMERA_NEIGHBOURS, SECTIONS,
                                 DataConfig, DdpConfig, EvalConfig, LoadConfig, LoggingConfig, LossConfig,
                                 ModelConfig, TrainingConfig)

MODES = ("train", "eval")
_NONE_STRINGS = ("none", "null", "~")


class ConfigError(ValueError):
    """A config that cannot be used; the message lists every problem found."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("invalid config:\n  " + "\n  ".join(self.problems))


@dataclass
class Config:
    """The resolved experiment configuration (one attribute per section)."""
    name: str
    source: str
    mode: str
    model: ModelConfig
    data: DataConfig
    training: TrainingConfig
    loss: LossConfig
    eval: EvalConfig
    ddp: DdpConfig
    load: LoadConfig
    logging: LoggingConfig

    def to_dict(self, derived: bool = True) -> Dict[str, Dict[str, Any]]:
        """Sections as plain dicts; `derived=False` keeps only the keys a file may set."""
        return {section: {f.name: _plain(getattr(getattr(self, section), f.name))
                          for f in dataclasses.fields(getattr(self, section))
                          if derived or not f.metadata.get("derived")}
                for section in SECTIONS}

    def to_yaml(self) -> str:
        """The settable keys as YAML (loadable again as a config), the derived ones as comments."""
        header = f"# resolved config '{self.name}' (mode {self.mode}) from {self.source}\n"
        body = yaml.dump(self.to_dict(derived=False), Dumper=_ConfigDumper, sort_keys=False)
        derived = {f"{section}.{f.name}": _plain(getattr(getattr(self, section), f.name))
                   for section in SECTIONS for f in dataclasses.fields(getattr(self, section))
                   if f.metadata.get("derived")}
        footer = "# derived values:\n" + "".join(f"#   {k}: {v}\n" for k, v in derived.items())
        return header + body + footer

    def save(self, path: str) -> None:
        """Write the resolved config atomically (temporary file, then rename)."""
        write_text_atomic(path, self.to_yaml())


class _ConfigDumper(yaml.SafeDumper):
    """Sections and keys in block style, lists on one line: reads like a hand-written config."""


_ConfigDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


# ----------------------------------------------------------------------------------------------
# Public entry points


def load_config(config_file: str, overrides: Sequence[str] = (), mode: str = "train",
                weight_path: Optional[str] = None, check_paths: bool = False) -> Config:
    """Load, merge, validate and resolve a config.

    overrides: "section.key=value" strings; values are parsed as YAML ("4", "true", "[0, -1, 1]").
    mode: "train" or "eval" (eval forces one process and the eval batch size, like the reference).
    weight_path: checkpoint directory for evaluation; becomes data.load_weights_dir.
    check_paths: also require the paths the config names to exist (done when a run starts).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    raw, lines = _read_yaml(config_file)
    entries = _flatten_file(raw, config_file, lines)
    entries += [_parse_override(text) for text in overrides]
    values, problems = _collect_values(entries)
    sections = {}
    for name, cls in SECTIONS.items():
        built, section_problems = _build_section(name, cls, values.get(name, {}))
        sections[name] = built
        problems += section_problems
    if problems:
        raise ConfigError(problems)
    name = os.path.splitext(os.path.basename(config_file))[0]
    cfg = Config(name=name, source=config_file, mode=mode, **sections)
    explicit = {(section, k) for section, keys in values.items() for k in keys}
    problems = _resolve(cfg, explicit, weight_path)
    if not problems and check_paths:
        problems = _check_paths(cfg)
    if problems:
        raise ConfigError([f"{config_file}: {p}" for p in problems])
    return cfg


def schema_keys() -> List[str]:
    """Every settable dotted key, e.g. 'training.batch_size'."""
    return [f"{section}.{f.name}" for section, cls in SECTIONS.items()
            for f in dataclasses.fields(cls) if not f.metadata.get("derived")]


# ----------------------------------------------------------------------------------------------
# Reading: YAML file and overrides -> (origin, section, key, value) entries


@dataclass
class _Entry:
    origin: str      # "configs/x.yaml:12" or "command line 'training.batch_size=4'"
    dotted: str      # as written by the user
    value: Any


def _read_yaml(path: str) -> Tuple[dict, Dict[str, int]]:
    if not os.path.isfile(path):
        hint = _suggest_config_file(path)
        raise ConfigError([f"{path}: config file not found{hint}"])
    with open(path) as f:
        text = f.read()
    try:
        raw = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: not valid YAML: {err}"]) from None
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping of sections (model, data, ...), "
                           f"got a {type(raw).__name__}"])
    return raw, _key_lines(node)


def _key_lines(node, prefix: str = "") -> Dict[str, int]:
    """Line number (1-based) of every mapping key in a composed YAML document."""
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            dotted = f"{prefix}{key_node.value}"
            lines[dotted] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, dotted + "."))
    return lines


def _suggest_config_file(path: str) -> str:
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f" (folder '{folder}' does not exist either)"
    candidates = [f for f in os.listdir(folder) if f.endswith((".yaml", ".yml"))]
    close = difflib.get_close_matches(os.path.basename(path), candidates, n=1)
    return f"; did you mean '{os.path.join(folder, close[0])}'?" if close else ""


def _flatten_file(raw: dict, path: str, lines: Dict[str, int]) -> List[_Entry]:
    entries = []
    for section, body in raw.items():
        section = str(section)
        origin = f"{path}:{lines.get(section, '?')}"
        if section in SECTIONS and body is None:
            continue                                    # an empty section keeps its defaults
        if section in SECTIONS and not isinstance(body, dict):
            entries.append(_Entry(origin, section, _NotAMapping(body)))
            continue
        if not isinstance(body, dict):
            entries.append(_Entry(origin, section, body))
            continue
        for k, value in body.items():
            dotted = f"{section}.{k}"
            entries.append(_Entry(f"{path}:{lines.get(dotted, '?')}", dotted, value))
    return entries


@dataclass
class _NotAMapping:
    value: Any


def _parse_override(text: str) -> _Entry:
    origin = f"command line '{text}'"
    name, sep, value_text = text.partition("=")
    if not sep or not name.strip():
        return _Entry(origin, text, _BadOverride("expected KEY=VALUE, e.g. training.batch_size=4"))
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as err:
        return _Entry(origin, name.strip(), _BadOverride(f"value is not valid YAML: {err}"))
    return _Entry(origin, name.strip(), value)


@dataclass
class _BadOverride:
    reason: str


def _collect_values(entries: List[_Entry]):
    """Route entries to {section: {key: (origin, value)}}; unknown keys become problems."""
    values: Dict[str, Dict[str, Tuple[str, Any]]] = {}
    problems = []
    for entry in entries:
        if isinstance(entry.value, _BadOverride):
            problems.append(f"{entry.origin}: {entry.value.reason}")
            continue
        if isinstance(entry.value, _NotAMapping):
            problems.append(f"{entry.origin}: section '{entry.dotted}' must be a mapping of keys, "
                            f"got {entry.value.value!r}")
            continue
        section, _, k = entry.dotted.partition(".")
        if (section, k) in ALIASES:
            section, k = ALIASES[(section, k)]
        target = _field(section, k)
        if target is None:
            problems.append(f"{entry.origin}: unknown key '{entry.dotted}'{_suggest_key(entry.dotted)}")
        elif target.metadata.get("derived"):
            problems.append(f"{entry.origin}: '{section}.{k}' is derived ({target.metadata['help']}) "
                            f"and cannot be set")
        else:
            previous = values.setdefault(section, {}).get(k)
            from_command_line = entry.origin.startswith("command line")
            if previous is not None and not from_command_line and previous[1] != entry.value:
                problems.append(f"{entry.origin}: '{section}.{k}' is also set at {previous[0]} "
                                f"(the reference name of the same key) with another value")
            values[section][k] = (entry.origin, entry.value)
    return values, problems


def _field(section: str, name: str):
    cls = SECTIONS.get(section)
    if cls is None or not name:
        return None
    return next((f for f in dataclasses.fields(cls) if f.name == name), None)


def _suggest_key(dotted: str) -> str:
    if "." not in dotted:
        close = difflib.get_close_matches(dotted, list(SECTIONS), n=1, cutoff=0.6)
        sections = ", ".join(SECTIONS)
        return f"; did you mean '{close[0]}'?" if close else f" (sections are: {sections})"
    keys = schema_keys() + [f"{s}.{k}" for s, k in ALIASES]
    close = difflib.get_close_matches(dotted, keys, n=1, cutoff=0.6)
    if not close:   # a key in the wrong section, e.g. training.log_frequency
        leaf = dotted.split(".", 1)[1]
        close = [k for k in keys if k.split(".", 1)[1] == leaf][:1]
    return f"; did you mean '{close[0]}'?" if close else ""


# ----------------------------------------------------------------------------------------------
# Validation: raw values -> typed section objects


def _build_section(section: str, cls, given: Dict[str, Tuple[str, Any]]):
    kwargs, problems = {}, []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in given:
            continue
        origin, value = given[f.name]
        try:
            kwargs[f.name] = _coerce(value, hints[f.name], f.metadata)
        except _TypeProblem as problem:
            problems.append(f"{origin}: {section}.{f.name}: expected {problem.expected}, "
                            f"got {value!r}{problem.detail}")
    return cls(**kwargs), problems


class _TypeProblem(Exception):
    def __init__(self, expected: str, detail: str = ""):
        super().__init__(expected)
        self.expected, self.detail = expected, detail


def _coerce(value, annotation, meta):
    """Check `value` against a type annotation and the key's constraints; return the typed value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        if type(None) in args and (value is None or _is_none_string(value)):
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _coerce(value, option, meta)
            except _TypeProblem:
                pass
        expected = " or ".join(_describe(o, meta) for o in options)
        raise _TypeProblem(expected + (" or null" if type(None) in args else ""))
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise _TypeProblem(_describe(annotation, meta))
        if meta.get("length") is not None and len(value) != meta["length"]:
            raise _TypeProblem(_describe(annotation, meta), f" ({len(value)} items)")
        return [_coerce(item, args[0], dict(meta, length=None)) for item in value]
    return _check_scalar(_coerce_scalar(value, annotation, meta), meta, annotation)


def _coerce_scalar(value, annotation, meta):
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML reads "1e-4" (no dot) as a string; the reference configs are written that way.
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    raise _TypeProblem(_describe(annotation, meta))


def _check_scalar(value, meta, annotation):
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _TypeProblem("one of " + ", ".join(repr(c) for c in choices), hint)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = meta.get("minimum"), meta.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _TypeProblem(_describe(annotation, meta))
    return value


def _describe(annotation, meta) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, List):
        n = meta.get("length")
        inner = _describe(args[0], dict(meta, length=None))
        return f"a list of {n} items, each {inner}" if n else f"a list, each item {inner}"
    if origin is typing.Union:
        return " or ".join(_describe(a, meta) for a in args if a is not type(None))
    names = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}
    text = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
    if meta.get("choices") is not None:
        text = "one of " + ", ".join(repr(c) for c in meta["choices"])
    low, high = meta.get("minimum"), meta.get("maximum")
    if annotation in (int, float) and (low is not None or high is not None):
        bounds = []
        if low is not None:
            bounds.append(f">= {low}")
        if high is not None:
            bounds.append(f"<= {high}")
        text += " " + " and ".join(bounds)
    return text


def _is_none_string(value) -> bool:
    # The reference writes `syn_idx: None`, which YAML reads as the string 'None'.
    return isinstance(value, str) and value.strip().lower() in _NONE_STRINGS


# ----------------------------------------------------------------------------------------------
# Derived values and cross-key checks


def _resolve(cfg: Config, explicit, weight_path: Optional[str]) -> List[str]:
    problems = []
    data, model, training = cfg.data, cfg.model, cfg.training
    model.mode = cfg.mode
    data.log_path = os.path.join(data.log_dir, cfg.name)
    data.save_weights_root = os.path.join(data.log_path, "models")
    data.load_weights_dir = weight_path or os.path.join(data.save_weights_root, cfg.load.weights)
    data.num_cams = len(data.cameras)
    data.synthetic_root = os.path.dirname(data.data_path) if data.data_path.endswith(".json") else data.data_path
    problems += _resolve_frame_ids(data, explicit)
    problems += _resolve_requirements(data)
    problems += _resolve_neighbours(data)
    if cfg.mode == "train":
        cfg.eval.syn_visualize = False             # the synthesis sweep is an evaluation feature
    else:
        cfg.ddp.ddp_enable, cfg.ddp.world_size = False, 1
        training.batch_size = cfg.eval.eval_batch_size
        # --weight_path replaces the networks' weights: no ImageNet initialisation to read or download
        model.weights_init = False
    problems += _check_ranges(cfg)
    return problems


def _resolve_frame_ids(data: DataConfig, explicit) -> List[str]:
    if data.frame_ids is None:
        back = [-i for i in range(1, data.back_context + 1)]
        data.frame_ids = [0] + back + list(range(1, data.forward_context + 1))
        return []
    ids = data.frame_ids
    if 0 not in ids or len(set(ids)) != len(ids):
        return [f"data.frame_ids: expected distinct offsets including 0, got {ids}"]
    back, forward = max(0, -min(ids)), max(0, max(ids))
    problems = []
    for name, needed in (("back_context", back), ("forward_context", forward)):
        if ("data", name) in explicit and getattr(data, name) < needed:
            problems.append(f"data.{name}: {getattr(data, name)} is too small for "
                            f"data.frame_ids {ids} (needs {needed})")
        elif ("data", name) not in explicit:
            setattr(data, name, needed)
    return problems


def _resolve_requirements(data: DataConfig) -> List[str]:
    problems = []
    for name in ("train_requirements", "val_requirements"):
        value = getattr(data, name)
        words = re.findall(r"[A-Za-z_]+", value) if isinstance(value, str) else list(value)
        unknown = [w for w in words if w not in DATA_REQUIREMENTS]
        if unknown:
            problems.append(f"data.{name}: unknown requirement(s) {unknown}; allowed: {list(DATA_REQUIREMENTS)}")
        setattr(data, name.replace("requirements", "requirement_set"), sorted(set(words)))
    return problems


def _resolve_neighbours(data: DataConfig) -> List[str]:
    n = data.num_cams
    if data.rel_cam_list is None:
        if n == 6:
            data.rel_cam_list = [list(x) for x in REFERENCE_SIX_CAMERA_NEIGHBOURS]
        elif n <= 2:
            data.rel_cam_list = [[j for j in range(n) if j != i] for i in range(n)]
        return []
    if len(data.rel_cam_list) != n:
        return [f"data.rel_cam_list: expected one list per camera ({n}), got {len(data.rel_cam_list)}"]
    bad = [(i, j) for i, row in enumerate(data.rel_cam_list) for j in row if j == i or not 0 <= j < n]
    return [f"data.rel_cam_list: camera {i} cannot have neighbour {j} (cameras are 0..{n - 1})"
            for i, j in bad]


def _check_ranges(cfg: Config) -> List[str]:
    problems = []
    if not cfg.data.cameras or len(set(cfg.data.cameras)) != len(cfg.data.cameras):
        problems.append(f"data.cameras: expected distinct camera names, got {cfg.data.cameras}")
    pairs = [("training.min_depth", cfg.training.min_depth, "training.max_depth", cfg.training.max_depth),
             ("eval.eval_min_depth", cfg.eval.eval_min_depth, "eval.eval_max_depth", cfg.eval.eval_max_depth),
             ("model.proj_d_str", cfg.model.proj_d_str, "model.proj_d_end", cfg.model.proj_d_end)]
    for low_name, low, high_name, high in pairs:
        if not low < high:
            problems.append(f"{low_name} ({low}) must be smaller than {high_name} ({high})")
    if any(u <= 0 for u in cfg.model.voxel_unit_size):
        problems.append(f"model.voxel_unit_size: expected positive sizes, got {cfg.model.voxel_unit_size}")
    if cfg.training.scheduler == "multistep" and cfg.training.scheduler_milestones != sorted(
            cfg.training.scheduler_milestones):
        problems.append("training.scheduler_milestones: expected increasing epochs, got "
                        f"{cfg.training.scheduler_milestones}")
    if len(set(cfg.training.scales)) != len(cfg.training.scales):
        problems.append(f"training.scales: expected distinct scales, got {cfg.training.scales}")
    return problems


def _check_paths(cfg: Config) -> List[str]:
    problems = []
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            kind, value = f.metadata.get("path"), getattr(obj, f.name)
            if kind and value and cfg.data.synthetic and _inside(value, cfg.data.synthetic_root):
                continue                                 # rendered on first use
            if kind and value and not _path_exists(value, kind):
                problems.append(f"{section}.{f.name}: {kind if kind != 'any' else 'path'} not found: "
                                f"'{value}' (relative paths are taken from '{os.getcwd()}')")
    weights = cfg.model.weights_init
    if isinstance(weights, str) and not os.path.isfile(weights):
        problems.append(f"model.weights_init: weights file not found: '{weights}'")
    if (cfg.load.pretrain or cfg.mode == "eval") and not os.path.isdir(cfg.data.load_weights_dir):
        source = "--weight_path" if cfg.mode == "eval" else "data.load_weights_dir (load.weights)"
        problems.append(f"{source}: checkpoint folder not found: '{cfg.data.load_weights_dir}'")
    return problems


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder + os.sep)


def _path_exists(path: str, kind: str) -> bool:
    return {"file": os.path.isfile, "dir": os.path.isdir}.get(kind, os.path.exists)(path)
