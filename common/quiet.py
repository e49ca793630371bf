"""Third-party noise off by default: what TensorFlow, Flower, Ray, Opacus and Keras print on
every run, silenced before they are imported; all of it shown with ``--verbose`` or
``FEDCARE_VERBOSE=1``.

Call :func:`quiet_third_party` where a process starts, before the heavy imports: the
``fedcare`` commands, ``simulations.engine.simulate``, and the ServerApp and ClientApp modules (so
Ray workers and ``flwr run``'s app processes, which import them, are quiet too). It is cheap (no
third-party import) and idempotent. What it does, per source:

- TensorFlow's C++ layer: ``TF_CPP_MIN_LOG_LEVEL=3`` hides its logging once TensorFlow is
  up, but the ``cudart_stub`` / ``cpu_feature_guard`` / oneDNN lines at import are written to
  file descriptor 2 before absl's logging starts and ignore it (TF 2.19+). So the import of
  ``tensorflow`` (by anyone: Keras imports it) runs with fd 2 pointed at /dev/null, through a
  one-shot import hook; Python exceptions raised by the import still surface. Afterwards the
  ``tensorflow`` and ``absl`` Python loggers are set to ERROR.
- Flower: its "DEPRECATED FEATURE" notices (``run_simulation``'s 7 lines) and the
  end-of-run "Manually terminating ClientAppActor" are dropped by a filter on the ``flwr``
  logger; everything else Flower logs passes.
- Ray: ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0`` is Ray's own switch for its accelerator
  FutureWarning (fedcare hides GPUs itself). Ray's workers inherit the environment, but
  Flower's actor module imports TensorFlow in each worker before any fedcare code runs there;
  ``RAY_RUNTIME_ENV_HOOK`` (read by ``ray.init``, which Flower calls with a ``runtime_env``
  of its own) adds :func:`quiet_third_party` as the workers' ``worker_process_setup_hook``,
  so it runs first in every worker of ``fedcare simulate`` and of ``flwr run``'s simulation.
- Opacus's "Optimal order is the largest alpha" and the DeprecationWarning / FutureWarning
  family raised from inside third-party packages: ``warnings`` filters.

fedcare's own log records and warnings are never filtered. The environment variables are set
with ``setdefault``: a value the user exported wins.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import Any

VERBOSE_VARIABLE = "FEDCARE_VERBOSE"

QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # 2 still lets cuInit's "failed call" error through
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "GRPC_VERBOSITY": "ERROR",
    "RAY_RUNTIME_ENV_HOOK": "common.quiet.with_quiet_ray_workers",
}

# Packages whose deprecation chatter is not the user's to act on.
THIRD_PARTY_MODULES = (r"(absl|flwr|google|grpc|h5py|keras|ml_dtypes|opacus|optree|ray|"
                       r"tensorboard|tensorflow|tf_keras|torch)(\.|$)")

# Flower log records that are noise on every run (substrings of the record's message).
FLOWER_NOTICES = ("DEPRECATED FEATURE", "Manually terminating ClientAppActor")

_applied = False


def verbose_requested() -> bool:
    """True if ``FEDCARE_VERBOSE`` is set to anything but empty or ``0``."""
    return os.environ.get(VERBOSE_VARIABLE, "").strip() not in ("", "0")


def quiet_third_party(verbose: bool | None = None) -> bool:
    """Silence third-party noise in this process (and in the processes it starts).

    Parameters
    ----------
    verbose : bool, optional
        True: leave everything as the libraries print it, and set ``FEDCARE_VERBOSE=1`` so
        processes started from here (Ray workers) and later calls leave it too. None (the
        default): ``FEDCARE_VERBOSE`` decides.

    Returns True if this process is quiet. Call it before TensorFlow is imported: the import
    lines of a TensorFlow already imported cannot be taken back.
    """
    global _applied
    if verbose is None:
        verbose = verbose_requested()
    if verbose:
        os.environ[VERBOSE_VARIABLE] = "1"
        return False
    if _applied:
        return True
    _applied = True
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    _filter_warnings()
    logging.getLogger("flwr").addFilter(_drop_flower_notices)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _SilentImportFinder("tensorflow"))
    else:
        _quiet_tensorflow_loggers()
    return True


def with_quiet_ray_workers(runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """Ray's runtime-env hook (``RAY_RUNTIME_ENV_HOOK``): the workers of this ``ray.init``
    run :func:`quiet_third_party` before anything else (a setup hook already set is kept).
    """
    runtime_env = dict(runtime_env or {})
    runtime_env.setdefault("worker_process_setup_hook", f"{__name__}.quiet_third_party")
    return runtime_env


def _filter_warnings() -> None:
    warnings.filterwarnings("ignore", message=r"Optimal order is the (largest|smallest) alpha",
                            category=UserWarning, module=r"opacus(\.|$)")
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=THIRD_PARTY_MODULES)


def _drop_flower_notices(record: logging.LogRecord) -> bool:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a malformed record: let logging report it
        return True
    return not any(notice in message for notice in FLOWER_NOTICES)


def _quiet_tensorflow_loggers() -> None:
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.ERROR)


@contextmanager
def stderr_fd_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (C and C++ writers included)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        with suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _SilentImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: the first import of `name` runs its module with fd 2 silenced."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot; the other finders locate the module
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _SilentLoader(spec.loader)
        return spec


class _SilentLoader(importlib.abc.Loader):
    """Runs another loader's module with fd 2 silenced, then hands the module back to it."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with stderr_fd_silenced():
            self.loader.exec_module(module)
        _quiet_tensorflow_loggers()
