"""raftdb: a replicated key-value database server built on its own Raft core."""
