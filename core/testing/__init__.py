"""medkit.testing: the contract suites plugin tests subclass, and synthetic data for them.

A plugin's tests import only :mod:`medkit.api` and this namespace (tests/test_import_rules.py). Beyond the
contract a test needs the suites and synthetic runs of this package and a few host-side names the contract
leaves out: the process-wide plugin host (:func:`create`, :func:`get_host`, :func:`reset_host`), the engine
that runs a configuration (:class:`Engine`, :func:`load_config`, :func:`compose`) and the readers that
check what a run wrote (:func:`load_tensors`, :func:`read_matrix`). This package sits above the registry
(it builds the plugin under test by name), so it may re-export them; the names live in their own modules
and are re-exported here, as :mod:`medkit.api` does.

Names load on first use (PEP 562 ``__getattr__``), so ``import medkit.testing`` stays light (no torch).
The leaf modules (``medkit.testing.contracts``…) are this package's own layout; plugin tests use the
names here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medkit.api.lazy import lazy_exports as _lazy_exports

#: public name → ``"module"`` or ``"module:attribute"`` (the attribute's name where it differs).
_EXPORTS: dict[str, str] = {
    # the contract suites a plugin's tests subclass
    "ModalityContract": "medkit.testing.contracts", "TokenizerContract": "medkit.testing.contracts",
    "ObjectiveContract": "medkit.testing.contracts", "StrategyContract": "medkit.testing.contracts",
    "TaskContract": "medkit.testing.tasks", "tiny_backbone": "medkit.testing.tasks",
    # synthetic data and runs of the real engine on it
    "run_synthetic": "medkit.testing.synthetic", "use_synthetic_host": "medkit.testing.synthetic",
    # real runs in a subprocess with one logger plugin installed from its source tree
    "plugin_run_env": "medkit.testing.logged_runs", "run_two_stages": "medkit.testing.logged_runs",
    "step_rows": "medkit.testing.logged_runs", "expected_curves": "medkit.testing.logged_runs",
    "NOT_TERMS": "medkit.testing.logged_runs",
    # fault injection at file-system commit points
    "CommitPoints": "medkit.testing.faults",
    # the process-wide plugin host
    "PluginHost": "medkit.registry.host", "create": "medkit.registry.host", "get_host": "medkit.registry.host",
    "reset_host": "medkit.registry.host",
    # running a configuration
    "Selection": "medkit.config.compose", "compose": "medkit.config.compose",
    "Engine": "medkit.engine.engine", "load_config": "medkit.engine.engine", "StepPlan": "medkit.engine.plan",
    "NullReporter": "medkit.api.progress", "COMPONENTS_KEY": "medkit.api.components",
    # reading back what a run wrote, and sizes to check against
    "load_tensors": "medkit.storage.tensors", "read_matrix": "medkit.eval.matrices",
    "count_parameters": "medkit.models.encoder",
    "read_labels": "medkit.data.windows", "window_starts": "medkit.data.windows",
    "IMAGENET_MEAN": "medkit.data.image2d", "IMAGENET_STD": "medkit.data.image2d",
    "MonaiBackbone": "medkit.finetune.backbones",
}

#: the testing surface, sorted (tests/api/test_testing_namespace.py: the same names as ``_EXPORTS``)
__all__ = [
    "COMPONENTS_KEY", "CommitPoints", "Engine", "IMAGENET_MEAN", "IMAGENET_STD", "ModalityContract",
    "MonaiBackbone", "NOT_TERMS", "NullReporter", "ObjectiveContract", "PluginHost", "Selection", "StepPlan",
    "StrategyContract", "TaskContract", "TokenizerContract", "compose", "count_parameters", "create",
    "expected_curves", "get_host", "load_config", "load_tensors", "plugin_run_env", "read_labels", "read_matrix",
    "reset_host", "run_synthetic", "run_two_stages", "step_rows", "tiny_backbone", "use_synthetic_host",
    "window_starts",
]


__getattr__, __dir__ = _lazy_exports(globals(), _EXPORTS, __all__, "what plugin tests may use is "
    "medkit.api.__all__ and medkit.testing.__all__")


if TYPE_CHECKING:  # the same names for type checkers (tests/api/test_testing_namespace.py keeps both in step)
    from medkit.api.components import COMPONENTS_KEY
    from medkit.api.progress import NullReporter
    from medkit.config.compose import Selection, compose
    from medkit.data.image2d import IMAGENET_MEAN, IMAGENET_STD
    from medkit.data.windows import read_labels, window_starts
    from medkit.engine.engine import Engine, load_config
    from medkit.engine.plan import StepPlan
    from medkit.eval.matrices import read_matrix
    from medkit.finetune.backbones import MonaiBackbone
    from medkit.models.encoder import count_parameters
    from medkit.registry.host import PluginHost, create, get_host, reset_host
    from medkit.storage.tensors import load_tensors
    from medkit.testing.contracts import ModalityContract, ObjectiveContract, StrategyContract, TokenizerContract
    from medkit.testing.faults import CommitPoints
    from medkit.testing.logged_runs import NOT_TERMS, expected_curves, plugin_run_env, run_two_stages, step_rows
    from medkit.testing.synthetic import run_synthetic, use_synthetic_host
    from medkit.testing.tasks import TaskContract, tiny_backbone
