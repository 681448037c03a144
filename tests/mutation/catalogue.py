"""Hand-written mutations of the Raft core, each one rule of the protocol broken.

A :class:`Mutation` is one exact source edit of a file in ``raftdb/raft/``: the
original text (which must occur exactly once, so that the catalogue cannot rot
silently when the core is refactored: ``test_catalogue.py`` checks it), its
replacement, what the edit does and the rule it breaks. ``python -m
tests.mutation`` applies each one alone to a copy of ``raftdb/`` and runs the
deterministic simulation (``tests/sim``) on it: every mutation must be caught.

Every mutation here changes what a cluster can do, not only how fast: an
equivalent mutation (one no run can tell apart from the real core) proves
nothing and is not allowed. Where one had no effect on outcomes, it was
replaced by a harsher edit of the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AREAS", "CATALOGUE", "Mutation", "MutationError", "by_name"]

#: The rule families the catalogue must cover (``test_catalogue.py`` checks it).
AREAS = ("election", "replication", "commit", "read-index", "snapshot", "membership")


class MutationError(Exception):
    """A mutation does not apply to the source: its original text is gone or ambiguous."""


@dataclass(frozen=True)
class Mutation:
    """One exact edit of one core file.

    Attributes:
        name: a short unique slug (``--only`` takes it).
        area: one of :data:`AREAS`.
        file: the file, relative to ``raftdb/raft/``.
        original: text that must occur exactly once in ``file``.
        replacement: what it becomes.
        description: what the mutated core does, in one line.
        rule: the rule of the protocol it breaks.
    """

    name: str
    area: str
    file: str
    original: str
    replacement: str
    description: str
    rule: str

    def apply_to(self, source: str) -> str:
        """``source`` with this mutation applied.

        Raises:
            MutationError: ``original`` does not occur exactly once.
        """
        count = source.count(self.original)
        if count != 1:
            found = "is not found" if count == 0 else f"occurs {count} times"
            raise MutationError(
                f"mutation {self.name!r}: its original text {found} in raftdb/raft/{self.file} "
                "(the core changed: update tests/mutation/catalogue.py)"
            )
        return source.replace(self.original, self.replacement)

    def apply_in(self, package: Path) -> None:
        """Apply this mutation to the copy of ``raftdb/`` at ``package``, in place."""
        path = package / "raft" / self.file
        path.write_text(self.apply_to(path.read_text()))


CATALOGUE: tuple[Mutation, ...] = (
    # -- election ------------------------------------------------------------------
    Mutation(
        "vote-twice",
        "election",
        "raft.py",
        "            self.vote == m.frm\n            or (self.vote == 0 and self.lead == 0)\n",
        "            True\n",
        "a node grants its vote to every candidate that asks, even after voting in the term",
        "one vote per term (Figure 2, RequestVote; §5.2)",
    ),
    Mutation(
        "vote-ignores-log",
        "election",
        "raft.py",
        "if can_vote and self.log.is_up_to_date(m.index, m.log_term):",
        "if can_vote:",
        "a node votes for a candidate whatever the candidate's log holds",
        "the election restriction: vote only for a log at least as up to date (§5.4.1)",
    ),
    Mutation(
        "up-to-date-ignores-length",
        "election",
        "log.py",
        "return term > our_term or (term == our_term and last_index >= self.last_index())",
        "return term >= our_term",
        "of two logs ending in the same term, the shorter counts as up to date",
        "§5.4.1: with equal last terms, the longer log is more up to date",
    ),
    Mutation(
        "up-to-date-ignores-term",
        "election",
        "log.py",
        "return term > our_term or (term == our_term and last_index >= self.last_index())",
        "return last_index >= self.last_index()",
        "a log is up to date if it is as long, whatever the term of its last entry",
        "§5.4.1: the log whose last entry has the later term is more up to date",
    ),
    Mutation(
        "stale-vote-grant",
        "election",
        "raft.py",
        "        elif m.term < self.term:\n            if (self.check_quorum",
        "        elif m.term < self.term and m.type != MT.VOTE_RESP:\n"
        "            if (self.check_quorum",
        "a candidate counts a vote granted in an earlier term of its own",
        "a message of a stale term is ignored: a vote counts only in its term (§5.1, §5.2)",
    ),
    Mutation(
        "vote-before-save",
        "election",
        "raft.py",
        "_AFTER_SAVE = frozenset({MT.VOTE, MT.VOTE_RESP, MT.APP_RESP})",
        "_AFTER_SAVE = frozenset({MT.VOTE, MT.APP_RESP})",
        "a vote is granted before it is durable: a crash before the save forgets it",
        "votedFor is persistent: saved before the vote is answered (Figure 2)",
    ),
    Mutation(
        "prevote-wins-term",
        "election",
        "follower.py",
        "            if r.role == Role.PRE_CANDIDATE:\n"
        "                r.campaign(CampaignType.ELECTION)",
        "            if False:\n                r.campaign(CampaignType.ELECTION)",
        "a node that wins a pre-vote becomes leader at once, in its current term",
        "a pre-vote grants nothing: its winner must still win a real election "
        "in a new term (thesis §9.6)",
    ),
    Mutation(
        "count-rejections",
        "election",
        "follower.py",
        "result = r.poll(m.frm, not m.reject)",
        "result = r.poll(m.frm, True)",
        "a candidate counts a refused vote as granted",
        "a candidate wins with votes granted by a majority (§5.2)",
    ),
    Mutation(
        "half-is-a-majority",
        "election",
        "quorum.py",
        "    return voters // 2 + 1\n",
        "    return voters // 2\n",
        "half of the voters (one fewer than a majority) wins an election or a read round",
        "a quorum is a majority: any two quorums share a member (§5.2)",
    ),
    # -- replication ---------------------------------------------------------------
    Mutation(
        "append-skips-consistency-check",
        "replication",
        "log.py",
        "        if not self.match_term(index, log_term):\n            return None\n"
        "        last_new = index + len(entries)",
        "        if index > self.last_index():\n            return None\n"
        "        last_new = index + len(entries)",
        "a follower appends after (prevLogIndex, prevLogTerm) if it has any entry there",
        "the consistency check: append only where the previous entry's term matches (§5.3)",
    ),
    Mutation(
        "conflict-not-replaced",
        "replication",
        "log.py",
        "            if not self.match_term(entry.index, entry.term):\n"
        "                return entry.index",
        "            if entry.index > self.last_index():\n                return entry.index",
        "a follower keeps its own entry where the leader's differs, appending only new ones",
        "a conflicting entry is deleted with all that follow it, and the leader's appended (§5.3)",
    ),
    Mutation(
        "save-marks-replaced-tail",
        "replication",
        "unstable.py",
        "if t is None or t != term or index < self.offset:",
        "if t is None or index < self.offset:",
        "when a save completes, entries a new leader put in place of the saved ones "
        "meanwhile count as saved too",
        "an entry is durable only if the one saved is it: the save's term must match "
        "(etcd's stableTo)",
    ),
    Mutation(
        "probe-past-hint",
        "replication",
        "progress.py",
        "self.next = max(min(rejected, match_hint + 1), self.match + 1)",
        "self.next = max(min(rejected + 1, match_hint + 2), self.match + 1)",
        "after a rejection the leader probes one entry past the follower's hint",
        "a reject hint is the last index that may match: the next probe sends from "
        "just after it (§5.3's optimisation)",
    ),
    Mutation(
        "append-commit-uncapped",
        "replication",
        "log.py",
        "self.commit_to(min(committed, last_new))",
        "self.commit_to(committed)",
        "a follower takes the leader's commit index even past the entries the append checked",
        "commitIndex = min(leaderCommit, index of last new entry) (Figure 2 AppendEntries step 5)",
    ),
    # -- commit --------------------------------------------------------------------
    Mutation(
        "figure8",
        "commit",
        "log.py",
        "if index > self.committed and self.term_or_zero(index) == term:",
        "if index > self.committed:",
        "a leader commits an entry of an earlier term by counting its replicas",
        "only entries of the leader's own term commit by counting replicas (§5.4.2, Figure 8)",
    ),
    Mutation(
        "count-unsaved-on-append",
        "commit",
        "leader.py",
        "    r.log.append(entries)\n    return True",
        "    r.log.append(entries)\n    own = r.tracker.progress.get(r.id)\n"
        "    if own is not None:\n        own.maybe_update(r.log.last_index())\n    return True",
        "a leader counts its own copy of an entry from the moment it appends it, unsaved",
        "a commit counts durable copies only: the leader's own once saved (docs/raft.md)",
    ),
    Mutation(
        "count-unsaved-on-advance",
        "commit",
        "raft.py",
        "own.maybe_update(self.log.stable_last_index())",
        "own.maybe_update(self.log.last_index())",
        "after a save a leader counts its whole log, also entries appended since the "
        "Ready was taken",
        "a commit counts durable copies only: the leader's own once saved (docs/raft.md)",
    ),
    Mutation(
        "commit-by-minority",
        "commit",
        "quorum.py",
        "    return acked[n // 2]\n",
        "    return acked[n // 2 - 1]\n",
        "the commit index is what the best-placed half of the voters (less than a majority) hold",
        "an entry is committed once a majority of the voters hold it (§5.3)",
    ),
    Mutation(
        "heartbeat-commit-beyond-match",
        "commit",
        "leader.py",
        "commit = min(pr.match, committed)",
        "commit = committed",
        "heartbeats tell each follower the whole commit index, whatever it is known to hold",
        "a follower learns a commit index only up to what it matches the leader in "
        "(etcd's rule; else it commits its own stale entries)",
    ),
    Mutation(
        "commit-goes-back",
        "commit",
        "log.py",
        "        if index > self.committed:\n            if index > self.last_index():",
        "        if index != self.committed:\n            if index > self.last_index():",
        "a node takes any commit index it is told, also one below its own",
        "the commit index never decreases (log.py invariant; Figure 2)",
    ),
    # -- ReadIndex -----------------------------------------------------------------
    Mutation(
        "read-before-own-term-commit",
        "read-index",
        "leader.py",
        "    if not r.committed_entry_in_current_term():\n        # Our commit index may lag",
        "    if False:\n        # Our commit index may lag",
        "a new leader serves reads at its commit index before an entry of its term commits",
        "ReadIndex waits until the leader has committed an entry of its term (thesis §6.4 step 1)",
    ),
    Mutation(
        "read-without-quorum",
        "read-index",
        "leader.py",
        "    if r.tracker.voters == {r.id}:\n        _release_read(r, read)",
        "    if True:\n        _release_read(r, read)",
        "the leader answers a read at once, without a heartbeat round",
        "ReadIndex confirms leadership with a quorum's heartbeat answers (thesis §6.4 step 3)",
    ),
    Mutation(
        "read-index-is-applied",
        "read-index",
        "leader.py",
        "read = PendingRead(m.context, m.frm, r.log.committed)",
        "read = PendingRead(m.context, m.frm, r.log.applied)",
        "a read's index is the leader's applied index, which may lag its commit index",
        "the read index is the leader's commit index (thesis §6.4 step 2)",
    ),
    Mutation(
        "read-acked-by-older-round",
        "read-index",
        "read_only.py",
        "            if r <= round_no:\n                rnd.acks.add(voter)",
        "            if r >= round_no:\n                rnd.acks.add(voter)",
        "an answer to an older heartbeat round confirms the reads of newer rounds",
        "a heartbeat answer proves leadership only for reads that arrived before "
        "that heartbeat was sent (read_only.py)",
    ),
    # -- snapshot ------------------------------------------------------------------
    Mutation(
        "restore-older-snapshot",
        "snapshot",
        "raft.py",
        "        if meta.index <= self.log.committed:\n            return False\n",
        "        if meta.index < 0:\n            return False\n",
        "a follower installs a snapshot that is not newer than what it has committed",
        "a snapshot is installed only if it is newer than the committed log "
        "(Figure 13, InstallSnapshot)",
    ),
    Mutation(
        "restore-discards-held-entries",
        "snapshot",
        "raft.py",
        "        if self.log.match_term(meta.index, meta.term):\n",
        "        if False:\n",
        "a follower that holds the snapshot's last entry replaces its log anyway, "
        "losing the entries after it",
        "if the follower has the snapshot's last entry, it keeps the entries after it "
        "(Figure 13, InstallSnapshot step 6)",
    ),
    Mutation(
        "restore-keeps-commit",
        "snapshot",
        "log.py",
        "        self.committed = snapshot.metadata.index\n        self.unstable.restore(snapshot)",
        "        self.unstable.restore(snapshot)",
        "after installing a snapshot a follower keeps its old commit index, below the snapshot",
        "a snapshot is committed by definition: the follower's commit index moves to it "
        "(applied <= committed)",
    ),
    Mutation(
        "restore-keeps-membership",
        "snapshot",
        "raft.py",
        "self.tracker.set_conf(meta.conf_state, self.log.last_index() + 1)",
        "self.tracker.set_conf(self.tracker.conf_state(), self.log.last_index() + 1)",
        "a follower installing a snapshot keeps its own membership, not the snapshot's",
        "a snapshot carries the membership as of its index (Figure 13, §7)",
    ),
    # -- membership ----------------------------------------------------------------
    Mutation(
        "concurrent-conf-changes",
        "membership",
        "leader.py",
        "if conf_index or r.pending_conf_index > r.log.applied:",
        "if conf_index:",
        "a leader accepts a membership change while an earlier one is not yet applied",
        "one membership change at a time (thesis §4.1; pending_conf_index)",
    ),
    Mutation(
        "learners-count-for-commit",
        "membership",
        "progress.py",
        "return committed_index(self.voters, {v: progress[v].match for v in self.voters})",
        "return committed_index(list(progress), {v: pr.match for v, pr in progress.items()})",
        "learners count towards the commit quorum",
        "learners are never counted: not for commitment (thesis §4.2.1)",
    ),
    Mutation(
        "new-member-caught-up",
        "membership",
        "progress.py",
        "                pr = Progress(\n                    0, next_index,",
        "                pr = Progress(\n                    next_index - 1, next_index,",
        "a new member's progress starts as if it held the leader's whole log",
        "a new member's match starts at 0: it is probed before it counts (§4.2.1)",
    ),
    Mutation(
        "removed-leader-stays",
        "membership",
        "raft.py",
        "        if self.id not in self.tracker.voters:\n"
        '            self.logger.info("%x was removed or demoted; stepping down", self.id)',
        "        if False:\n"
        '            self.logger.info("%x was removed or demoted; stepping down", self.id)',
        "a leader that removed (or demoted) itself keeps leading once the change applies",
        "a removed leader steps down once its removal is applied (thesis §4.2.2)",
    ),
)


def by_name(name: str) -> Mutation:
    """The mutation called ``name``.

    Raises:
        KeyError: no mutation has that name (the message lists them).
    """
    for m in CATALOGUE:
        if m.name == name:
            return m
    raise KeyError(f"no mutation {name!r}; known: {', '.join(m.name for m in CATALOGUE)}")
