"""Helpers for whole-pipeline tests: run the job in-process and read back what it wrote."""
import glob
import json
import os
import socket
import time
from collections import Counter

from currents_to_segment.pipeline import summary
from currents_to_segment.pipeline.main import main
from tests.mapping_oracle import expected_call
from currents_to_segment.transforms.currents.track_calls import serialize

RUNNER = "--runner=FnApiRunner"


def run_job(tmp_path, *args):
    """Run `python -m pipeline` in-process with outputs under tmp_path; return (status, summary, letters)."""
    summary_path = tmp_path / "summary.json"
    dead_letter_dir = tmp_path / "dead_letters"
    status = main([RUNNER, "--dead_letter_output", str(dead_letter_dir),
                   "--summary_output", str(summary_path), *args])
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return status, summary, read_jsonl(dead_letter_dir, "dead_letters")


def read_jsonl(directory, prefix):
    """Every JSON line of the `<prefix>-*.jsonl` files in a directory."""
    lines = []
    for path in sorted(glob.glob(os.path.join(directory, f"{prefix}-*.jsonl"))):
        with open(path, encoding="utf-8") as stream:
            lines.extend(json.loads(line) for line in stream if line.strip())
    return lines


def canonical(message):
    """A hashable form of a Segment message, to compare multisets of calls."""
    return json.dumps(message, sort_keys=True)


def expected_calls(manifest, mapping="classic", include_anonymous=False):
    """The track calls Segment must receive for a generated bucket, as a Counter of canonical messages, as the
    reference says (tests.mapping_oracle, not the job's own mapping): types the mapping sends, users it sends,
    and not the oversize events."""
    oversize = set(manifest["oversize_ids"])
    calls = (expected_call(entry["record"], entry["event_type"], mapping, include_anonymous)
             for entry in manifest["records"] if entry["record"]["id"] not in oversize)
    return Counter(canonical(call) for call in calls if call is not None)


def received_calls(messages):
    """The same form for what the server accepted or the dry run wrote."""
    return Counter(canonical(json.loads(serialize(message))) for message in messages)


def assert_balanced(summary):
    """Every event read is accounted for once, in the totals and in the per-type rows."""
    outcomes = [key for key in ("dropped_no_external_id", "dropped_no_id", "unsupported_event_type",
                                "outside_time_range", "sent", "dead_lettered", "held_back") if key in summary]
    assert summary["events_read"] == sum(summary[key] for key in outcomes)
    for key in ("read", *outcomes):
        assert sum(row[key] for row in summary["by_event_type"].values()) == summary[
            "events_read" if key == "read" else key]


def lose_one_sent_event(monkeypatch):
    """As if the runner lost an event on the way: the counters it reports say one event fewer was sent."""
    run_counters = summary.run_counters

    def losing_one(*args, **kwargs):
        counters = run_counters(*args, **kwargs)
        counters[next(name for name in sorted(counters) if name.startswith("sent:"))] -= 1
        return counters

    monkeypatch.setattr(summary, "run_counters", losing_one)


def wait_for_port(port, seconds, stopped=lambda: False):
    """True once a server listens on 127.0.0.1:port; False after `seconds`, or as soon as `stopped()`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopped():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False
