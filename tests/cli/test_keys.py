"""``raftdb put``/``get``/``del``/``ls``/``watch``/``txn``/``load`` against a real cluster.

Most run ``raftdb.cli.main`` in this process (``cli``); a few run ``python -m
raftdb.cli`` (``cli_process``) for what only a process shows: its exit status and
bytes on a real stdout.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from raftdb.cli.load import BATCH_PUTS
from raftdb.testing.ports import free_ports
from tests.cli.conftest import Cli, run_as_process


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


# -- put, get -------------------------------------------------------------------------


def test_put_then_get(cli: Cli, prefix: str) -> None:
    put = cli("put", prefix + "a", "hello")
    assert put.status == 0, put.err
    index = int(put.text)
    got = cli("get", prefix + "a")
    assert (got.status, got.out, got.err) == (0, b"hello", "")  # the bytes, nothing added

    js = cli("get", prefix + "a", "-w", "json")
    assert json.loads(js.text) == {
        "key": prefix + "a",
        "create_index": index,
        "mod_index": index,
        "value": "hello",
    }
    again = cli("put", prefix + "a", "bye", "--output", "json")
    second = json.loads(again.text)["index"]
    assert second > index
    table = cli("get", prefix + "a", "--print-index")
    row = next(line for line in table.lines if prefix + "a" in line)
    assert "bye" in row
    assert str(index) in row
    assert str(second) in row
    stale = cli("get", prefix + "a", "--consistency", "stale")
    assert stale.status == 0  # may lag behind; the key exists on every member by now or not


def test_put_reads_stdin_and_keeps_any_bytes(cli: Cli, prefix: str) -> None:
    key = prefix + "bin\udcff"  # argv's surrogateescape form of the byte 0xff
    value = b"\x00\xff\n\x80 raw"
    assert cli("put", key, stdin=value).status == 0
    assert cli("get", key).out == value
    assert cli("put", prefix + "dash", "-", stdin="from stdin").status == 0
    assert cli("get", prefix + "dash").out == b"from stdin"

    [entry] = _json_lines(cli("ls", prefix + "bin", "--values", "-w", "json").text)
    assert base64.b64decode(str(entry["key_b64"])) == (prefix + "bin").encode() + b"\xff"
    assert base64.b64decode(str(entry["value_b64"])) == value
    table = cli("ls", prefix + "bin", "--values").text
    assert "bin\\xff" in table
    assert "\\x00\\xff\\n\\x80 raw" in table


def test_get_missing_is_status_3_with_one_line(cli: Cli, prefix: str) -> None:
    for extra in ([], ["-w", "json"], ["--print-index"]):
        r = cli("get", prefix + "nothing", *extra)
        assert (r.status, r.out) == (3, b"")
        assert r.err == f"raftdb: not_found: key '{prefix}nothing' not found\n"


def test_conditional_puts(cli: Cli, prefix: str) -> None:
    first = int(cli("put", prefix + "k", "1", "--create-only").text)
    taken = cli("put", prefix + "k", "2", "--create-only")
    assert taken.status == 4
    assert taken.err.startswith("raftdb: condition_failed: ")
    assert taken.err.count("\n") == 1
    stale = cli("put", prefix + "k", "2", "--if-match", str(first - 1))
    assert stale.status == 4
    assert f"modify index is {first}" in stale.err
    assert cli("put", prefix + "k", "3", "--if-match", str(first)).status == 0
    assert cli("get", prefix + "k").out == b"3"
    both = cli("put", prefix + "k", "4", "--if-match", "1", "--create-only")
    assert both.status == 2
    assert "not allowed with" in both.err


def test_put_on_a_lease_that_does_not_exist(cli: Cli, prefix: str) -> None:
    r = cli("put", prefix + "k", "v", "--lease", "999999")
    assert r.status == 3
    assert r.err.startswith("raftdb: lease_not_found: ")


# -- del ------------------------------------------------------------------------------


def test_del(cli: Cli, prefix: str) -> None:
    index = int(cli("put", prefix + "k", "v").text)
    stale = cli("del", prefix + "k", "--if-match", str(index - 1))
    assert stale.status == 4
    gone = cli("del", prefix + "k", "--if-match", str(index))
    assert gone.status == 0
    assert gone.text.startswith("1 deleted (index ")
    assert cli("get", prefix + "k").status == 3

    missing = cli("del", prefix + "k")
    assert missing.status == 0
    assert missing.text.startswith("0 deleted")
    js = json.loads(cli("del", prefix + "k", "-w", "json").text)
    assert js["existed"] is False
    assert js["index"] > index
    must = cli("del", prefix + "k", "--must-exist")
    assert must.status == 3
    assert must.err == f"raftdb: not_found: key '{prefix}k' did not exist\n"


# -- ls -------------------------------------------------------------------------------


def test_ls_follows_pages_and_limits(cli: Cli, prefix: str, tmp_path: Path) -> None:
    # More keys than a page of the client's listing (1000).
    count = 1100
    lines = [json.dumps({"key": f"{prefix}{i:05d}", "value": f"v{i}"}) for i in range(count)]
    (tmp_path / "keys.jsonl").write_text("\n".join(lines) + "\n")
    assert cli("load", str(tmp_path / "keys.jsonl")).status == 0

    listed = _json_lines(cli("ls", prefix, "-w", "json").text)
    assert [e["key"] for e in listed] == [f"{prefix}{i:05d}" for i in range(count)]
    assert "value" not in listed[0]
    assert len(cli("ls", prefix, "--limit", "7", "-w", "json").lines) == 7
    table = cli("ls", prefix, "--limit", "3", "--values").text
    assert f"{prefix}00002" in table
    assert "v2" in table
    assert f"{prefix}00003" not in table
    assert "SIZE" in table
    assert "MOD INDEX" in table
    assert cli("ls", prefix + "none/").status == 0


# -- watch ----------------------------------------------------------------------------


def test_watch_since_prints_each_event(cli: Cli, prefix: str) -> None:
    start = int(cli("put", prefix + "before", "x").text)
    cli("put", prefix + "a", "1")
    cli("put", prefix + "b", "two words")
    cli("del", prefix + "a")
    r = cli("watch", prefix, "--since", str(start), "--count", "3")
    assert r.status == 0, r.err
    assert r.lines == [f"put {prefix}a 1", f"put {prefix}b two words", f"delete {prefix}a"]

    events = _json_lines(
        cli("watch", prefix, "--since", str(start), "--count", "3", "-w", "json").text
    )
    assert [(e["type"], e["key"]) for e in events] == [
        ("put", prefix + "a"),
        ("put", prefix + "b"),
        ("delete", prefix + "a"),
    ]
    assert events[0]["value"] == "1"
    assert "value" not in events[2]
    assert int(str(events[0]["mod_index"])) > start

    one = cli("watch", prefix + "b", "--exact", "--since", str(start), "--count", "1")
    assert one.lines == [f"put {prefix}b two words"]


def test_watch_of_compacted_history_or_bad_since_is_one_line(cli: Cli, prefix: str) -> None:
    r = cli("watch", prefix, "--since", str(10**12), "--count", "1")
    assert r.status == 2
    assert r.err.startswith("raftdb: bad_request: ")
    assert r.err.count("\n") == 1


# -- txn ------------------------------------------------------------------------------


def test_txn_success_and_failure(cli: Cli, prefix: str, tmp_path: Path) -> None:
    cli("put", prefix + "a", "1")
    body = {
        "compare": [{"key": prefix + "a", "target": "value", "op": "==", "value": "1"}],
        "success": [
            {"op": "put", "key": prefix + "a", "value": "2"},
            {"op": "get", "key": prefix + "a"},
        ],
        "failure": [{"op": "get", "key": prefix + "a"}],
    }
    path = tmp_path / "txn.json"
    path.write_text(json.dumps(body))
    ok = cli("txn", str(path))
    assert ok.status == 0, ok.err
    assert ok.lines[0].startswith("SUCCESS (index ")
    assert any("get" in line and "2 (mod_index" in line for line in ok.lines)

    failed = cli("txn", "-w", "json", stdin=json.dumps(body))  # a stays 2: the compare fails
    assert failed.status == 4
    answer = json.loads(failed.text)
    assert answer["succeeded"] is False
    assert answer["results"][0]["op"] == "get"
    assert answer["results"][0]["value"] == "2"
    table = cli("txn", stdin=json.dumps(body))
    assert table.status == 4
    assert table.lines[0].startswith("FAILURE")


def test_txn_refusals_are_status_2_and_one_line(cli: Cli, prefix: str) -> None:
    cases = [
        "{not json",
        "[]",
        json.dumps({"compares": []}),
        json.dumps({"success": {"op": "put"}}),
        json.dumps(
            {"success": [{"op": "put", "key": prefix + "a", "vaule": "1"}]}
        ),  # the node's 400
    ]
    for text in cases:
        r = cli("txn", stdin=text)
        assert r.status == 2, (text, r.err)
        assert r.err.startswith("raftdb: "), r.err
        assert r.err.count("\n") == 1, r.err
    assert cli("get", prefix + "a").status == 3
    missing = cli("txn", "/nonexistent/txn.json")
    assert missing.status == 1
    assert missing.err.count("\n") == 1


# -- load -----------------------------------------------------------------------------


def test_load_is_safe_to_run_again(cli: Cli, prefix: str, tmp_path: Path) -> None:
    count = 3 * BATCH_PUTS + 5
    lines = [json.dumps({"key": f"{prefix}{i}", "value": f"v{i}"}) for i in range(count)]
    lines.insert(10, "")  # blank lines are skipped
    lines.append(json.dumps({"key_b64": base64.b64encode(b"\xff").decode(), "value": "x"}))
    path = tmp_path / "keys.jsonl"
    path.write_text("\n".join(lines) + "\n")

    first = cli("load", str(path), "-w", "json")
    assert first.status == 0, first.err
    report = json.loads(first.text)
    assert report["keys"] == count + 1
    assert report["batches"] == 4
    assert report["duplicate_batches"] == 0
    assert cli("get", f"{prefix}{count - 1}").out == f"v{count - 1}".encode()

    cli("put", f"{prefix}0", "changed since")
    again = cli("load", str(path))
    assert again.status == 0
    assert "(4 already loaded by an earlier run)" in again.text  # not applied twice:
    assert cli("get", f"{prefix}0").out == b"changed since"
    fresh = cli("load", str(path), "--fresh", "-w", "json")
    assert json.loads(fresh.text)["duplicate_batches"] == 0
    assert cli("get", f"{prefix}0").out == b"v0"


def test_load_from_stdin_last_line_wins(cli: Cli, prefix: str) -> None:
    # The same key in many batches, sent several at a time: still the last value.
    lines = []
    for i in range(6 * BATCH_PUTS):
        lines.append(json.dumps({"key": f"{prefix}{i % 3}", "value": str(i)}))
    r = cli("load", "-", "--jobs", "4", stdin="\n".join(lines))
    assert r.status == 0, r.err
    for k in range(3):
        last = max(i for i in range(6 * BATCH_PUTS) if i % 3 == k)
        assert cli("get", f"{prefix}{k}").out == str(last).encode()


def test_load_bad_file_writes_nothing(cli: Cli, prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    for bad, why in [
        ('{"key": "%sa", "vaule": "1"}', "unknown field 'vaule'"),
        ('{"key": "%sa"}', "exactly one of 'value'"),
        ('{"key": "%sa", "value_b64": "!!"}', "not base64"),
        ("[1]", "not a JSON object"),
        ('{"key": "", "value": "1"}', "the key is empty"),
    ]:
        good = json.dumps({"key": prefix + "first", "value": "1"})
        path.write_text(good + "\n" + bad.replace("%s", prefix) + "\n")
        r = cli("load", str(path))
        assert r.status == 2, r.err
        assert r.err.startswith("raftdb: line 2: "), r.err
        assert why in r.err, r.err
    assert cli("get", prefix + "first").status == 3  # checked before anything was written


def test_load_bad_line_on_stdin_says_what_was_loaded(cli: Cli, prefix: str) -> None:
    good = BATCH_PUTS + 10  # one whole batch sent before the bad line is read
    lines = [json.dumps({"key": f"{prefix}{i}", "value": "v"}) for i in range(good)]
    lines.append("oops")
    r = cli("load", "-", stdin="\n".join(lines))
    assert r.status == 2
    assert f"raftdb: line {good + 1}: not JSON" in r.err
    assert f"raftdb: {BATCH_PUTS} keys were loaded before the failure" in r.err
    assert cli("get", f"{prefix}{BATCH_PUTS - 1}").status == 0
    assert cli("get", f"{prefix}{BATCH_PUTS}").status == 3


# -- as a process ---------------------------------------------------------------------


def test_exit_statuses_of_the_process(cli_process: Cli, prefix: str) -> None:
    assert cli_process("put", prefix + "k", stdin=b"\xfe\xff").status == 0
    got = cli_process("get", prefix + "k")
    assert (got.status, got.out) == (0, b"\xfe\xff")
    missing = cli_process("get", prefix + "missing")
    assert (missing.status, missing.err) == (
        3,
        f"raftdb: not_found: key '{prefix}missing' not found\n",
    )
    usage = cli_process("put")
    assert usage.status == 2
    [port] = free_ports(1)
    down = cli_process(
        "get", prefix + "k", "--endpoints", f"http://127.0.0.1:{port}", "--timeout", "1"
    )
    assert down.status == 6
    assert down.err.count("\n") == 1
    assert "Traceback" not in down.err


@pytest.mark.usefixtures("isolated_env")
def test_bad_settings_are_status_2() -> None:
    r = run_as_process("get", "k", "--endpoints", "ftp://x")
    assert r.status == 2
    assert r.err.startswith("raftdb: --endpoints: ")
