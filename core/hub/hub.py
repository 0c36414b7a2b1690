"""Checkpoints that travel: resolve ``hf-hub:``/``local-dir:`` references, pull them, and rebuild
models from ``config.json`` by registered names only (pushing is :mod:`medkit.hub.push`)."""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit.storage import files as ck
from medkit.api.components import Create
from medkit.api.errors import CheckpointError, ConfigError, PluginError
from medkit.hub.transfer import size_of, transfer
from medkit.models.sharing import SHARED_KEY, check_recorded

if TYPE_CHECKING:
    from medkit.models.build import Model

log = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
MODEL_FILE = "model.safetensors"
ARCH_FILE = "config.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: What a pull fetches: the files ``medkit push`` writes, nothing else a repository may hold.
PULL_PATTERNS = ["config.json", "config.yaml", "model.safetensors", "manifest.json", "README.md",
                 "matrix.png", "tokenizers/*", "strategy/*", "metrics/eval.json", "metrics/matrix*.csv"]


@dataclass(frozen=True)
class Reference:
    """A parsed checkpoint reference: ``hf-hub:USER/NAME[@REV]``, ``local-dir:PATH`` or a path."""

    kind: str  # "hf-hub" | "local"
    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id or "") or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise ConfigError(f"--repo-id {repo_id!r} is not USER/NAME (letters, digits, '-', '_', '.'), "
                          f"e.g. --repo-id alice/medkit-ct-tiny")
    return repo_id


def parse_reference(ref: str | os.PathLike[str]) -> Reference:
    """Split a checkpoint reference into its kind, repository/revision or path."""
    text = os.fspath(ref)
    if text.startswith(HF_PREFIX):
        repo, at, rev = text[len(HF_PREFIX):].partition("@")
        if at and not rev:
            raise ConfigError(f"{text}: empty revision after '@' (use hf-hub:USER/NAME@main or drop the '@')")
        try:
            check_repo_id(repo)
        except ConfigError:
            raise ConfigError(f"{text}: expected hf-hub:USER/NAME[@REVISION], e.g. "
                              f"hf-hub:alice/medkit-ct-tiny@v1") from None
        return Reference("hf-hub", repo_id=repo, revision=rev or None)
    if text.startswith(LOCAL_PREFIX):
        path = text[len(LOCAL_PREFIX):]
        if not path:
            raise ConfigError(f"{text}: expected local-dir:PATH")
        return Reference("local", path=path)
    return Reference("local", path=text)


# -- Hub settings, read when used (the library reads its environment once, at import) ---------
def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


def _etag_timeout() -> float:
    from huggingface_hub import constants

    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or constants.HF_HUB_ETAG_TIMEOUT)
    except ValueError:
        return float(constants.HF_HUB_ETAG_TIMEOUT)


def _medkit_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("medkit")
    except md.PackageNotFoundError:
        return "0"


def _transport_errors() -> tuple[type[Exception], ...]:
    """Network errors of whichever HTTP client this huggingface_hub uses (httpx2, httpx, requests)."""
    import importlib

    found: list[type[Exception]] = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _redact(text: str) -> str:
    """Remove the Hub token from an error message, whatever produced it."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # noqa: BLE001 - no readable token store: nothing to redact
        token = None
    return text.replace(token, "<token>") if token else text


def _hub_error(exc: Exception, what: str, *, repo_id: str, revision: str | None = None) -> CheckpointError:
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    endpoint = hub_endpoint()
    if isinstance(exc, GatedRepoError):
        msg = f"{what}: {repo_id} is gated on {endpoint}; request access on its page, then set HF_TOKEN"
    elif isinstance(exc, RepositoryNotFoundError):
        msg = (f"{what}: repository {repo_id} not found on {endpoint} (or it is private and no valid token "
               f"was given: set HF_TOKEN or run `hf auth login`)")
    elif isinstance(exc, RevisionNotFoundError):
        msg = f"{what}: {repo_id} has no revision {revision!r}; check the branch, tag or commit"
    elif isinstance(exc, LocalEntryNotFoundError):
        msg = (f"{what}: cannot reach {endpoint} and {repo_id} is not in the cache {hub_cache_dir()}; "
               f"check the connection (or HF_HUB_OFFLINE)")
    else:
        msg = f"{what}: {' '.join(str(exc).split())}"
    return CheckpointError(_redact(msg))


# -- resolving ----------------------------------------------------------------------------------
def _check_checkpoint_dir(path: Path, ref: str) -> Path:
    if not path.is_dir():
        raise CheckpointError(f"{ref}: {path} is not a directory; give the run directory (or the folder "
                              f"a pull wrote), not a file inside it")
    missing = [f for f in (ARCH_FILE, MODEL_FILE) if not os.path.lexists(path / f)]
    if missing:
        raise CheckpointError(f"{ref}: {path} is not a medkit checkpoint ({', '.join(missing)} missing); "
                              f"expected a run directory or a repository written by `medkit push`")
    return path


def resolve_checkpoint(ref: str | os.PathLike[str], *, local_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local directory holding ``config.json`` and ``model.safetensors`` for ``ref``.

    Args:
        ref: ``hf-hub:USER/NAME[@REV]`` (downloaded into the Hugging Face cache, ``HF_HOME``/
            ``HF_HUB_CACHE``, from ``HF_ENDPOINT``), ``local-dir:PATH`` or a bare path.
        local_dir: for ``hf-hub:`` references, download into this folder instead of the cache.
    """
    parsed = parse_reference(ref)
    text = os.fspath(ref)
    if parsed.kind == "hf-hub":
        assert parsed.repo_id is not None
        return _check_checkpoint_dir(_download(parsed.repo_id, parsed.revision, local_dir), text)
    path = Path(parsed.path or "").expanduser()
    if not path.exists():
        hint = ""
        if parsed.path and not text.startswith(LOCAL_PREFIX) and REPO_ID.match(parsed.path):
            hint = f"; for a Hub repository write hf-hub:{parsed.path}"
        raise CheckpointError(f"{text}: {path} does not exist{hint}")
    return _check_checkpoint_dir(path.resolve(), text)


def _download(repo_id: str, revision: str | None, local_dir: str | os.PathLike[str] | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    where = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    log.info("fetching %s from %s", where, hub_endpoint())
    failed: tuple[type[Exception], ...] = (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError,
                                               *_transport_errors())
    try:
        with transfer(f"fetched {where}") as counts:  # huggingface_hub's bars on, then size and rate
            path = snapshot_download(repo_id, revision=revision, repo_type="model", endpoint=hub_endpoint(),
                                     cache_dir=hub_cache_dir(),
                                     local_dir=None if local_dir is None else str(local_dir),
                                     allow_patterns=PULL_PATTERNS, library_name="medkit",
                                     library_version=_medkit_version(), etag_timeout=_etag_timeout())
            files = [f for f in Path(path).rglob("*") if f.is_file() and ".cache" not in f.parts]
            counts.update(files=len(files), bytes=size_of(files))
    except failed as exc:
        raise _hub_error(exc, f"cannot fetch {where}", repo_id=repo_id, revision=revision) from exc
    return Path(path)


def pull(ref: str, *, to: str | os.PathLike[str] | None = None) -> Path:
    """Fetch ``ref`` (into the cache, or into ``to``) and check that its weights are readable."""
    parsed = parse_reference(ref)
    if parsed.kind == "hf-hub" or to is None:
        path = resolve_checkpoint(ref, local_dir=to)
    else:
        src = resolve_checkpoint(ref)
        path = Path(to).expanduser().resolve()
        if path == src:
            raise ConfigError(f"--to {to} is the checkpoint itself")
        ck.scan_tensors_file(src / MODEL_FILE)  # refuse before copying anything
        check_received_files(src)
        for rel in _matching_files(src):
            real = Path(os.path.realpath(src / rel))
            if src.resolve() not in real.parents:
                raise CheckpointError(f"{src / rel} resolves to {real}, outside {src}; a checkpoint's files "
                                      f"must be inside it — replace the link by the file itself")
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, path / rel)
    ck.scan_tensors_file(path / MODEL_FILE)  # corrupted, crafted or non-finite: an error now, not later
    check_received_files(path)
    return path


def check_received_files(root: Path) -> None:
    """``config.json`` and, where present, ``config.yaml`` and ``manifest.json`` of a checkpoint
    through the gate for received files (:mod:`medkit.config.received`)."""
    from medkit.config.received import received_config, received_manifest

    read_architecture(root)
    if os.path.lexists(root / "config.yaml"):
        received_config(root / "config.yaml")
    if os.path.lexists(root / "manifest.json"):
        received_manifest(root / "manifest.json")


def _matching_files(root: Path) -> list[str]:
    import fnmatch

    # walk through symlinked folders too (a run directory reads metrics/, strategy/… through its
    # current generation), but not into the generations themselves
    rels = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        rel_dir = Path(folder).relative_to(root)
        if rel_dir == Path("."):
            dirs[:] = [d for d in dirs if d not in ("generations", "current")]
        rels += [(rel_dir / n).as_posix() for n in names if (Path(folder) / n).is_file()]
    return sorted(r for r in rels if any(fnmatch.fnmatch(r, pat) for pat in PULL_PATTERNS))


# -- rebuilding ---------------------------------------------------------------------------------
def _find_target(node: Any, where: str = "") -> str | None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                return where or "<top>"
            found = _find_target(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = _find_target(v, f"{where}[{i}]")
            if found:
                return found
    return None


def read_architecture(root: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a checkpoint through the gate for received files
    (:func:`medkit.config.received.received_architecture`): medkit format 1, every section present and
    of its type, no ``${...}``, ``_target_`` or other instantiation key."""
    from medkit.config.received import received_architecture

    arch = received_architecture(Path(root) / ARCH_FILE)
    target = _find_target(arch)  # the gate refuses it first; kept as a second lock
    if target:
        raise CheckpointError(f"{Path(root) / ARCH_FILE}: {target} holds a _target_; medkit builds components "
                              f"by their registered name only and never imports code named in a file")
    return arch


def pretrained_config(root: str | os.PathLike[str]) -> dict[str, Any]:
    """A run-config-shaped dict (``encoder``, ``tokenizer``, ``objective``, ``run.uses``) rebuilt from
    ``config.json``; what :func:`medkit.models.build.build_model` takes."""
    from medkit.models.build import trunk_shape

    arch = read_architecture(root)
    cfg = {"run": {"uses": copy.deepcopy(arch["uses"])}, "encoder": copy.deepcopy(arch["encoder"]),
           "tokenizer": copy.deepcopy(arch["tokenizer"]), "objective": copy.deepcopy(arch["objective"])}
    if SHARED_KEY in arch:  # modalities whose pretext head is one module (joint, strategy.decoders=dimension)
        cfg["run"][SHARED_KEY] = check_recorded(arch[SHARED_KEY], arch["uses"], where=str(Path(root) / ARCH_FILE))
    try:
        shape = trunk_shape(cfg)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{Path(root) / ARCH_FILE}: encoder section cannot be resolved: {exc}") from exc
    stored = arch.get("trunk")
    if isinstance(stored, dict):
        for key, value in shape.items():
            if key in stored and float(stored[key]) != float(value):
                raise CheckpointError(f"{Path(root) / ARCH_FILE} is inconsistent: encoder resolves to "
                                      f"{key}={value} but trunk says {key}={stored[key]}")
    for name, params in cfg["tokenizer"].items():  # a vocabulary path from another machine → the assets
        vocab = params.get("vocab_file") if isinstance(params, dict) else None
        asset = Path(root) / "tokenizers" / name / "tokenizer.json"
        if vocab and not Path(str(vocab)).expanduser().exists() and asset.is_file():
            log.info("tokenizer %s: %s is not here, using %s", name, vocab, asset)
            params["vocab_file"] = None
    return cfg


def _build(cfg: dict[str, Any], root: Path, ref: str, with_heads: bool, create: Create) -> Model:
    from medkit.models.build import build_model

    try:
        return build_model(cfg, create=create, assets_dir=root, with_heads=with_heads)
    except PluginError as exc:
        raise PluginError(f"{ref}: its config.json needs a component that is not available: {exc}") from exc


def _in_model_order(state: dict[str, Any], model: Model) -> dict[str, Any]:
    """Checkpoint tensors in the model's parameter order, so the first mismatch reported is the first
    in the architecture (safetensors headers come in no fixed order)."""
    order = {k: i for i, k in enumerate(model.state_dict())}
    return dict(sorted(state.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def load_pretrained(ref: str | os.PathLike[str], *, create: Create, with_heads: bool = True,
                    resolved: Path | None = None) -> Model:
    """Rebuild the encoder (and pretext heads) of ``ref`` by registered names and load its weights
    (``create``: ``PluginHost.create``; :func:`medkit.load_pretrained` passes the installed plugins').

    Components are created by their registered names in ``config.json``; a name whose plugin is not
    installed is a :class:`PluginError` naming the distribution to install. Weights that do not fit
    the architecture are a :class:`CheckpointError` naming the first mismatching key and shapes.
    The model is returned in ``eval()`` mode. ``resolved``: the folder :func:`resolve_checkpoint`
    already gave for ``ref`` (not fetched again).
    """
    text = os.fspath(ref)
    root = resolve_checkpoint(ref) if resolved is None else Path(resolved)
    cfg = pretrained_config(root)
    model = _build(cfg, root, text, with_heads, create)
    state = ck.load_tensors(root / MODEL_FILE)
    if not with_heads:
        state = {k: v for k, v in state.items() if not k.startswith("heads.")}
    ck.load_state_checked(model.modules(), model.full_state(_in_model_order(state, model)),
                          source=f"{text} ({root / MODEL_FILE})", strict=True)
    model.modules().eval()
    return model


def load_pretrained_weights(model: Model, root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Load a checkpoint into a model that may add modalities (``medkit run --from``).

    Every tensor of ``model`` must come from the checkpoint except the pretext heads of modalities and
    the tokenizers the checkpoint does not have (they keep their fresh initialisation). Heads in the
    checkpoint for modalities ``model`` lacks are left out. Shapes are checked key by key.

    Returns:
        ``{"new": [...], "dropped": [...]}``: model key prefixes left fresh, checkpoint prefixes unused.
    """
    from medkit.models.sharing import adopt_heads

    root = Path(root)
    arch = read_architecture(root)
    source_shared = check_recorded(arch.get(SHARED_KEY) or {}, arch["uses"], where=str(root / ARCH_FILE))
    state, source_heads, merged = adopt_heads(ck.load_tensors(root / MODEL_FILE), arch["uses"], source_shared,
                                              model.shared)
    source_tokenizers = {u["tokenizer"] for u in arch["uses"].values()}
    fresh = {f"heads.{m}." for m in model.heads if m not in source_heads and m not in model.shared}
    fresh |= {f"encoder.tokenizers.{t}." for t in model.encoder.tokenizers if t not in source_tokenizers}
    dropped = {f"heads.{m}." for m in source_heads if m not in model.heads}
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not any(k.startswith(p) for p in dropped)}
    required = [k for k in own if not any(k.startswith(p) for p in fresh)]
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{root / MODEL_FILE}: missing key {missing[0]} (and {len(missing) - 1} more); "
                              f"the checkpoint does not match this architecture")
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise CheckpointError(f"{root / MODEL_FILE}: unexpected key {unexpected[0]} (and "
                              f"{len(unexpected) - 1} more); the checkpoint does not match this architecture")
    ck.load_state_checked(model.modules(), model.full_state(_in_model_order(state, model)),
                          source=str(root / MODEL_FILE), strict=False)
    return {"new": sorted(fresh), "dropped": sorted(dropped | merged)}


# -- pushing ------------------------------------------------------------------------------------
