"""``medkit push``: upload a run's model, architecture, tokenizer assets, sanitised manifest/config and
model card to the Hugging Face Hub (never buffers, features, Fisher, optimizer/RNG state or data paths)."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.api.components import Components
from medkit.api.errors import ConfigError
from medkit.hub.hub import (LOCAL_PREFIX, _hub_error, _medkit_version, _transport_errors, check_repo_id, hub_endpoint,
                            load_pretrained)
from medkit.hub.publish import prepare_push
from medkit.hub.transfer import size_of, transfer
from medkit.storage.lock import run_lock

log = logging.getLogger(__name__)
#: Repository paths a push owns: stale ones (e.g. an earlier push's strategy state) are deleted.
MANAGED = ("strategy/", "tokenizers/", "metrics/", "matrix.png")


@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit: str
    url: str
    files: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)



def push(run_dir: str | os.PathLike[str], repo_id: str, *, private: bool = False, revision: str | None = None,
         license: str | None = None, include_strategy_state: bool = False,
         commit_message: str | None = None, components: Components, provider: Any = None,
         publishable: Any = None) -> PushResult:
    """Upload a run's model, architecture, tokenizer assets, sanitised manifest/config and model card.

    The token comes from huggingface_hub's usual sources (``HF_TOKEN``, the stored login) and is never
    logged. Rehearsal buffers, cached features, Fisher information, optimizer/RNG state and data paths
    are never uploaded (see :func:`medkit.hub.publish.prepare_push`; ``publishable`` gives the strategy
    state roots a strategy declares). ``components`` is the plugin host: it rebuilds the run before
    anything is uploaded and types the re-emitted config against the components' schemas.
    """
    check_repo_id(repo_id)
    run_dir = Path(run_dir)
    with run_lock(run_dir, "push", read_only=True):  # no run may write it while it is uploaded
        return _push(run_dir, repo_id, private=private, revision=revision, license=license,
                     include_strategy_state=include_strategy_state, commit_message=commit_message,
                     components=components, provider=provider, publishable=publishable)


def _push(run_dir: Path, repo_id: str, *, private: bool, revision: str | None, license: str | None,
          include_strategy_state: bool, commit_message: str | None, components: Components,
          provider: Any = None, publishable: Any = None) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi(endpoint=hub_endpoint(), library_name="medkit", library_version=_medkit_version())
    branch = revision or "main"
    failed: tuple[type[Exception], ...] = (HfHubHTTPError, OSError, ValueError, *_transport_errors())
    try:  # the token first: a missing or refused one must not wait for the work below
        user = api.whoami().get("name", "?")
    except LocalTokenNotFoundError:
        raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login` before "
                          "`medkit push`") from None
    except failed as exc:
        raise _hub_error(exc, f"cannot push {run_dir} to {repo_id}: the token check (whoami) failed; "
                         f"set HF_TOKEN or run `hf auth login`", repo_id=repo_id) from exc
    # Refuse early a run that would not rebuild on the other side.
    load_pretrained(LOCAL_PREFIX + str(run_dir), create=components.create)
    with tempfile.TemporaryDirectory(prefix="medkit-push-") as tmp:
        files = prepare_push(run_dir, Path(tmp), repo_id=repo_id, license=license,
                             include_strategy_state=include_strategy_state, provider=provider,
                             publishable=publishable, host=components)
        try:
            log.info("pushing %s to %s@%s on %s as %s (%d files)", run_dir, repo_id, branch, hub_endpoint(),
                     user, len(files))
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if branch != "main":
                api.create_branch(repo_id, branch=branch, exist_ok=True, repo_type="model")
            existing = set(api.list_repo_files(repo_id, revision=branch, repo_type="model"))
            stale = sorted(p for p in existing - set(files) if p.startswith(MANAGED))
            ops: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(src))
                              for p, src in sorted(files.items())]
            ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
            with transfer(f"upload to {repo_id}@{branch}") as counts:  # huggingface_hub's bars on, then the rate
                counts.update(files=len(files), bytes=size_of(Path(src) for src in files.values()))
                info = api.create_commit(repo_id, operations=ops, revision=branch, repo_type="model",
                                         commit_message=commit_message or f"medkit push of {run_dir.name}")
        except LocalTokenNotFoundError:
            raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login` before "
                              "`medkit push`") from None
        except failed as exc:
            raise _hub_error(exc, f"cannot push {run_dir} to {repo_id}", repo_id=repo_id) from exc
    return PushResult(repo_id=repo_id, revision=branch, commit=info.oid, url=str(url), files=sorted(files),
                      deleted=stale)
