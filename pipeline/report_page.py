"""The run's report as one self-contained HTML page (`--report_output FILE.html`): `render(report) -> str`.

The page needs nothing but itself: inline CSS and an inline SVG timeline, no script, no font, no image and no link
to anything outside it (a page opened from a bucket, an e-mail or an air-gapped machine looks the same). Standard
library only, and no Beam: the watch refreshes it while it runs, and tools may render a summary JSON with it.

`report` (every key may be missing or None: a run that failed early has few):

- `title`, `generated_at` (ISO text), `final` (False: a watch's page, refreshed while it runs, every
  `refresh_seconds` by the browser too, through <meta http-equiv="refresh">);
- `summary`: the run's summary, as pipeline.summary.summarize() builds it, with the run's facts;
- `timeline`: [[seconds since the start, events sent so far, events dead-lettered so far], ...], cumulative;
- `samples`: a dead letter for each (reason, http_status), as written to the dead-letter files;
- `mapping`: {"name", "left_out": {event type: events read that the mapping does not send},
  "current_sends": {event type: the Segment event `--mapping current` sends it as}}.

Everything from the data is escaped (html.escape) where it is put; the page's own markup holds nothing else.
"""
import datetime
import html
import json
import math
import numbers

# A sample letter's string values are cut to this many characters, and its whole JSON to MAX_SAMPLE_CHARS.
MAX_VALUE_CHARS = 2000
MAX_SAMPLE_CHARS = 20000
# At most this many rows of a table of names (event types, Segment events, left-out types); the rest are summed.
MAX_ROWS = 500

# The per-event-type columns, in the summary's order: (key, header, its total's key in the summary). The one
# definition: the summary's table (pipeline.summary) takes its headers and total keys from here.
TYPE_COLUMNS = (
    ("read", "read", "events_read"),
    ("dropped_no_external_id", "no external id", "dropped_no_external_id"),
    ("dropped_no_id", "no id", "dropped_no_id"),
    ("unsupported_event_type", "unsupported", "unsupported_event_type"),
    ("outside_time_range", "outside range", "outside_time_range"),
    ("sent", "sent", "sent"),
    ("dead_lettered", "dead-lettered", "dead_lettered"),
    ("held_back", "held back", "held_back"),
)
_OUTCOME_TERMS = [(key, header) for key, header, _ in TYPE_COLUMNS[1:]]

_REASON_NOTES = {
    "event_too_large": "an event larger than Segment takes (32 kB)",
    "rejected_by_segment": "Segment answered that the event is invalid",
    "retries_exhausted": "no success within the retries",
    "invalid_record": "a Currents record that could not be mapped",
    "unreadable_file": "a file, or part of one, that could not be read",
}

_CSS = """
:root{--bg:#f5f6f8;--card:#fff;--line:#e4e7ec;--text:#1d2330;--muted:#667085;--blue:#2563eb;--green:#15803d;
--green-bg:#e7f6ec;--amber:#b45309;--amber-bg:#fdf3e1;--red:#b91c1c;--red-bg:#fdecec;--grey-bg:#eef0f3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif;font-variant-numeric:tabular-nums}
main{max-width:1200px;margin:0 auto;padding:24px 20px 40px}
h1{font-size:20px;margin:0 0 4px;word-break:break-word}
h2{font-size:15px;margin:0 0 12px;letter-spacing:.01em}
h3{font-size:13px;margin:16px 0 8px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.04em}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin:0 0 16px;
box-shadow:0 1px 2px rgba(16,24,40,.04)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px;margin:0 0 16px}
.grid>.card{margin:0}
.grid.wide-first{grid-template-columns:minmax(0,2fr) minmax(0,1fr) minmax(0,1fr)}
@media (max-width:900px){.grid.wide-first{grid-template-columns:minmax(0,1fr)}}
header.card{border-left:6px solid var(--status)}
.ok{--status:var(--green);--status-bg:var(--green-bg)}.warn{--status:var(--amber);--status-bg:var(--amber-bg)}
.bad{--status:var(--red);--status-bg:var(--red-bg)}.info{--status:var(--blue);--status-bg:#e8effd}
.unknown{--status:#98a2b3;--status-bg:var(--grey-bg)}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-weight:600;font-size:13px;
color:var(--status);background:var(--status-bg);vertical-align:middle}
.pill{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;background:var(--grey-bg);
color:var(--muted);margin-left:6px;vertical-align:middle}
.sub{color:var(--muted);margin:2px 0 12px}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:6px 20px;margin:0}
.facts div{min-width:0}.facts dt{color:var(--muted);font-size:12px}.facts dd{margin:0;overflow-wrap:anywhere}
header h3{margin:14px 0 6px;padding-top:10px;border-top:1px solid var(--line)}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
.tile{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:#fbfcfd}
.tile .label{color:var(--muted);font-size:12px}.tile .value{font-size:24px;font-weight:650;line-height:1.2}
.tile .note{color:var(--muted);font-size:12px}
.tile.main{border-color:#bcd0fb;background:#f3f7ff}.tile.main .value{color:var(--blue)}
.tile.alert .value{color:var(--red)}
.balance{margin:14px 0 0;padding:8px 12px;border-radius:8px;background:var(--status-bg);color:var(--text)}
.balance b{color:var(--status)}
table{border-collapse:collapse;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{font-size:12px;color:var(--muted);font-weight:600;background:#fafbfc}
th:first-child,td:first-child{text-align:left;white-space:normal;overflow-wrap:break-word}
tbody tr:hover{background:#f8fafc}
tfoot td{font-weight:650;border-top:2px solid var(--line);border-bottom:none}
td.zero{color:#b0b7c3}td.hot{color:var(--red);font-weight:600}
.scroll{overflow-x:auto}
.bar{height:8px;border-radius:4px;background:#c7d7fb;min-width:1px}
.barcell{width:35%}
.status-2{color:var(--green)}.status-4{color:var(--amber)}.status-5,.status-x{color:var(--red)}
details{border:1px solid var(--line);border-radius:8px;margin:8px 0;background:#fbfcfd}
summary{cursor:pointer;padding:7px 12px;font-weight:600}
summary .pill{font-weight:400}
pre{margin:0;padding:10px 12px;border-top:1px solid var(--line);overflow:auto;max-height:480px;font:12px/1.45
ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;white-space:pre-wrap;word-break:break-word}
.legend{display:flex;gap:18px;flex-wrap:wrap;margin:0 0 6px;color:var(--muted)}
.legend i{display:inline-block;width:14px;height:3px;border-radius:2px;vertical-align:middle;margin-right:6px}
svg{display:block;width:100%;height:auto}
.hint{margin:12px 0 0;padding:10px 12px;border-radius:8px;background:#e8effd;border:1px solid #bcd0fb}
.muted{color:var(--muted)}.empty{color:var(--muted);font-style:italic}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;background:var(--grey-bg);
padding:1px 5px;border-radius:4px;word-break:break-word}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:8px}
"""


# --- formatting -------------------------------------------------------------------------------------

def _esc(value):
    return html.escape("" if value is None else str(value), quote=True)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _num(value, digits=1):
    """A count with thousands separators (a float with `digits` decimals); "—" for None; other values as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if _is_number(value):
        return f"{value:,.0f}" if float(value).is_integer() and digits == 0 else f"{value:,.{digits}f}"
    return str(value)


def _bytes(value):
    if not _is_number(value):
        return _num(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def _seconds(value):
    """A duration: "20 ms", "4.0 s", "2 min 5 s", "3 h 12 min", "2 d 4 h"; "—" for None."""
    if not _is_number(value):
        return "—" if value is None else str(value)
    if value < 0:
        return "-" + _seconds(-value)
    if value < 1:
        return f"{value * 1000:.0f} ms" if value >= 0.001 or value == 0 else f"{value * 1000:.2f} ms"
    if value < 60:
        return f"{value:.1f} s"
    whole = int(round(value))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


def _every(seconds):
    if not _is_number(seconds):
        return ""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:g} s"


def _when(text):
    """An ISO time as "2026-12-07 05:00:00 UTC" (as it is when it is not ISO)."""
    if not text:
        return "—"
    try:
        moment = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _span(oldest, newest):
    try:
        start, end = (datetime.datetime.fromisoformat(str(moment)) for moment in (oldest, newest))
        return (end - start).total_seconds()
    except (TypeError, ValueError):
        return None


def _dict(value):
    return value if isinstance(value, dict) else {}


def _text(value):
    """An option's value as short text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(item) for item in value) if value else "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str) if value else "none"
    return _num(value) if _is_number(value) else str(value)


def _cut(value, limit=MAX_VALUE_CHARS):
    """The value with every string longer than `limit` cut, saying how much was left out."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… [{len(value) - limit:,} more characters]"
    if isinstance(value, dict):
        return {str(key): _cut(item, limit) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cut(item, limit) for item in value]
    return value


def _pretty(letter):
    text = json.dumps(_cut(letter), indent=2, ensure_ascii=False, default=str)
    if len(text) > MAX_SAMPLE_CHARS:
        text = f"{text[:MAX_SAMPLE_CHARS]}\n… [{len(text) - MAX_SAMPLE_CHARS:,} more characters]"
    return text


def _status_class(summary, final):
    code = summary.get("exit_code")
    if code is None:
        return "info" if not final else "unknown"
    if code == 0:
        return "ok"
    if code in (2, 130, 143):  # dead letters to look at; stopped by hand
        return "warn"
    return "bad"


# --- the sections -----------------------------------------------------------------------------------

def _header(report, summary, status):
    final = report.get("final", True) is not False
    title = report.get("title") or f"currents-to-segment run {summary.get('run_id') or ''}".strip()
    every = _every(report.get("refresh_seconds"))
    running = "running" + (f", refreshed every {every}" if every else "")
    outcome = str(summary.get("outcome") or (running if not final else "unknown")).replace("_", " ")
    code = summary.get("exit_code")
    badge = f'<span class="badge" id="outcome">{_esc(outcome)}' \
            + (f" · exit {_esc(code)}" if code is not None else "") + "</span>"
    pills = ""
    if summary.get("dry_run"):
        pills += '<span class="pill">dry run: nothing sent</span>'
    if not final and summary.get("outcome"):
        pills += f'<span class="pill">{_esc(running)}</span>'
    generated = f"{'as of' if not final else 'generated'} {_esc(_when(report.get('generated_at')))}"
    delivery = _dict(summary.get("delivery"))
    facts = [
        ("run id", summary.get("run_id")),
        ("started", _when(summary.get("started_at")) if summary.get("started_at") else None),
        ("ended", _when(summary.get("ended_at")) if summary.get("ended_at") else None),
        ("duration", None if summary.get("duration_seconds") is None else _seconds(summary["duration_seconds"])),
        ("mapping", delivery.get("mapping") or _dict(report.get("mapping")).get("name")),
        ("endpoint", delivery.get("endpoint") or ("none (dry run)" if summary.get("dry_run") else None)),
    ]
    inputs = [(key.replace("_", " "), _text(value)) for key, value in _dict(summary.get("inputs")).items()
              if value not in (None, [], {}, "")]
    inputs_html = f'<h3>What it read</h3>{_facts_list(inputs)}' if inputs else ""
    return (f'<header class="card {status}"><h1>{_esc(title)} {badge}{pills}</h1>'
            f'<p class="sub">{generated}</p>{_facts_list([(n, v) for n, v in facts if v not in (None, "")])}'
            f"{inputs_html}</header>")


def _tile(label, value, note="", klass="", element_id=None):
    ident = f' id="{element_id}"' if element_id else ""
    note_html = f'<div class="note">{_esc(note)}</div>' if note else ""
    return (f'<div class="tile {klass}"><div class="label">{_esc(label)}</div>'
            f'<div class="value"{ident}>{_esc(value)}</div>{note_html}</div>')


def _totals(summary):
    dry = summary.get("dry_run")
    sent = summary.get("sent")
    dead = summary.get("dead_lettered")
    tiles = [
        _tile("events read", _num(summary.get("events_read")),
              f"from {_num(summary.get('files_read'))} files" if summary.get("files_read") is not None else ""),
        _tile("would send (dry run)" if dry else "sent to Segment", _num(sent),
              f"{_num(summary.get('events_per_second'))} events/s"
              if summary.get("events_per_second") is not None else "", "main", "sent-total"),
        _tile("dead-lettered", _num(dead), "", "alert" if dead else ""),
        _tile("dropped: no external id", _num(summary.get("dropped_no_external_id"))),
    ]
    if "dropped_no_id" in summary:
        tiles.append(_tile("dropped: no id", _num(summary.get("dropped_no_id"))))
    tiles.append(_tile("unsupported event type", _num(summary.get("unsupported_event_type"))))
    if "outside_time_range" in summary:
        tiles.append(_tile("outside the time range", _num(summary.get("outside_time_range"))))
    if "held_back" in summary:
        tiles.append(_tile("held back (Segment down)", _num(summary.get("held_back")),
                           f"{_num(summary.get('files_held_back'))} files" if summary.get("files_held_back") is not None
                           else "", "alert" if summary.get("held_back") else ""))
    tiles += [
        _tile("requests" + (" (written)" if dry else ""), _num(summary.get("requests")),
              f"{_num(summary.get('retries'))} retries" if summary.get("retries") is not None else ""),
        _tile("bytes sent", _bytes(summary.get("bytes_sent")),
              f"{_num(summary.get('bytes_sent'))} bytes" if _is_number(summary.get("bytes_sent")) else ""),
        _tile("events / s", _num(summary.get("events_per_second"))),
        _tile("throttled", _seconds(summary.get("throttled_seconds")) if summary.get("throttled_seconds") is not None
              else "—", "held back by the rate budget"),
        _tile("unreadable files", _num(summary.get("unreadable_files")),
              f"{_num(summary.get('records_lost'))} records lost" if summary.get("records_lost") else "",
              "alert" if summary.get("unreadable_files") else ""),
        _tile("duplicate ids", _num(summary.get("duplicate_ids")), "sent; Segment keeps one"),
    ]
    return (f'<section class="card" id="totals"><h2>Totals</h2><div class="tiles">{"".join(tiles)}</div>'
            f"{_balance(summary)}</section>")


def _balance(summary):
    balanced = summary.get("balanced")
    terms = [(header, summary.get(key)) for key, header in _OUTCOME_TERMS if key in summary]
    if summary.get("dry_run"):
        terms = [("would send" if header == "sent" else header, value) for header, value in terms]
    equation = ""
    if summary.get("events_read") is not None and terms:
        equation = f"{_num(summary.get('events_read'))} read = " + " + ".join(
            f"{_num(value)} {header}" for header, value in terms)
    if balanced is True:
        klass, verdict = "ok", "Balanced: every event read is accounted for."
    elif balanced is False:
        klass, verdict = "bad", "NOT balanced: events are unaccounted for."
    else:
        klass, verdict = "unknown", "Balance not known (no counts)."
    lost = ""
    if summary.get("records_lost"):
        lost = (f" Also {_num(summary['records_lost'])} records lost in unreadable parts of files, each part in a "
                "dead letter.")
    return (f'<p class="balance {klass}" id="balance"><b>{_esc(verdict)}</b> {_esc(equation)}{_esc(lost)}</p>')


def _nice_step(span, count):
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _time_step(span):
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / step <= 6:
            return step
    return _nice_step(span / 86400, 6) * 86400


def _time_label(seconds):
    if seconds == 0:
        return "0"
    if seconds % 86400 == 0:
        return f"{seconds // 86400:g} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds // 60:g} min"
    return f"{seconds:g} s"


def _count_label(value):
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e5:
        return f"{value / 1e3:g}k"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,g}"


def _timeline_points(timeline):
    points = []
    for point in timeline if isinstance(timeline, (list, tuple)) else ():
        if isinstance(point, (list, tuple)) and len(point) >= 2 and all(_is_number(v) for v in point[:3]):
            points.append((float(point[0]), float(point[1]), float(point[2]) if len(point) > 2 else 0.0))
    return sorted(points)


def _timeline(report, summary):
    points = _timeline_points(report.get("timeline"))
    width, height, left, right, top, bottom = 800, 250, 64, 20, 14, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    t_max = max([p[0] for p in points] + [0.0]) or 60.0  # an empty axis: a minute, 10 events
    y_max = max([max(p[1], p[2]) for p in points] + [0.0]) or 10.0
    t_step = _time_step(t_max)
    t_top = max(t_step * math.ceil(t_max / t_step), t_step)
    y_step = max(_nice_step(y_max, 5), 1)
    y_top = max(y_step * math.ceil(y_max / y_step), y_step)

    def x(t):
        return left + plot_w * t / t_top

    def y(v):
        return top + plot_h * (1 - v / y_top)

    parts = [f'<svg id="timeline-svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="events sent and dead-lettered over time" '
             f'font-family="system-ui,sans-serif" font-size="11">']
    value = 0.0
    while value <= y_top + 1e-9:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     f'stroke="{"#98a2b3" if value == 0 else "#e4e7ec"}" stroke-width="1"/>'
                     f'<text x="{left - 8}" y="{y(value) + 4:.1f}" text-anchor="end" fill="#667085">'
                     f"{_esc(_count_label(value))}</text>")
        value += y_step
    tick = 0.0
    while tick <= t_top + 1e-9:
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" '
                     f'stroke="#98a2b3"/><text x="{x(tick):.1f}" y="{top + plot_h + 17}" text-anchor="middle" '
                     f'fill="#667085">{_esc(_time_label(tick))}</text>')
        tick += t_step
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#98a2b3"/>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" fill="#475467">'
                 "time since the start of the run</text>")
    parts.append(f'<text transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle" '
                 'fill="#475467">events (cumulative)</text>')
    if points:
        sent = " ".join(f"{x(t):.1f},{y(s):.1f}" for t, s, _ in points)
        failed = " ".join(f"{x(t):.1f},{y(f):.1f}" for t, _, f in points)
        area = f"{x(points[0][0]):.1f},{y(0):.1f} {sent} {x(points[-1][0]):.1f},{y(0):.1f}"
        parts.append(f'<polygon points="{area}" fill="#2563eb" fill-opacity="0.08"/>')
        parts.append(f'<polyline class="sent" points="{sent}" fill="none" stroke="#2563eb" stroke-width="2.2" '
                     'stroke-linejoin="round"/>')
        parts.append(f'<polyline class="failed" points="{failed}" fill="none" stroke="#dc2626" stroke-width="2" '
                     'stroke-linejoin="round"/>')
        last_t, last_s, last_f = points[-1]
        parts.append(f'<circle cx="{x(last_t):.1f}" cy="{y(last_s):.1f}" r="3.5" fill="#2563eb"/>'
                     f'<circle cx="{x(last_t):.1f}" cy="{y(last_f):.1f}" r="3.5" fill="#dc2626"/>')
    else:
        parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
                     'fill="#98a2b3" font-size="14">no progress recorded yet</text>')
    parts.append("</svg>")
    sent_label = "would send" if summary.get("dry_run") else "sent"
    last = points[-1] if points else None
    legend = (f'<div class="legend"><span><i style="background:#2563eb"></i>{sent_label}'
              + (f" ({_num(int(last[1]))})" if last else "")
              + '</span><span><i style="background:#dc2626"></i>dead-lettered'
              + (f" ({_num(int(last[2]))})" if last else "")
              + f'</span><span>{_num(len(points))} points</span></div>')
    return f'<section class="card" id="timeline"><h2>Timeline</h2>{legend}{"".join(parts)}</section>'


def _cell(value, hot=False):
    klass = "zero" if value == 0 else ("hot" if hot and _is_number(value) and value > 0 else "")
    return f'<td class="{klass}">{_esc(_num(value))}</td>' if klass else f"<td>{_esc(_num(value))}</td>"


def _rows_capped(items):
    items = list(items)
    return items[:MAX_ROWS], items[MAX_ROWS:]


def _event_types(summary):
    by_type = _dict(summary.get("by_event_type"))
    if not by_type:
        return ('<section class="card" id="event-types"><h2>By Currents event type</h2>'
                '<p class="empty">No events read.</p></section>')
    rows_seen = set()
    for row in by_type.values():
        rows_seen.update(_dict(row))
    known = [column for column in TYPE_COLUMNS if column[0] in rows_seen or column[2] in summary]
    known_keys = {column[0] for column in known}
    extra = sorted(key for key in rows_seen if key not in known_keys)
    columns = [(key, header.replace("sent", "would send") if summary.get("dry_run") and key == "sent" else header)
               for key, header, _ in known] + [(key, key.replace("_", " ")) for key in extra]
    totals = {key: total for key, _, total in known}
    head = "<tr><th>event type</th>" + "".join(f"<th>{_esc(header)}</th>" for _, header in columns) + "</tr>"
    shown, rest = _rows_capped(by_type.items())
    body = []
    for event_type, row in shown:
        row = _dict(row)
        body.append(f"<tr><td>{_esc(event_type)}</td>"
                    + "".join(_cell(row.get(key), hot=key in ("dead_lettered", "held_back")) for key, _ in columns)
                    + "</tr>")
    if rest:
        body.append(f'<tr><td class="muted">… and {len(rest):,} more event types</td>'
                    + "".join(_cell(sum(_dict(row).get(key) or 0 for _, row in rest)) for key, _ in columns) + "</tr>")
    foot = "<tr><td>total</td>" + "".join(
        _cell(summary.get(totals[key]) if key in totals else sum(_dict(row).get(key) or 0 for row in by_type.values()))
        for key, _ in columns) + "</tr>"
    return (f'<section class="card" id="event-types"><h2>By Currents event type '
            f'<span class="pill">{len(by_type):,} types</span></h2><div class="scroll"><table id="event-type-table">'
            f"<thead>{head}</thead><tbody>{''.join(body)}</tbody><tfoot>{foot}</tfoot></table></div></section>")


def _bar_table(table_id, first_header, value_header, items, value_format=_num, row_class=None):
    items = [(name, value) for name, value in items]
    peak = max([value for _, value in items if _is_number(value)] + [0])
    shown, rest = _rows_capped(items)
    rows = []
    for name, value in shown:
        share = 100 * value / peak if peak and _is_number(value) else 0
        klass = f' class="{row_class(name)}"' if row_class else ""
        rows.append(f"<tr{klass}><td>{_esc(name)}</td><td>{_esc(value_format(value))}</td>"
                    f'<td class="barcell"><div class="bar" style="width:{share:.1f}%"></div></td></tr>')
    if rest:
        rows.append(f'<tr><td class="muted">… and {len(rest):,} more</td>'
                    f"<td>{_esc(value_format(sum(v for _, v in rest if _is_number(v))))}</td><td></td></tr>")
    return (f'<table id="{table_id}"><thead><tr><th>{_esc(first_header)}</th><th>{_esc(value_header)}</th><th></th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _segment_events(summary):
    by_event = _dict(summary.get("by_segment_event"))
    header = "would send" if summary.get("dry_run") else "sent"
    if not by_event:
        body = '<p class="empty">No events sent.</p>' if "by_segment_event" in summary \
            else '<p class="empty">Not known for this run.</p>'
    else:
        items = sorted(by_event.items(), key=lambda item: (-(item[1] if _is_number(item[1]) else 0), str(item[0])))
        body = _bar_table("segment-event-table", "Segment event", header, items)
    count = f' <span class="pill">{len(by_event):,} events</span>' if by_event else ""
    return f'<section class="card" id="segment-events"><h2>By Segment event{count}</h2>{body}</section>'


def _status_family(status):
    text = str(status)
    return f"status-{text[0]}" if text[:1] in "2345" and text.isdigit() else "status-x"


def _failures(summary, samples):
    reasons = _dict(summary.get("dead_letters_by_reason"))
    statuses = _dict(summary.get("requests_by_status"))
    if reasons:
        reason_html = _bar_table("reason-table", "reason", "letters", sorted(reasons.items()))
        notes = "".join(f"<li><code>{_esc(reason)}</code>: {_esc(_REASON_NOTES[reason])}</li>"
                        for reason in reasons if reason in _REASON_NOTES)
        reason_html += f'<ul class="muted">{notes}</ul>' if notes else ""
    else:
        reason_html = '<p class="empty">No dead letters.</p>'
    if statuses:
        def order(item):
            return (not str(item[0]).isdigit(), str(item[0]))
        status_html = _bar_table("status-table", "HTTP status", "requests", sorted(statuses.items(), key=order),
                                 row_class=_status_family)
    else:
        status_html = '<p class="empty">' + ("Dry run: no requests sent." if summary.get("dry_run")
                                             else "No requests recorded.") + "</p>"
    where = summary.get("dead_letter_output")
    where_html = f'<p class="muted">Dead letters are written to <code>{_esc(where)}</code>.</p>' if where else ""
    return (f'<div class="grid"><section class="card" id="dead-letters"><h2>Dead letters by reason</h2>{reason_html}'
            f'{where_html}</section><section class="card" id="requests"><h2>Requests by HTTP status</h2>{status_html}'
            f"</section></div>{_samples(samples)}")


def _samples(samples):
    letters = [letter for letter in samples if isinstance(letter, dict)] if isinstance(samples, (list, tuple)) else []
    if not letters:
        return ""
    items = []
    for letter in letters:
        status = letter.get("http_status")
        label = f"{letter.get('reason') or 'unknown reason'}"
        details = [f"HTTP {status}" if status is not None else "no HTTP status"]
        if letter.get("event_type"):
            details.append(str(letter["event_type"]))
        items.append(f'<details class="sample"><summary><span class="reason">{_esc(label)}</span>'
                     + "".join(f'<span class="pill">{_esc(detail)}</span>' for detail in details)
                     + f"</summary><pre>{_esc(_pretty(letter))}</pre></details>")
    return (f'<section class="card" id="samples"><h2>A sample letter of each reason and HTTP status '
            f'<span class="pill">{len(letters):,}</span></h2>{"".join(items)}</section>')


def _latency(summary):
    rows = []
    for key, name in (("request_seconds", "Segment request"), ("lag_seconds", "file landed → last event accepted")):
        values = summary.get(key)
        if isinstance(values, dict):
            rows.append((name, values))
    if not rows:
        return '<section class="card" id="latency"><h2>Latency</h2><p class="empty">Not measured.</p></section>'
    columns = [c for c in ("p50", "p95", "p99", "max") if any(c in values for _, values in rows)]
    columns += sorted({key for _, values in rows for key in values} - set(columns))
    head = "<tr><th></th>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr>"
    body = "".join(f"<tr><td>{_esc(name)}</td>" + "".join(f"<td>{_esc(_seconds(values.get(c)))}</td>" for c in columns)
                   + "</tr>" for name, values in rows)
    return (f'<section class="card" id="latency"><h2>Latency</h2><div class="scroll"><table id="latency-table">'
            f"<thead>{head}</thead><tbody>{body}</tbody></table></div></section>")


def _facts_list(pairs):
    return '<dl class="facts">' + "".join(f"<div><dt>{_esc(name)}</dt><dd>{_esc(value)}</dd></div>"
                                          for name, value in pairs) + "</dl>"


def _event_time(summary):
    times = summary.get("event_time")
    times = times if isinstance(times, dict) else {}
    oldest, newest = times.get("oldest"), times.get("newest")
    if not oldest and not newest:
        body = '<p class="empty">No event times (no events read).</p>'
    else:
        span = _span(oldest, newest)
        body = _facts_list([("oldest event", _when(oldest)), ("newest event", _when(newest)),
                            ("span", _seconds(span) if span is not None else "—")])
    return f'<section class="card" id="event-time"><h2>Event time</h2>{body}</section>'


_LEDGER_LABELS = {
    "files_skipped": "files skipped (already sent)",
    "files_recorded": "files recorded",
    "files_not_recorded": "files read but not recorded",
    "files_recorded_for_other_destinations": "files recorded only for other destinations",
    "files_sent_otherwise_within_24h": "of those, sent with other options within 24 h",
    "malformed_lines": "malformed ledger lines (skipped)",
}


def _ledger(summary):
    ledger = summary.get("ledger")
    where = summary.get("ledger_output")
    if not isinstance(ledger, dict) and not where:
        body = '<p class="empty">No ledger for this run.</p>'
    else:
        pairs = [("where", where or "—")]
        for key, value in _dict(ledger).items():
            pairs.append((_LEDGER_LABELS.get(key, key.replace("_", " ")), _text(value)))
        body = _facts_list(pairs)
    outputs = [(name, summary.get(key)) for key, name in (("dead_letter_output", "dead letters"),
                                                           ("dry_run_output", "dry-run requests"))
               if summary.get(key)]
    if outputs:
        body += "<h3>Outputs</h3>" + _facts_list(outputs)
    return f'<section class="card" id="ledger"><h2>Ledger</h2>{body}</section>'


_NOT_SENT = '<span class="muted">—</span>'


def _mapping(report, summary):
    mapping = _dict(report.get("mapping"))
    delivery = _dict(summary.get("delivery"))
    name = mapping.get("name") or delivery.get("mapping")
    left_out = _dict(mapping.get("left_out"))
    current = _dict(mapping.get("current_sends"))
    parts = [f'<p>Mapping in use: <code id="mapping-name">{_esc(name or "unknown")}</code></p>']
    if left_out:
        items = sorted(left_out.items(), key=lambda item: (-(item[1] if _is_number(item[1]) else 0), str(item[0])))
        shown, rest = _rows_capped(items)
        rows = "".join(f"<tr><td>{_esc(event_type)}</td><td>{_esc(_num(count))}</td>"
                       f"<td>{_esc(current[event_type]) if event_type in current else _NOT_SENT}"
                       "</td></tr>" for event_type, count in shown)
        if rest:
            rows += f'<tr><td class="muted">… and {len(rest):,} more</td><td></td><td></td></tr>'
        parts.append('<h3>Event types read that this mapping does not send</h3><div class="scroll">'
                     '<table id="left-out-table"><thead><tr><th>event type</th><th>events</th>'
                     "<th>--mapping current sends it as</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table></div>")
        more = sum(count for event_type, count in left_out.items() if event_type in current and _is_number(count))
        if current and more:
            types = sum(1 for event_type in left_out if event_type in current)
            parts.append(f'<p class="hint" id="mapping-hint">Run with <code>--mapping current</code> to send '
                         f"<b>{_esc(_num(more))}</b> more events of these types ({types:,} "
                         f"type{'s' if types != 1 else ''}).</p>")
    elif "left_out" in mapping:
        parts.append('<p class="muted">The mapping sends every event type read.</p>')
    options = {key: value for key, value in delivery.items() if key != "mapping"}
    if options:
        rows = "".join(f"<tr><td>{_esc(key.replace('_', ' '))}</td><td>{_esc(_text(value))}</td></tr>"
                       for key, value in options.items())
        parts.append(f'<details><summary>Delivery options</summary><div class="scroll"><table>{rows}</table></div>'
                     "</details>")
    return f'<section class="card" id="mapping"><h2>Mapping</h2>{"".join(parts)}</section>'


# --- the page ---------------------------------------------------------------------------------------

def render(report):
    """The report (see the module's docstring) as one self-contained HTML page (a str)."""
    report = _dict(report)
    summary = _dict(report.get("summary"))
    final = report.get("final", True) is not False
    status = _status_class(summary, final)
    title = report.get("title") or f"currents-to-segment run {summary.get('run_id') or ''}".strip()
    refresh = report.get("refresh_seconds")
    meta_refresh = ""
    if not final and _is_number(refresh) and refresh > 0:
        meta_refresh = f'<meta http-equiv="refresh" content="{int(math.ceil(refresh))}">'
    body = [
        _header(report, summary, status),
        _totals(summary),
        _timeline(report, summary),
        _event_types(summary),
        _segment_events(summary),
        _mapping(report, summary),  # full width: its event types and Segment events are long names
        _failures(summary, report.get("samples")),
        '<div class="grid wide-first">' + _latency(summary) + _event_time(summary) + _ledger(summary) + "</div>",
    ]
    footer = (f"<footer>currents-to-segment · {'final report' if final else 'running: this page is refreshed'} · "
              f"{_esc(_when(report.get('generated_at')))}</footer>")
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"{meta_refresh}<title>{_esc(title)}</title><style>{_CSS}</style></head>"
            f'<body class="{status}"><main>{"".join(body)}{footer}</main></body></html>\n')
