"""The coordinating server's ServerApp (Flower Message API).

``app`` reads its settings from the run config (``flwr run``, deployment);
``build_server_app`` binds settings and an output directory given by ``fedcare simulate``.
"""

import logging
from pathlib import Path

from common.quiet import quiet_third_party

quiet_third_party()  # before TensorFlow (flwr run's ServerApp process imports this)

from flwr.app import Context  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from flwr.serverapp import Grid, ServerApp  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads

from common.config import RunConfig  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from server.federation import run_federation  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from server.privacy_cost import privacy_cost_lines  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from server.run_directory import prepare_run_dir  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads

logger = logging.getLogger(__name__)


def build_server_app(config: RunConfig, run_dir: Path) -> ServerApp:
    """Return a ServerApp that runs `config` and writes into the prepared `run_dir`."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, config, run_dir)

    return server_app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation the run config describes (``flwr run .``, deployment)."""
    config = RunConfig.from_run_config(dict(context.run_config))
    for line in privacy_cost_lines(config):  # what every option spends, before the run
        logger.warning("%s", line)
    # Resuming continues in the run's own (non-empty) directory.
    run_dir = prepare_run_dir(config.out_dir or None, task=config.task, force=config.resume)
    run_federation(grid, config, run_dir)
