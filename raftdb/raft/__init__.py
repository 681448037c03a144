"""The Raft consensus core: pure, deterministic, sans-IO (see ``node.py``)."""
