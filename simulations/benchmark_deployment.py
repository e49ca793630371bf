"""Benchmark: steady seconds per round in a real local deployment vs the simulation.

Runs ``fedcare deploy-local`` (SuperLink + one SuperNode per hospital, TLS, authentication)
with fedcare's ClientApp and with the null ClientApp (``simulations.null_client``: returns its
input, same train + evaluate pattern), then the same two in the simulation, and prints
start-up (round 1) and the median steady round (rounds 2..R) with the ratios real/null.

The real client runs as deployed: Flower's per-message process loads the light
``client.entry``, which relays to the hospital's worker (``fedcare hospital-worker``, fedcare's
ClientApp loaded once, started by deploy-local before the SuperNodes, so its TensorFlow import
is in neither column). The null client is the floor: it is its own ClientApp component, handled
in Flower's per-message process with no worker (deploy-local starts none for it), and imports
no more than the relay (Flower and numpy; its task facts are precomputed into the app copy).

What a deployed round is made of (flwr 1.42; each round is two exchanges, train and evaluate):
- the ServerApp's grid (``superlink/grid/http_grid.py``) pushes the messages, then pulls for
  replies and sleeps 3 s between pulls: an exchange lasts a multiple of 3 s;
- a SuperNode (``supernode/start_client_internal.py``) sleeps 3 s whenever a pull finds no
  message, so it notices a new message up to 3 s late;
- the SuperNode's SuperExec polls for the new task (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``,
  1 s by default; deploy-local sets 0.25 s) and starts a fresh ``flwr-clientapp`` process for
  every message: Python start, Flower's imports, unpacking the app bundle and importing the
  app (fedcare's light relay ``client.entry`` or the null client: Flower and numpy, about
  0.6 s of CPU); the real client then waits for its worker's reply;
- the SuperNode waits for the reply in 0.5 s steps and pushes it.
Only the SuperExec interval is configurable (an environment variable read by Flower, not in
its documentation); the two 3 s sleeps are hard-coded.

Usage: ``python -m simulations.benchmark_deployment [--hospitals 4] [--rounds 4]``.
"""

import argparse
import re
import shutil
import statistics
import tempfile
from pathlib import Path

from common.config import RunConfig
from server.deploy_local import DeploySettings, completed_rounds, deploy_local
from simulations.benchmark_rounds import measure

REPO = Path(__file__).resolve().parents[1]
NULL_CLIENT = "simulations.null_client:app"
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "runs", "tests", "__pycache__", ".flwr",
                                     ".pytest_cache", ".hypothesis", "*.egg-info")


def null_client_app(directory: Path, task: str, hospitals: int) -> Path:
    """Copy this app into `directory` with its ClientApp component set to the null client.

    The copy carries the null client's facts for `task` (``null_client.write_facts``), so its
    per-message process imports only Flower and numpy, like fedcare's light relay.
    """
    from simulations.null_client import write_facts

    app = directory / "null-app"
    shutil.copytree(REPO, app, ignore=COPY_IGNORE)
    write_facts(app / "simulations", task, hospitals)
    pyproject = app / "pyproject.toml"
    text, count = re.subn(r'(?m)^clientapp\s*=\s*"[^"]*"', f'clientapp = "{NULL_CLIENT}"',
                          pyproject.read_text())
    if count != 1:
        raise RuntimeError(f"{pyproject}: expected one clientapp component, found {count}")
    pyproject.write_text(text)
    return app


def deployed_seconds(settings: DeploySettings) -> tuple[float, float]:
    """Run one local deployment; return (first-round seconds, median steady-round seconds)."""
    deploy_local(settings, report=lambda line: print(f"  {line}", flush=True))
    seconds = [float(row["seconds"]) for row in completed_rounds(settings.out / "run")]
    return seconds[0], statistics.median(seconds[1:])


def main() -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="heart-disease")
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dp", default="none", help="the real client's dp mode")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 carries the start-up)")
    results: dict[tuple[str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        null_app = null_client_app(work, args.task, args.hospitals)
        for client, app_dir in (("null", null_app), ("keras", REPO)):
            print(f"deploy-local, {client} client ...", flush=True)
            settings = DeploySettings(hospitals=args.hospitals, task=args.task,
                                      rounds=args.rounds, out=work / f"deploy-{client}",
                                      app_dir=app_dir, dp_mode=args.dp, pin_app=False,
                                      hospital_workers=client == "keras",
                                      timeout_seconds=3600.0)
            results["deployment", client] = deployed_seconds(settings)
    config = RunConfig.from_run_config({"task": args.task, "num-server-rounds": args.rounds,
                                        "hospitals": args.hospitals, "dp.mode": args.dp})
    from simulations.null_client import app as null_app

    print("simulation ...", flush=True)
    results["simulation", "null"] = measure(config, null_app)
    results["simulation", "keras"] = measure(config, None)

    print(f"\n{args.task}, {args.hospitals} hospitals, {args.rounds} rounds (train + evaluate), "
          f"dp {args.dp}")
    print(f"{'mode':<12}{'client':<8}{'start-up s':>12}{'steady s/round':>16}")
    for (mode, client), (start, steady) in results.items():
        print(f"{mode:<12}{client:<8}{start:>12.2f}{steady:>16.3f}")
    for mode in ("deployment", "simulation"):
        ratio = results[mode, "keras"][1] / results[mode, "null"][1]
        print(f"{mode} steady ratio keras/null: {ratio:.2f}")


if __name__ == "__main__":
    main()
