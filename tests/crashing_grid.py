"""An in-process grid whose server 'dies' (KeyboardInterrupt) as it sends a chosen round."""

from simulations.engine.in_process_grid import InProcessGrid


class CrashingGrid(InProcessGrid):
    """The server process dies when it is about to send round `crash_round`'s train messages."""

    def __init__(self, *args, crash_round: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_round = crash_round

    def send_and_receive(self, messages, *, timeout=None):
        from common.wire.records import unpack_request

        messages = list(messages)
        settings = unpack_request(messages[0].content).settings if messages else None
        if (settings is not None and settings.server_round == self.crash_round
                and messages[0].metadata.message_type == "train"):
            raise KeyboardInterrupt("the server was killed")
        return super().send_and_receive(messages, timeout=timeout)
