"""What an operator sees while a run runs: live metrics in Prometheus's format and /healthz (--metrics_port), the
run report (--report_output), and the summary's freshness fields (event_time, lag_seconds, request_seconds).

The metrics are read with prometheus_client's own parser, as a scraper reads them; expected values come from what
the loopback Segment server accepted and from the reference (event names), never from the job's own functions.
"""
import datetime
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from currents_to_segment.pipeline import monitor
from currents_to_segment.pipeline.main import main
from currents_to_segment.transforms import metrics, progress
from currents_to_segment.transforms.currents import catalog
from currents_to_segment.transforms.segment.api import Attempt
from tests.conftest import free_port
from tests.pipeline_runs import RUNNER, assert_balanced, expected_calls, received_calls
from tests.test_report_page import _chromium, _chromium_command, _dom
from tests.test_runners import prism
from tests.test_watch import DRAIN_SECONDS, _Landing, _of_files, _wait_for, _watch_job

KEY = "watch-key"  # the key tests.test_watch._watch_job gives
SAMPLE_BUCKET = {"events_per_file": 6}
PREFIX = "currents_to_segment_"


# --- counts, histograms, timeline (no Beam) ------------------------------------------------------------------------

def test_histogram_percentiles_are_estimated_within_buckets_and_bounded_by_what_was_seen():
    metrics.reset_process_totals()
    for value in (3, 3, 3, 3, 40, 40, 40, 40, 40, 4000):
        metrics.observe_in_tally(metrics.REQUEST_MS, value)
    counters = metrics.process_totals()
    metrics.reset_process_totals()
    assert metrics.distribution(counters, metrics.REQUEST_MS) == {"count": 10, "sum": 4212, "min": 3, "max": 4000}
    assert metrics.quantile(counters, metrics.REQUEST_MS, 0.5) == 30  # in (25, 50]: 25 + 25 * (5 - 4) / (9 - 4)
    assert metrics.quantile(counters, metrics.REQUEST_MS, 0.95) == 3750  # 2500 + 2500 * (9.5 - 9) / (10 - 9)
    assert metrics.quantile(counters, metrics.REQUEST_MS, 0.99) == 4000  # 4750, but nothing above 4000 was seen
    assert metrics.quantile({}, metrics.REQUEST_MS, 0.5) is None


def test_tallies_merge_sums_minimums_and_maximums_as_what_they_are():
    merged = metrics.merge([{"sent:a": 2, "event_time.min": 50, "event_time.max": 90, "event_time.count": 2},
                            {"sent:a": 3, "event_time.min": 40, "event_time.max": 70, "event_time.count": 2}])
    assert merged == {"sent:a": 5, "event_time.min": 40, "event_time.max": 90, "event_time.count": 4}


def test_the_timeline_keeps_a_watch_of_any_length_in_bounded_points():
    timeline = monitor.Timeline(points=50, interval=1.0)
    for second in range(100_000):
        timeline.add(float(second), second * 10, second // 100)
    points = timeline.points()
    assert len(points) <= 51
    assert points[0] == [0.0, 0, 0] and points[-1] == [99_999.0, 999_990, 999]
    assert all(a[0] < b[0] for a, b in zip(points, points[1:]))


def _exposition(counters, gauges=None):
    gauges = gauges or {"files_waiting": 0, "oldest_waiting_seconds": 0.0, "segment_down_seconds": 0.0}

    class Collector:
        def collect(self):
            return monitor.families(counters, gauges, catalog.BUILT_IN["classic"])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry).decode()


def _samples(text):
    """{(sample name, frozenset of labels): value} of an exposition."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_exposition_names_counters_gauges_and_histograms_as_documented():
    metrics.reset_process_totals()
    for value in (3, 40, 40, 4000):
        metrics.observe_in_tally(metrics.REQUEST_MS, value)
    counters = {**metrics.process_totals(), "read:users.messages.email.Send": 10, "sent:users.messages.email.Send": 7,
                "dropped_no_external_id:users.messages.email.Send": 2, "dead_lettered:users.messages.email.Send": 1,
                "dead_letters:event_too_large": 1, "requests_by_status:200": 3, "requests_by_status:503": 1,
                "cumulativeThrottlingSeconds": 4, "bytes_sent": 5000}
    metrics.reset_process_totals()
    found = _samples(_exposition(counters, {"files_waiting": 2, "oldest_waiting_seconds": 41.5,
                                            "segment_down_seconds": 0.0}))
    email = ("event_type", "users.messages.email.Send")
    assert found[(PREFIX + "events_read_total", frozenset([email]))] == 10
    assert found[(PREFIX + "events_sent_total", frozenset([email, ("event", "Email Sent")]))] == 7
    assert found[(PREFIX + "events_dropped_total", frozenset([email, ("reason", "dropped_no_external_id")]))] == 2
    assert found[(PREFIX + "events_dead_lettered_total", frozenset([email]))] == 1
    assert found[(PREFIX + "dead_letters_total", frozenset([("reason", "event_too_large")]))] == 1
    assert found[(PREFIX + "segment_requests_total", frozenset([("status", "503")]))] == 1
    assert found[(PREFIX + "throttled_seconds_total", frozenset())] == 4
    assert found[(PREFIX + "bytes_sent_total", frozenset())] == 5000
    assert found[(PREFIX + "files_waiting", frozenset())] == 2
    assert found[(PREFIX + "oldest_waiting_seconds", frozenset())] == 41.5
    assert found[(PREFIX + "request_seconds_bucket", frozenset([("le", "0.005")]))] == 1
    assert found[(PREFIX + "request_seconds_bucket", frozenset([("le", "0.05")]))] == 3
    assert found[(PREFIX + "request_seconds_bucket", frozenset([("le", "+Inf")]))] == 4
    assert found[(PREFIX + "request_seconds_count", frozenset())] == 4
    assert found[(PREFIX + "request_seconds_sum", frozenset())] == pytest.approx(4.083)
    assert found[(PREFIX + "delivery_lag_seconds_count", frozenset())] == 0


class _Config:
    """What a RunView reads of a JobConfig."""

    def __init__(self, watch=None):
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.run_dir = None
        self.watch = watch


def test_health_is_503_with_one_line_once_segment_failed_past_the_retry_budget_and_200_when_it_answers_again():
    view = monitor.RunView(_Config())
    reporter = progress.reporter(progress.ProgressSettings(interval_seconds=0))
    try:
        assert view.health() == (True, "ok: 0 events sent")
        started = time.time() - 5
        reporter.observe(Attempt(503, "", True, 1, started))  # failing for 5 s, but still within the budget
        healthy, line = view.health()
        assert healthy and "Segment failing since" in line
        assert 5 <= view.gauges({})["segment_down_seconds"] < 60
        reporter.observe(Attempt(503, "", False, 5, started))  # the request's budget is spent
        healthy, line = view.health()
        assert not healthy
        assert line.startswith("Segment has failed past the retry budget: failing since ") and "503" in line
        reporter.observe(Attempt(200, "", False, 1, time.time()))
        assert view.health()[0] and view.gauges({})["segment_down_seconds"] == 0
    finally:
        progress.stop()


def test_health_is_503_when_a_watch_has_not_listed_for_three_intervals():
    class Watch:
        interval = 1.0
    view = monitor.RunView(_Config(Watch()))
    progress.watch_state().listed(time.time())
    assert view.health()[0]
    progress.watch_state().listed(time.time() - 3.5)
    healthy, line = view.health()
    assert not healthy and line.startswith("the watch has not listed since ") and "(3 intervals of 1 s)" in line


# --- whole runs ----------------------------------------------------------------------------------------------------

def _get(url):
    """(status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _total(found, name):
    return sum(value for (sample, _), value in found.items() if sample == PREFIX + name)


def _scrape_while(running, port, seconds=60):
    """Scrape /metrics and /healthz until the metrics show events sent; the last scrape's samples and health."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and running():
        try:
            status, text = _get(f"http://127.0.0.1:{port}/metrics")
            health = _get(f"http://127.0.0.1:{port}/healthz")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
            continue
        found = _samples(text)
        if status == 200 and _total(found, "events_sent_total") > 0:
            return found, health
        time.sleep(0.1)
    raise AssertionError("no scrape showed events sent while the run ran")


def _event_time_range(accepted):
    times = sorted(datetime.datetime.fromisoformat(call["timestamp"].replace("Z", "+00:00")) for call in accepted)
    return times[0], times[-1]


@pytest.mark.parametrize("mode", ["in_process", "multi_processing"])
def test_a_batch_run_serves_every_worker_processs_counts_while_it_runs_and_the_summary_agrees(tmp_path, bucket,
                                                                                              server, mode):
    root, manifest = bucket
    server.latency = 0.15  # answers that take a while: the run lasts long enough to be scraped
    port = free_port()
    extra = (["--direct_running_mode=multi_processing", "--direct_num_workers=2"] if mode == "multi_processing"
             else [])
    result = {}
    args = [RUNNER, *extra, "--input", f"{root}/**/*.avro", "--segment_endpoint", server.url,
            "--dead_letter_output", str(tmp_path / "dead"), "--summary_output", str(tmp_path / "summary.json"),
            "--metrics_port", str(port), "--max_batch_events", "5", "--max_requests_in_flight", "1",
            "--progress_seconds", "0"]
    os.environ["SEGMENT_WRITE_KEY"] = KEY
    try:
        job = threading.Thread(target=lambda: result.setdefault("status", main(args)))
        job.start()
        found, (health_status, health_line) = _scrape_while(job.is_alive, port)
        job.join(120)
    finally:
        del os.environ["SEGMENT_WRITE_KEY"]
    assert result["status"] == 0
    assert health_status == 200 and health_line.startswith("ok: "), health_line
    assert 0 < _total(found, "events_read_total") <= len(manifest["records"])
    assert 0 < _total(found, "events_sent_total") <= len(server.accepted)
    assert _total(found, "segment_requests_total") > 0 and _total(found, "request_seconds_count") > 0

    run_summary = json.loads((tmp_path / "summary.json").read_text())
    assert_balanced(run_summary)
    assert received_calls(server.accepted) == expected_calls(manifest)
    assert run_summary["sent"] == len(server.accepted) and run_summary["exit_code"] == 0
    oldest, newest = _event_time_range(server.accepted)
    assert run_summary["event_time"] == {"oldest": oldest.isoformat(), "newest": newest.isoformat()}
    assert run_summary["request_seconds"]["p50"] >= 0.15 and run_summary["request_seconds"]["max"] >= 0.15
    lag = run_summary["lag_seconds"]
    assert 0 <= lag["p50"] <= lag["p95"] <= lag["max"]
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # the endpoint ends with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_batch_run_writes_a_report_that_shows_its_sent_total_and_needs_no_network(tmp_path, bucket, server):
    root, manifest = bucket
    report = tmp_path / "report.html"
    os.environ["SEGMENT_WRITE_KEY"] = KEY
    try:
        status = main([RUNNER, "--input", f"{root}/**/*.avro", "--segment_endpoint", server.url,
                       "--dead_letter_output", str(tmp_path / "dead"), "--summary_output",
                       str(tmp_path / "summary.json"), "--report_output", str(report), "--progress_seconds", "0"])
    finally:
        del os.environ["SEGMENT_WRITE_KEY"]
    assert status == 0
    run_summary = json.loads((tmp_path / "summary.json").read_text())
    page = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    shown = re.search(r'id="sent-total"[^>]*>([^<]*)<', page)
    assert shown and shown.group(1).strip() == f"{len(server.accepted):,}" == f"{run_summary['sent']:,}"
    assert "Email Sent" in page and "users.messages.email.Send" in page
    for reason in run_summary["dead_letters_by_reason"]:  # the bucket has unreadable files and an oversize event
        assert reason in page
    assert run_summary["dead_letters_by_reason"]

    # What a browser shows of the run's own page.
    browser = subprocess.run(_chromium_command(_chromium(), tmp_path / "profile", "--dump-dom", report.as_uri()),
                             capture_output=True, text=True, timeout=60, check=True)
    shown = _dom(browser.stdout)
    assert shown.by_id("sent-total").text().strip() == f"{len(server.accepted):,}"
    text = " ".join(shown.text().split())
    assert "Email Sent" in text and "unreadable_file" in text
    assert len(list(shown.iter("polyline"))) == 2  # the timeline: sent and failed


def test_metrics_and_report_options_that_cannot_work_are_one_line(tmp_path, bucket, capsys):
    root, _ = bucket
    base = [RUNNER, "--input", f"{root}/**/*.avro", "--dry_run_output", str(tmp_path / "out"),
            "--dead_letter_output", str(tmp_path / "dead")]
    assert main([*base, "--metrics_port", "70000"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --metrics_port must be a port number (0-65535; 0 picks a free one), got 70000"]
    (tmp_path / "folder").mkdir()
    assert main([*base, "--report_output", str(tmp_path / "folder")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: cannot write --report_output {tmp_path / 'folder'}: it is a folder; give a file name"]
    import socket  # pylint: disable=import-outside-toplevel
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main([*base, "--metrics_port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot serve --metrics_port {port} on --metrics_host 127.0.0.1: ")
    dataflow = ["--runner=DataflowRunner", "--project", "p", "--region", "us-central1", "--temp_location", "gs://b/t"]
    assert main([*dataflow, *base[1:], "--metrics_port", "9000"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --metrics_port serves the counts of workers on this machine, and Dataflow's are elsewhere: their "
        "counters are in Cloud Monitoring (see docs/runners.md)"]


def test_a_prism_watch_serves_what_segment_accepted_its_lag_and_health_and_refreshes_its_report(tmp_path, bucket,
                                                                                                server):
    root, manifest = bucket
    files = sorted(manifest["files"])[:10]
    landing = _Landing(root, str(tmp_path / "watched"), str(tmp_path / "staging"))
    os.makedirs(landing.watched)
    port = free_port()
    report = tmp_path / "report.html"
    job = _watch_job(prism(), landing.watched, server, tmp_path, "--metrics_port", str(port),
                     "--report_output", str(report), "--report_refresh_seconds", "1")
    try:
        for path in files:
            landing.land(path)
        expected = expected_calls(_of_files(manifest, set(files)))
        _wait_for(server, job, expected)
        deadline = time.monotonic() + 30
        while True:  # the counts of the last files reach the metrics with their ledger entries' flush
            found = _samples(_get(f"http://127.0.0.1:{port}/metrics")[1])
            if _total(found, "events_sent_total") == len(server.accepted) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        health = _get(f"http://127.0.0.1:{port}/healthz")
        deadline = time.monotonic() + 30
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        running_page = report.read_text()
    finally:
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=DRAIN_SECONDS)
    assert job.returncode == 0, err
    records = [entry for entry in manifest["records"] if entry["source_file"] in set(files)]
    assert _total(found, "events_sent_total") == len(server.accepted) == sum(expected.values())
    assert _total(found, "events_read_total") >= len(records)
    assert found[(PREFIX + "delivery_lag_seconds_count", frozenset())] > 0
    assert found[(PREFIX + "files_waiting", frozenset())] == 0
    assert health == (200, f"ok: {len(server.accepted):,} events sent\n")
    assert 'http-equiv="refresh"' in running_page
    final_page = report.read_text()
    assert 'http-equiv="refresh"' not in final_page
    shown = re.search(r'id="sent-total"[^>]*>([^<]*)<', final_page)
    assert shown and shown.group(1).strip() == f"{len(server.accepted):,}"
    assert "metrics: http://127.0.0.1:" in err
