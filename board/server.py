"""Toylab's local MongoDB-compatible server: mongoeco's wire-protocol server, SQLite file.

Runs in its own Python >= 3.13 venv (``.board/venv``; mongoeco needs 3.13, the project
is 3.11), started by ``localboard/`` and by the test fixture; it imports nothing
from the project.

    TOYLAB_BOARD_USER=u TOYLAB_BOARD_PASSWORD=pw python board/server.py --port 27018 --data runs/board/mongo.sqlite3

Listens on 127.0.0.1 only and requires the user and password from the environment (never
the command line). Prints ``ready mongodb://127.0.0.1:PORT`` once it accepts
connections. SIGTERM/SIGINT close it cleanly.
"""
import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire.auth import WireAuthUser
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

HOST = "127.0.0.1"


async def serve(port: int, data: Path, user: str, password: str) -> None:
    data.parent.mkdir(parents=True, exist_ok=True)
    server = AsyncMongoEcoProxyServer(engine=SQLiteEngine(str(data)), host=HOST, port=port,
                                      auth_users=(WireAuthUser(user, password, roles=({"role": "root", "db": "admin"},)),))
    address = await server.start()
    print(f"ready mongodb://{HOST}:{address.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--data", type=Path, required=True, help="the SQLite file holding the databases")
    args = parser.parse_args()
    user, password = os.environ.get("TOYLAB_BOARD_USER"), os.environ.get("TOYLAB_BOARD_PASSWORD")
    if not user or not password:
        print("server: set TOYLAB_BOARD_USER and TOYLAB_BOARD_PASSWORD in the environment", file=sys.stderr)
        return 2
    asyncio.run(serve(args.port, args.data, user, password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
