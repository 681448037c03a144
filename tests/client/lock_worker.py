"""A contender for the lock test, run as its own process:
``python -m tests.client.lock_worker NAME ROUNDS ENDPOINT...``.

Each round holds ``locks/exclusive``, marks the critical section with a create-only key
(a second process inside at the same time would fail it), writes under its fence, and
prints ``fence`` lines; any error ends the process with status 1 and the error.
"""

from __future__ import annotations

import sys

from raftdb.client import Client, Txn


def main(argv: list[str]) -> int:
    name, rounds, endpoints = argv[0], int(argv[1]), argv[2:]
    with Client(endpoints, timeout=10.0) as db:
        for _ in range(rounds):
            with db.lock("locks/exclusive", ttl=5, wait=20) as hold:
                db.put("locked/inside", name, create_only=True)
                t = Txn().compare(hold.key, "create_index", "==", hold.fence)
                t.success.put("locked/by", f"{name} {hold.fence}")
                if not db.txn(t).succeeded:
                    print(f"fenced write refused while holding fence {hold.fence}", flush=True)
                    return 1
                db.delete("locked/inside")
                print(f"fence {hold.fence} {hold.key.decode()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
