"""The plugin API's version (``major.minor``) and the check the host makes when it loads a plugin."""

from __future__ import annotations

from typing import Any

from medkit.api.errors import PluginError

#: The version of the contract :mod:`medkit.api` exports, ``"major.minor"``. The minor grows when names
#: are added (a plugin written for 1.0 runs on 1.1); the major grows when a name is removed or changes
#: meaning (a plugin written for another major is refused at load).
MEDKIT_API_VERSION = "1.4"
API_MAJOR, API_MINOR = (int(x) for x in MEDKIT_API_VERSION.split("."))


def parse_api_version(declared: Any) -> tuple[int, int] | None:
    """``(major, minor)`` of what a plugin declares: an int major (``1`` is ``1.0``) or ``"major.minor"``;
    ``None`` when it is neither."""
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared, 0
    if isinstance(declared, str):
        parts = declared.split(".")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
    return None


def check_plugin_api(module: str, declared: Any) -> None:
    """Refuse a plugin module whose ``MEDKIT_API_VERSION`` this medkit cannot serve, in one line.

    Args:
        module: the module the plugin's entry point names (who).
        declared: its ``MEDKIT_API_VERSION`` (``None`` when it declares none).

    Raises:
        PluginError: no or a malformed declaration, another major, or a newer minor than this medkit's.
    """
    if declared is None:
        raise PluginError(f"module {module} does not declare MEDKIT_API_VERSION; add "
                          f"MEDKIT_API_VERSION = \"{MEDKIT_API_VERSION}\" next to its hooks")
    version = parse_api_version(declared)
    if version is None:
        raise PluginError(f"module {module} declares MEDKIT_API_VERSION = {declared!r}; write the plugin "
                          f"API version it was built against as \"major.minor\" (this medkit: "
                          f"\"{MEDKIT_API_VERSION}\")")
    major, minor = version
    if major != API_MAJOR:
        raise PluginError(f"module {module} was written for medkit plugin API {declared!r}, but this medkit "
                          f"provides API {MEDKIT_API_VERSION} (another major version); install a version "
                          f"of the plugin made for medkit plugin API {API_MAJOR}.x")
    if minor > API_MINOR:
        raise PluginError(f"module {module} needs medkit plugin API {major}.{minor}, but this medkit provides "
                          f"{MEDKIT_API_VERSION}; upgrade medkit")
