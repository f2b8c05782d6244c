"""Run the FeatBit double as a process, for the local sandbox and for tests of other processes.

    python -m airollout_testbed.featbit_double --api-port 5000 --eval-port 5100 --ready-file F

Once both servers listen, the ready file receives JSON with the URLs and credentials (written
atomically, so a reader never sees half of it). Credentials go only there, never to the log.
SIGTERM or SIGINT stops the servers cleanly. Pass a secret as `--env-secret=VALUE`: FeatBit
secrets are URL-safe base64 and may begin with "-", which a separate argument would not survive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path

from airollout_testbed.featbit_double.double import DoubleConfig, FeatBitDouble

log = logging.getLogger("airollout_testbed.featbit_double")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m airollout_testbed.featbit_double", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-port", type=int, default=0, help="management API port (0: any free port)")
    parser.add_argument("--eval-port", type=int, default=0, help="evaluation server port (0: any free port)")
    parser.add_argument("--token", help="management API access token (default: generated)")
    parser.add_argument("--env-secret", help="server SDK secret; fixes the environment id (default: generated)")
    parser.add_argument("--ready-file", type=Path, help="where to write URLs and credentials once listening")
    parser.add_argument("--timeout-hold", type=float, default=30.0, help="seconds a timeout fault holds a request")
    return parser.parse_args()


def _write_ready_file(path: Path, double: FeatBitDouble) -> None:
    ready = {
        "api_url": double.api_url,
        "eval_url": double.eval_url,
        "streaming_url": double.streaming_url,
        "token": double.token,
        "env_id": double.env_id,
        "env_secret": double.env_secret,
        # FeatBit has no API that tells a token holder its organization key; segments need it in their scope.
        "env_resource_name": double.env_resource_name,
    }
    partial = path.with_name(path.name + ".partial")
    # Credentials: readable by the owner only.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        json.dump(ready, stream)
    partial.replace(path)


async def _serve(arguments: argparse.Namespace) -> None:
    config = DoubleConfig(
        host=arguments.host,
        api_port=arguments.api_port,
        eval_port=arguments.eval_port,
        token=arguments.token,
        env_secret=arguments.env_secret,
        timeout_hold=arguments.timeout_hold,
    )
    double = FeatBitDouble(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await double.start()
    try:
        if arguments.ready_file is not None:
            _write_ready_file(arguments.ready_file, double)
        log.info("FeatBit double listening: api %s, evaluation %s", double.api_url, double.eval_url)
        await stopping.wait()
    finally:
        await double.stop()
    log.info("FeatBit double stopped")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(_arguments()))


if __name__ == "__main__":
    main()
