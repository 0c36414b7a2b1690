"""Reading and writing run configs; a config received in a run directory or from the Hub stays inert.

medkit never resolves an OmegaConf interpolation (``${oc.env:VAR}``, ``${...}``) in a config it reads
back: such a file could read the user's environment or files and ``medkit push`` would then upload
them. A ``${`` anywhere in a loaded config (key or value) is **refused** with one line naming the file
and the key — configs medkit writes are always fully resolved, so only a crafted or hand-edited file
holds one. So are Hydra's instantiation keys (``_target_``, ``_args_``, ...) and explicit YAML tags
(:mod:`medkit.config.received`, the gate every received file passes). YAML aliases are refused too (a
few lines could expand to gigabytes), and every YAML/JSON error names the file, the line and the column.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, cast

from medkit.api.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.yaml"
#: No medkit config comes near this; a larger file is refused before it is read.
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def to_yaml(cfg: dict[str, Any]) -> str:
    """``cfg`` as YAML (OmegaConf's dialect; nothing is resolved)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(cfg))


def _key_path(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def check_inert(data: Any, source: str, prefix: str = "") -> None:
    """Refuse any interpolation (``${``) and any instantiation key (``_target_``, ``_args_``, ...) in
    the keys or values of a loaded config (:func:`medkit.config.received.check_received`).

    Args:
        data: plain containers (dicts, lists, scalars).
        source: the file it came from (named in the message).
    """
    from medkit.config.received import check_received

    check_received(data, source, prefix)


def _yaml_error(exc: Exception, source: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"{source}: not valid YAML{where} ({problem}); the file is corrupted or was not "
                       f"written by medkit")


def _check_structure(text: str, source: str) -> None:
    """One YAML document whose root is a mapping, with no aliases (streamed: linear time)."""
    import yaml

    from medkit.config.received import YamlKeyPath, refuse_tag

    depth, root_seen, paths = 0, False, YamlKeyPath()
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.ScalarEvent)):
                refuse_tag(event, paths.node(event), source)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                paths.end()
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(f"{source}: YAML aliases (*{event.anchor}) are not accepted in a medkit "
                                  f"config; write the values out")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.ScalarEvent)) and depth == 0:
                if root_seen:
                    raise ConfigError(f"{source}: holds more than one YAML document")
                root_seen = True
                if not isinstance(event, yaml.MappingStartEvent):
                    raise ConfigError(f"{source}: is not a mapping of config sections (run:, trainer:, ...)")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from exc
    if not root_seen:
        raise ConfigError(f"{source}: is empty; it should hold the run's config sections")


def from_yaml(text: str, source: str = "<config text>") -> dict[str, Any]:
    """Parse a config without resolving anything (see the module docstring for what is refused).

    Args:
        text: the YAML.
        source: what to name in messages (the file).
    """
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _check_structure(text, source)
    try:
        node = OmegaConf.create(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from exc
    except (OmegaConfBaseException, RecursionError) as exc:
        raise ConfigError(f"{source}: not a valid config ({str(exc).splitlines()[0]})") from exc
    data = OmegaConf.to_container(node, resolve=False)
    check_inert(data, source)
    return cast(dict[str, Any], data)  # the root is a mapping (checked above)


def _read_text(path: Path, what: str) -> str:
    """The text of a regular file of sane size (a FIFO or device is refused before any read)."""
    try:
        st = os.stat(path)  # follows links: the Hub cache links snapshots to blobs
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path} is not a regular file; a {what} must be one")
    if st.st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path} is {st.st_size} bytes; a {what} is far smaller (at most "
                              f"{MAX_CONFIG_BYTES} bytes), so this is not one")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); the file is corrupted") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from exc


def load_run_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config saved in a run directory (pre-training or fine-tuning), parsed inertly.

    Args:
        path: a run directory (its ``config.yaml`` is read) or the YAML file itself.

    Raises:
        CheckpointError: no ``config.yaml``, or not a regular file of sane size.
        ConfigError: not valid YAML, not a mapping, or it holds an interpolation or alias
            (the message names the file and the key).
    """
    path = Path(path)
    file = path / CONFIG_FILE if path.is_dir() else path
    if path.is_dir() and not os.path.lexists(file):
        raise CheckpointError(f"{path} is not a medkit run directory (no {CONFIG_FILE})")
    return from_yaml(_read_text(file, "run config"), str(file))


def read_config_json(path: str | os.PathLike[str]) -> Any:
    """A JSON config (a checkpoint's ``config.json``) parsed and checked like :func:`load_run_config`."""
    path = Path(path)
    text = _read_text(path, "JSON config")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is corrupted") from exc
    check_inert(data, str(path))
    return data
