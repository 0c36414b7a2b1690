"""Where prepared data lives: a local folder or a URL litdata streams from (``s3://``, ``gs://``, ``local:``, …)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from medkit.api.errors import DataError

#: URL prefixes litdata's readers (``StreamingDataset`` and its downloaders) stream from.
URL_PREFIXES = ("s3://", "gs://", "r2://", "azure://", "hf://", "local:")
#: The client library each scheme needs, as ``pip install`` names it (s3/r2: litdata's own boto3).
CLIENTS = {"s3://": "boto3", "r2://": "boto3", "gs://": "google-cloud-storage",
           "azure://": "azure-storage-blob", "hf://": "huggingface_hub"}


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL litdata streams from (a ``file://`` URL is a local path)."""
    return isinstance(location, str) and location.startswith(URL_PREFIXES)


def normalise(location: str | Path) -> str:
    """``location`` as given for a URL; a local path (``file://`` stripped, ``~`` expanded) made absolute."""
    text = str(location)
    if is_url(text):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://"):]
    return str(Path(text).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    """``location`` and relative ``parts``, joined with ``/`` for a URL, as a path otherwise."""
    if is_url(location):
        return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(location, *parts))


def cache_dir(url: str) -> Path:
    """Local cache of a URL's files: ``$MEDKIT_CACHE_DIR/prepared/<sha256 of the URL>``, else under
    ``~/.cache/medkit`` (litdata keeps the chunks it downloads there too)."""
    env = os.environ.get("MEDKIT_CACHE_DIR")
    root = Path(env) if env else Path.home() / ".cache" / "medkit"
    return root / "prepared" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _scheme(url: str) -> str:
    return next(p for p in URL_PREFIXES if url.startswith(p))


def missing_client(url: str, exc: BaseException) -> DataError:
    """The error for a URL whose scheme's client library is not installed, naming what to install."""
    package = CLIENTS.get(_scheme(url), "the scheme's client library")
    return DataError(f"prepared data {url}: reading {_scheme(url)} URLs needs {package}, which is not installed "
                     f"({exc}); pip install {package}")


def downloader(url: str) -> Any:
    """litdata's downloader for ``url`` (its scheme's client), caching under :func:`cache_dir`.

    Raises:
        DataError: the scheme's client library is missing (naming the package to install).
    """
    from litdata.streaming.downloader import get_downloader

    cache = cache_dir(url)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        return get_downloader(url, str(cache), [])
    except (ModuleNotFoundError, ImportError) as exc:
        raise missing_client(url, exc) from exc


def read_bytes(location: str, relpath: str) -> bytes:
    """The bytes of ``relpath`` under ``location``: a local ``open()``, or for a URL a fresh copy
    fetched through litdata's downloader (never a stale cached one: the data may have been prepared
    again).

    Raises:
        DataError: a missing client library.
        OSError: the file cannot be read (not found, no access, network); the caller names the file.
    """
    if not is_url(location):
        return Path(location, relpath).read_bytes()
    get = downloader(location)
    local = cache_dir(location) / f"{relpath.replace('/', '__')}.{os.getpid()}"
    try:
        get.download_file(join(location, relpath), str(local))
        if not local.is_file():
            raise FileNotFoundError(f"{join(location, relpath)} was not found")
        return local.read_bytes()
    except (ModuleNotFoundError, ImportError) as exc:
        raise missing_client(location, exc) from exc
    except OSError:
        raise
    except Exception as exc:  # the clients' own errors (botocore, google.api_core, …): no common base
        raise OSError(f"{join(location, relpath)}: {type(exc).__name__}: {exc}") from exc
    finally:
        local.unlink(missing_ok=True)
