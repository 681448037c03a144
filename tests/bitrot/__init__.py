"""Bit rot: seeded random byte flips in a stopped node's files, and in a running one's."""
