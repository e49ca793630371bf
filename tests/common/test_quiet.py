"""Third-party noise is off by default and on with FEDCARE_VERBOSE=1; fedcare's own stays.

Each case runs in a fresh interpreter: the settings are process-wide (environment, warning
filters, import hooks, file descriptor 2) and TensorFlow's import lines come once a process.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.quiet import QUIET_ENVIRONMENT, VERBOSE_VARIABLE

REPO = Path(__file__).resolve().parents[2]

EMIT = textwrap.dedent("""
    import logging, warnings
    from flwr.supercore.logger import log, warn_deprecated_feature
    warn_deprecated_feature("The `run_simulation` function")
    log(logging.WARNING, "Manually terminating %s", "ClientAppActor")
    log(logging.WARNING, "a Flower warning that is not noise")
    warnings.warn_explicit("Optimal order is the largest alpha. Please consider expanding",
                           UserWarning, "rdp.py", 332, module="opacus.accountants.analysis.rdp")
    warnings.warn_explicit("__array__ implementation doesn't accept a copy keyword",
                           DeprecationWarning, "core.py", 172, module="keras.src.backend.core")
    warnings.warn_explicit("Tip: In future versions of Ray", FutureWarning, "worker.py", 2051,
                           module="ray._private.worker")
    logging.getLogger("server.federation").warning("fedcare: round 3 stopped early")
    warnings.warn_explicit("fedcare's own warning", UserWarning, "privacy.py", 1,
                           module="client.privacy")
""")


def _run(code: str, *, verbose: bool = False, cwd: Path = REPO) -> subprocess.CompletedProcess:
    unset = {*QUIET_ENVIRONMENT, VERBOSE_VARIABLE, "PYTHONWARNINGS"}  # as a fresh shell
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(cwd)])
    if verbose:
        env["FEDCARE_VERBOSE"] = "1"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_quiet_drops_library_noise_and_keeps_fedcare_and_other_flower_warnings():
    done = _run("from common.quiet import quiet_third_party\n"
                "assert quiet_third_party() is True\n" + EMIT)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "fedcare: round 3 stopped early" in err
    assert "fedcare's own warning" in err
    assert "a Flower warning that is not noise" in err
    for noise in ("DEPRECATED FEATURE", "Manually terminating", "Optimal order",
                  "__array__", "Tip: In future versions of Ray"):
        assert noise not in err, (noise, err)


def test_verbose_shows_everything_and_is_inherited_by_child_processes():
    done = _run("import os, subprocess, sys\n"
                "from common.quiet import quiet_third_party\n"
                "assert quiet_third_party() is False\n"
                "assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ\n"
                + EMIT, verbose=True)
    assert done.returncode == 0, done.stderr
    for shown in ("DEPRECATED FEATURE", "Manually terminating", "Optimal order",
                  "Tip: In future versions of Ray", "fedcare's own warning"):
        assert shown in done.stderr, (shown, done.stderr)
    child = _run("import os, subprocess, sys\n"
                 "from common.quiet import quiet_third_party\n"
                 "quiet_third_party(verbose=True)\n"
                 "code = 'from common.quiet import quiet_third_party; "
                 "print(quiet_third_party())'\n"
                 "print(subprocess.run([sys.executable, '-c', code], capture_output=True, "
                 "text=True).stdout.strip())\n")
    assert child.stdout.strip() == "False", child.stderr


def test_the_silenced_import_hides_fd2_writes_but_not_its_exceptions(tmp_path):
    (tmp_path / "noisy").mkdir()
    (tmp_path / "noisy" / "__init__.py").write_text(
        "import os\nos.write(2, b'I0000 cudart_stub.cc:31] Could not find cuda drivers\\n')\n"
        "VALUE = 42\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__init__.py").write_text(
        "import os\nos.write(2, b'C++ noise before the failure\\n')\n"
        "raise ImportError('broken needs libfoo.so')\n")
    done = _run(textwrap.dedent("""
        import sys
        from common.quiet import _SilentImportFinder
        sys.meta_path.insert(0, _SilentImportFinder("noisy"))
        import noisy
        assert noisy.VALUE == 42
        assert type(noisy.__loader__).__name__ == "SourceFileLoader", noisy.__loader__
        assert not any(isinstance(f, _SilentImportFinder) for f in sys.meta_path)
        print("stderr still works", file=sys.stderr)
        sys.meta_path.insert(0, _SilentImportFinder("broken"))
        import broken
    """), cwd=tmp_path)
    assert "cudart_stub" not in done.stderr
    assert "C++ noise" not in done.stderr
    assert "stderr still works" in done.stderr
    assert "ImportError: broken needs libfoo.so" in done.stderr
    assert done.returncode == 1


@pytest.mark.slow  # a fresh TensorFlow import: 5 s idle, 30 s on a busy machine
def test_tensorflow_imports_without_its_start_up_lines():
    done = _run("from common.quiet import quiet_third_party\nquiet_third_party()\n"
                "import tensorflow as tf\n"
                "print(float(tf.reduce_sum(tf.ones(3))))\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3.0"
    assert done.stderr == "", done.stderr  # no absl, cudart_stub, cpu_feature_guard, cuInit
