"""What an operator sees of a run while it runs, from the process that launched it: live metrics in Prometheus's text
format and a health answer (--metrics_port), a timeline of events sent and failed, and the HTML report
(--report_output) written at the end of the run and refreshed by a watch.

One source of counts: the run's counters as transforms.metrics keeps them. While the job runs, the view adds up
this process's tally (the workers of FnApiRunner, and of Prism or Flink in their LOOPBACK default, run in it) and
the tallies the other worker processes on this machine write to the run's folder every second (multi-processing,
a worker pool); once the run is over, it shows the counters of the run's summary, so that the last scrape, the
table, the JSON and the report say the same. Served on the local runners only: Dataflow's workers are elsewhere
(their counters are in Cloud Monitoring: docs/runners.md).

    GET /metrics   (or /)  the counters, gauges and histograms, named currents_to_segment_* (docs/monitoring.md)
    GET /healthz           200 "ok ..." while the job makes progress; 503 and one line saying why when Segment has
                           failed past the retry budget, or a watch has not listed for three of its intervals
"""
import datetime
import json
import os
import socketserver
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from apache_beam.io.filesystems import FileSystems
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from currents_to_segment.pipeline import report_page
from currents_to_segment.pipeline.options import ConfigError, storage_reason
from currents_to_segment.pipeline.run_report import OUTCOMES
from currents_to_segment.transforms import jsonl, metrics, progress
from currents_to_segment.transforms.currents import catalog

PREFIX = "currents_to_segment_"
# How events read end without being sent, dead-lettered or held back: the reason label of events_dropped_total.
DROP_REASONS = tuple(outcome for outcome in metrics.OUTCOMES
                     if outcome not in (metrics.SENT, metrics.DEAD_LETTERED, metrics.HELD_BACK))
TIMELINE_POINTS = 240  # at most; when full, every other point goes and the points come half as often
TIMELINE_SECONDS = 0.5  # the first points' interval
LISTINGS_MISSED = 3  # a watch that has not listed for this many intervals is unhealthy
_SAMPLE_LINES = 5_000  # the dead letters a report reads at most for its samples (per report)


class Timeline:
    """Points (seconds since the start, events sent, events failed) taken every `interval` seconds, at most
    `points`: when full, every other point is dropped and the interval doubles, so a watch of any length keeps its
    whole history in bounded memory. Thread-safe."""

    def __init__(self, points=TIMELINE_POINTS, interval=TIMELINE_SECONDS):
        self._points, self._interval, self._max = [], interval, points
        self._lock = threading.Lock()

    @property
    def interval(self):
        with self._lock:
            return self._interval

    def add(self, seconds, sent, failed):
        """A point now; the last point is always the latest (it replaces one that came sooner than the interval)."""
        point = [round(seconds, 1), sent, failed]
        with self._lock:
            if len(self._points) >= 2 and seconds - self._points[-2][0] < self._interval:
                self._points[-1] = point
            else:
                self._points.append(point)
            if len(self._points) > self._max:
                kept = self._points[::2]
                if kept[-1] is not self._points[-1]:
                    kept.append(self._points[-1])
                self._points, self._interval = kept, self._interval * 2

    def points(self):
        with self._lock:
            return [list(point) for point in self._points]


class RunView:
    """What the launching process knows of the run now (see the module's docstring). `finish(counters)` freezes it
    at the run's own counters."""

    def __init__(self, job_config, clock=time.time):
        self._config = job_config
        self._clock = clock
        self._started = job_config.started.timestamp()
        self._final = None
        self._final_status = None
        self.timeline = Timeline()
        self._lock = threading.Lock()

    def counters(self):
        """The run's counters now: every worker process's on this machine (with what the others' tallies say of
        Segment: see progress.segment_state), or the run's own once it is over."""
        with self._lock:
            if self._final is not None:
                return self._final
        tallies = [metrics.process_totals()]
        if self._config.run_dir:
            tallies.append(metrics.read_tallies(self._config.run_dir, but_pid=os.getpid()))
        return metrics.merge(tallies)

    def finish(self, counters, status):
        """The run is over: from now on the view shows these counters (the summary's) and its exit status."""
        with self._lock:
            self._final, self._final_status = dict(counters), status
        self.sample()

    def sample(self):
        """Add the counts now to the timeline."""
        counters = self.counters()
        self.timeline.add(max(self._clock() - self._started, 0.0), metrics.totals(counters, metrics.SENT),
                          metrics.totals(counters, metrics.DEAD_LETTERED))

    def gauges(self, counters):
        """{name: value} of the gauges now: files_waiting, oldest_waiting_seconds, segment_down_seconds."""
        now = self._clock()
        if self._config.watch:
            waiting, oldest = progress.watch_state().waiting_files(now)
        else:
            waiting = max(progress.files_to_read(counters) - counters.get(metrics.FILES_READ, 0)
                          - counters.get(metrics.FILES_HELD_BACK, 0), 0)
            oldest = 0.0
        failing_since = None if self._final is not None else progress.segment_state(counters)[0]
        return {"files_waiting": waiting, "oldest_waiting_seconds": round(oldest, 3),
                "segment_down_seconds": round(max(now - failing_since, 0.0), 3) if failing_since else 0.0}

    def health(self):
        """(healthy, one line): see the module's docstring."""
        now = self._clock()
        with self._lock:
            final = self._final_status
        if final is not None:
            return final == 0, f"{'ok' if final == 0 else 'failed'}: the run is over ({OUTCOMES.get(final, final)})"
        counters = self.counters()
        failing_since, spent_since, last = progress.segment_state(counters)
        if spent_since is not None:
            return False, ("Segment has failed past the retry budget: failing since "
                           f"{progress.clock_text(failing_since)}" + (f" (last: {last})" if last else ""))
        watch = self._config.watch
        if watch is not None:
            last_listing = progress.watch_state().last_listing() or self._started
            if now - last_listing > LISTINGS_MISSED * watch.interval:
                return False, (f"the watch has not listed since {progress.clock_text(last_listing)} "
                               f"({LISTINGS_MISSED} intervals of {watch.interval:g} s)")
        sent = metrics.totals(counters, metrics.SENT)
        return True, f"ok: {sent:,} events sent" + (f", Segment failing since {progress.clock_text(failing_since)}"
                                                     if failing_since else "")


# --- Prometheus ----------------------------------------------------------------------------------------------------

def _seconds_histogram(counters, name, metric_name, documentation):
    observed = metrics.distribution(counters, name)
    buckets = [("+Inf" if bound == float("inf") else f"{bound / 1000:g}", value)
               for bound, value in metrics.histogram(counters, name)]
    return HistogramMetricFamily(metric_name, documentation, buckets=buckets, sum_value=observed["sum"] / 1000)


# The metric families, as data. Counters by one label: (name, help, counter name prefix, label).
_LABELLED = (
    ("events_read", "Events read from Currents files.", metrics.READ, "event_type"),
    ("events_dead_lettered", "Events read and dead-lettered.", metrics.DEAD_LETTERED, "event_type"),
    ("events_held_back", "Events read that a watch held back when it gave up on Segment (the next watch reads them "
     "again).", metrics.HELD_BACK, "event_type"),
    ("dead_letters", "Dead letters written, by reason.", metrics.LETTERS_BY_REASON, "reason"),
    ("segment_requests", "HTTP attempts to Segment (retries included), by status (no_answer: none within the "
     "timeout, or no connection).", metrics.REQUESTS_BY_STATUS, "status"),
)
# Plain counters: (name, help, counter name).
_PLAIN = (
    ("files_read", "Currents files read (to their end or as far as they could be).", metrics.FILES_READ),
    ("unreadable_file_parts", "Files or parts of files that could not be read (each a dead letter).",
     metrics.UNREADABLE_FILES),
    ("bytes_sent", "JSON bytes of the events Segment accepted (before gzip).", metrics.BYTES_SENT),
    ("throttled_seconds", "Seconds requests to Segment were held back (the budget, Retry-After, retry backoffs).",
     metrics.THROTTLING_SECONDS),
)
# Gauges (RunView.gauges): (name, help).
_GAUGES = (
    ("files_waiting", "Files listed and not read yet."),
    ("oldest_waiting_seconds", "How long ago the oldest file waiting landed (a watch)."),
    ("segment_down_seconds", "How long Segment has been failing (0 while it answers)."),
)
# Histograms of values observed in milliseconds: (name, help, what metrics observes).
_HISTOGRAMS = (
    ("request_seconds", "Each HTTP attempt to Segment, from its start to its answer.", metrics.REQUEST_MS),
    ("delivery_lag_seconds", "Per file: from its landing (modification time) to its last event accepted.",
     metrics.DELIVERY_LAG_MS),
)


def families(counters, gauges, mapping):
    """The Prometheus metric families of these counters and gauges (docs/monitoring.md has each)."""
    found = []
    for name, documentation, metric, label in _LABELLED:
        family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
        for value_label, value in metrics.by_suffix(counters, metric).items():
            family.add_metric([value_label], value)
        found.append(family)
    sent = CounterMetricFamily(PREFIX + "events_sent", "Events Segment accepted (in a dry run: written), by Currents "
                               "event type and the Segment event they went as.", labels=["event_type", "event"])
    for event_type, value in metrics.by_suffix(counters, metrics.SENT).items():
        spec = mapping.spec_for(event_type) if mapping is not None else None
        sent.add_metric([event_type, spec.segment_event if spec else ""], value)
    dropped = CounterMetricFamily(PREFIX + "events_dropped", "Events read and not sent on purpose, by reason.",
                                  labels=["event_type", "reason"])
    for reason in DROP_REASONS:
        for event_type, value in metrics.by_suffix(counters, reason).items():
            dropped.add_metric([event_type, reason], value)
    found += [sent, dropped]
    found += [CounterMetricFamily(PREFIX + name, documentation, value=counters.get(metric, 0))
              for name, documentation, metric in _PLAIN]
    found += [GaugeMetricFamily(PREFIX + name, documentation, value=gauges[name]) for name, documentation in _GAUGES]
    newest = metrics.distribution(counters, metrics.EVENT_TIME)["max"]
    if newest is not None:
        found.append(GaugeMetricFamily(PREFIX + "newest_event_time_seconds", "The time (UNIX seconds) of the newest "
                                       "event mapped to be sent.", value=newest))
    found += [_seconds_histogram(counters, metric, PREFIX + name, documentation)
              for name, documentation, metric in _HISTOGRAMS]
    return found


class _Collector:
    """prometheus_client's collector of a RunView: the families of its counters at each scrape."""

    def __init__(self, view, mapping):
        self._view, self._mapping = view, mapping

    def collect(self):
        counters = self._view.counters()
        return families(counters, self._view.gauges(counters), self._mapping)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass


def wsgi_app(view, mapping):
    """The metrics endpoint's WSGI application: /healthz, else the metrics (prometheus_client's exposition, text or
    OpenMetrics as the scraper asks)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(view, mapping))
    exposition = make_wsgi_app(registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") == "/healthz":
            healthy, line = view.health()
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [(line + "\n").encode("utf-8")]
        return exposition(environ, start_response)
    return app


# --- the report ----------------------------------------------------------------------------------------------------

def dead_letter_samples(job_config, max_lines=_SAMPLE_LINES):
    """One dead letter of this run per (reason, HTTP status), read from its letter files (at most max_lines lines:
    the cost of a report does not grow with the run)."""
    found, lines = {}, 0
    try:
        pattern = jsonl.output_pattern(job_config.dead_letter_output, jsonl.DEAD_LETTERS, job_config.run_id)
        paths = sorted(found.path for found in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # pylint: disable=broad-except  # no letters (yet), or the folder cannot be listed
        return []
    for path in paths:
        try:
            with FileSystems.open(path, compression_type="uncompressed") as stream:
                for raw in stream:
                    lines += 1
                    if lines > max_lines:
                        return list(found.values())
                    try:
                        letter = json.loads(raw)
                    except ValueError:
                        continue
                    found.setdefault((letter.get("reason"), letter.get("http_status")), letter)
        except Exception:  # pylint: disable=broad-except  # a file gone since the listing
            continue
    return [found[key] for key in sorted(found, key=str)]


def mapping_section(job_config, run_summary):
    """The mapping in use, the event types read that it does not send (events), and of those the ones the current
    mapping would send (as which Segment event)."""
    mapping = job_config.delivery.track.mapping
    left_out = {event_type: row.get(metrics.UNSUPPORTED_EVENT_TYPE, 0)
                for event_type, row in run_summary.get("by_event_type", {}).items()
                if row.get(metrics.UNSUPPORTED_EVENT_TYPE)}
    specs = {} if mapping.name == catalog.CURRENT.name else {
        event_type: catalog.CURRENT.spec_for(event_type) for event_type in left_out}
    current_sends = {event_type: spec.segment_event for event_type, spec in specs.items() if spec is not None}
    return {"name": mapping.name, "left_out": left_out, "current_sends": current_sends}


def report_data(job_config, run_summary, view, final):
    """What report_page.render shows of a run."""
    return {"title": f"currents-to-segment run {job_config.run_id}",
            "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "final": final, "refresh_seconds": None if final else job_config.report_refresh_seconds,
            "summary": run_summary, "timeline": view.timeline.points(),
            "samples": dead_letter_samples(job_config), "mapping": mapping_section(job_config, run_summary)}


def write_report(path, data):
    """Write the report page (whole: a temporary renamed, on a local disk) to a path on any Beam filesystem."""
    page = report_page.render(data).encode("utf-8")
    if "://" in path:
        with FileSystems.create(path, mime_type="text/html") as stream:
            stream.write(page)
        return
    temporary = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temporary, "wb") as stream:
        stream.write(page)
    os.replace(temporary, path)


# --- the monitor ---------------------------------------------------------------------------------------------------

class Monitor:
    """The run's view, its timeline sampled in a thread of its own, its metrics endpoint (with --metrics_port) and
    the report a watch refreshes (with --report_output). `start()` before the run (ConfigError when the port cannot
    be bound: nothing has run), `stop()` after it."""

    def __init__(self, job_config, live_summary):
        """live_summary(counters): the summary of the run so far (a watch's refreshed report)."""
        self.view = RunView(job_config)
        self._config = job_config
        self._live_summary = live_summary
        self._server = None
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        config = self._config
        if config.metrics_port is not None:
            try:
                self._server = make_server(config.metrics_host, config.metrics_port,
                                           wsgi_app(self.view, config.delivery.track.mapping),
                                           server_class=_Server, handler_class=_QuietHandler)
            except OSError as error:
                raise ConfigError(f"cannot serve --metrics_port {config.metrics_port} on --metrics_host "
                                  f"{config.metrics_host}: {error.strerror or error}") from error
            host, port = self._server.server_address[:2]
            threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
            print(f"metrics: http://{host}:{port}/metrics   health: http://{host}:{port}/healthz", file=sys.stderr,
                  flush=True)
        if config.metrics_port is None and not config.report_output:
            return self  # nobody looks: no timeline
        self.view.sample()  # the start: nothing yet
        self._thread = threading.Thread(target=self._loop, name="timeline", daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        refresh = self._config.report_refresh_seconds if self._config.watch and self._config.report_output else None
        next_report = time.monotonic() + refresh if refresh else None
        while not self._stop.wait(self.view.timeline.interval):
            self.view.sample()
            if next_report is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + refresh
                self.refresh_report()

    def refresh_report(self):
        """Write the report of the run so far (a watch's, every --report_refresh_seconds)."""
        try:
            write_report(self._config.report_output,
                         report_data(self._config, self._live_summary(self.view.counters()), self.view, final=False))
        except Exception as error:  # pylint: disable=broad-except  # each filesystem fails its own way
            print(f"warning: cannot write --report_output {self._config.report_output}: {storage_reason(error)}",
                  file=sys.stderr)

    def finish(self, counters, run_summary):
        """The run is over: freeze the view at its summary's counters; write the report (False when it could not
        be), once the timeline's thread has stopped (a watch's refresh of the report is not half-way through)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.view.finish(counters, run_summary.get("exit_code"))
        if not self._config.report_output:
            return True
        try:
            write_report(self._config.report_output, report_data(self._config, run_summary, self.view, final=True))
        except Exception as error:  # pylint: disable=broad-except
            print(f"error: cannot write --report_output {self._config.report_output}: {storage_reason(error)} "
                  "(the summary above is the run's)", file=sys.stderr)
            return False
        return True

    def stop(self):
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
