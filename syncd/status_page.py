"""The status page (``GET /``): every source of the database, for a person.

Plain server-rendered HTML with inline CSS and inline SVG: no script, no
external asset (the daemon also sends a Content-Security-Policy that forbids
both), readable at 1280 px as a table and at 390 px as one card per source.
Every text that comes from the database (source names, kinds, errors,
pause reasons and who paused) is escaped here, in :func:`_t`, and nowhere
else. A pure function of an :class:`~syncd.db.overview.Overview`: the clock
and the database are the caller's.
"""

from __future__ import annotations

import html
from datetime import datetime

from syncd.db.overview import BackfillProgress, Overview, SourceOverview

STATE_TEXT = {"ok": "ok", "failing": "failing", "paused": "paused", "never_run": "never run"}
REFRESH_S = 60
CHART_W, CHART_H, BAR_W = 240, 36, 10

CSS = """
:root{--ok:#1a7f37;--failing:#cf222e;--paused:#9a6700;--never_run:#6e7781;
--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--bar:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header,main{max-width:1400px;margin:0 auto;padding:12px 16px}
h1{font-size:20px;margin:8px 0 4px}
h2{font-size:16px;margin:24px 0 8px}
.summary{color:var(--muted);margin:0}
.summary b{color:var(--fg)}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;vertical-align:top;padding:8px 10px;border-bottom:1px solid var(--line)}
th{font-size:12px;color:var(--muted);font-weight:600;white-space:nowrap}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.name{font-weight:600;overflow-wrap:break-word;word-break:normal}
.kind,.note,.when{color:var(--muted);font-size:12px}
td .kind{display:block}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;
font-weight:600;white-space:nowrap}
.state-ok .badge{background:var(--ok)}
.state-failing .badge{background:var(--failing)}
.state-paused .badge{background:var(--paused)}
.state-never_run .badge{background:var(--never_run)}
.error{max-width:420px;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:12px}
svg.chart{display:block;width:100%;max-width:240px;height:36px}
svg.chart path{fill:var(--bar)}
svg.chart line{stroke:var(--line)}
.bar{height:8px;background:var(--line);border-radius:4px;overflow:hidden;max-width:240px}
.bar span{display:block;height:100%;background:var(--bar)}
@media (max-width:760px){
 thead{display:none}
 table,tbody,tr,td{display:block;width:100%}
 tr{border:1px solid var(--line);border-radius:6px;margin:0 0 12px;padding:4px 0}
 td{border:0;padding:4px 12px;display:flex;gap:12px;justify-content:flex-start}
 td .kind{display:inline;margin-left:6px}
 td.num{text-align:left}
 td::before{content:attr(data-label);color:var(--muted);font-size:12px;flex:0 0 96px}
 td>div,td>span.cell{flex:1 1 auto;min-width:0}
 .error{max-width:none}
}
"""


def _t(value: object) -> str:
    """Text from the database or the config, escaped for HTML content and attributes."""
    return html.escape(str(value), quote=True)


def ago(seconds: float | None) -> str:
    """A short duration for a person: 45s, 12m, 3.5h, 2.0d."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _since(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else (now - then).total_seconds()


def _stamp(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def bar_heights(counts: tuple[int, ...]) -> list[float]:
    """Each hour's bar height: scaled to the busiest hour; a quiet hour is at least
    1 unit tall so that it shows, an empty one is flat."""
    peak = max(counts, default=0)
    return [0.0 if c == 0 else max(1.0, (CHART_H - 2) * c / peak) for c in counts]


def chart(counts: tuple[int, ...], hours: tuple[datetime, ...]) -> str:
    """Events per hour as bars: one ``<path>`` (small at 1,000 sources), the counts
    in its title and its accessible label."""
    base = CHART_H - 1
    bars = "".join(
        f"M{i * BAR_W + 1} {base - h:.1f}h{BAR_W - 2}V{base}h-{BAR_W - 2}Z"
        for i, h in enumerate(bar_heights(counts))
        if h > 0
    )
    label = (
        f"events per hour, {hours[0]:%H}:00 to {hours[-1]:%H}:59 UTC: {sum(counts)} in all, "
        f"at most {max(counts, default=0)} in an hour"
    )
    listing = " ".join(str(c) for c in counts)
    return (
        f'<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" preserveAspectRatio="none" '
        f'role="img" aria-label="{label}"><title>{label}; oldest first: {listing}</title>'
        f'<line x1="0" y1="{CHART_H - 0.5}" x2="{CHART_W}" y2="{CHART_H - 0.5}"/>'
        f'<path d="{bars}"/></svg>'
    )


def _state_cell(s: SourceOverview, now: datetime) -> str:
    parts = [f'<span class="badge">{STATE_TEXT[s.state]}</span>']
    if s.state == "paused":
        who = f" by {_t(s.paused_by)}" if s.paused_by else ""
        parts.append(f'<div class="note">since {ago(_since(now, s.paused_at))}{who}</div>')
        if s.paused_reason:
            parts.append(f'<div class="note reason">{_t(s.paused_reason)}</div>')
    for load in s.backfills:
        parts.append(f'<div class="note">backfilling {load.share_done:.0%}</div>')
    return f'<td data-label="State"><div>{"".join(parts)}</div></td>'


def _error_cell(s: SourceOverview, now: datetime) -> str:
    if not s.last_error:
        return '<td data-label="Last error"><span class="cell note">-</span></td>'
    when = ago(_since(now, s.last_error_at))
    streak = (
        f", {s.consecutive_failures} failure{'s' if s.consecutive_failures != 1 else ''} in a row"
        if s.consecutive_failures
        else ""
    )
    return (
        f'<td data-label="Last error"><div><div class="error">{_t(s.last_error)}</div>'
        f'<div class="when">{when} ago{streak}</div></div></td>'
    )


def _row(s: SourceOverview, overview: Overview) -> str:
    now = overview.now
    last_success = (
        "never" if s.last_success_at is None else f"{ago(_since(now, s.last_success_at))} ago"
    )
    kind = f' <span class="kind">{_t(s.kind)}</span>' if s.kind else ""
    return (
        f'<tr id="source-{_t(s.source)}" class="source state-{s.state}" '
        f'data-source="{_t(s.source)}" data-state="{s.state}">'
        f'<td data-label="Source"><span class="cell"><span class="name">{_t(s.source)}</span>'
        f"{kind}</span></td>"
        + _state_cell(s, now)
        + f'<td data-label="Last success" class="num" title="{_stamp(s.last_success_at)}">'
        f"{last_success}</td>"
        f'<td data-label="Lag" class="num" title="newest event {_stamp(s.newest_event_at)}">'
        f"{ago(_since(now, s.newest_event_at))}</td>"
        f'<td data-label="Events / hour, 24 h"><div>{chart(s.events_last_24h, overview.hours)}'
        f'<span class="note">{sum(s.events_last_24h):,} in 24 h</span></div></td>'
        f'<td data-label="Stored" class="num">{s.events:,}'
        f'<div class="note">{s.rejected:,} rejected</div></td>' + _error_cell(s, now) + "</tr>"
    )


def _backfill_row(source: str, load: BackfillProgress) -> str:
    share = load.share_done
    return (
        f'<tr class="backfill" data-source="{_t(source)}">'
        f'<td data-label="Source"><span class="cell name">{_t(source)}</span></td>'
        f'<td data-label="Span"><span class="cell">{_stamp(load.since)} .. '
        f"{_stamp(load.until)}</span></td>"
        f'<td data-label="Windows" class="num">{load.windows_done:,} / {load.windows_total:,}'
        f'</td><td data-label="Done"><div><div class="bar" title="{share:.0%}">'
        f'<span style="width:{share * 100:.1f}%"></span></div>'
        f'<span class="note">{share:.0%}</span></div></td>'
        f'<td data-label="Events" class="num">{load.events:,}</td></tr>'
    )


def render(overview: Overview) -> str:
    """The whole page."""
    counts = dict.fromkeys(STATE_TEXT, 0)
    for s in overview.sources:
        counts[s.state] += 1
    summary = ", ".join(f"<b>{n}</b> {STATE_TEXT[state]}" for state, n in counts.items() if n)
    rows = "".join(_row(s, overview) for s in overview.sources)
    loads = [(s.source, load) for s in overview.sources for load in s.backfills]
    if overview.sources:
        sources_table = (
            '<table class="sources"><thead><tr><th>Source</th><th>State</th>'
            "<th>Last success</th><th>Lag</th><th>Events per hour, last 24 h</th>"
            f"<th>Stored</th><th>Last error</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        sources_table = '<p class="note">No source has run yet and none is configured.</p>'
    backfills = ""
    if loads:
        backfills = (
            '<h2>Backfills in progress</h2><table class="backfills"><thead><tr><th>Source</th>'
            "<th>Span</th><th>Windows</th><th>Done</th><th>Events</th></tr></thead><tbody>"
            + "".join(_backfill_row(source, load) for source, load in loads)
            + "</tbody></table>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no /favicon.ico request
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        f"<title>syncd status</title><style>{CSS}</style></head><body>"
        f'<header><h1>syncd status</h1><p class="summary">{len(overview.sources)} sources'
        f"{': ' + summary if summary else ''} &middot; {_stamp(overview.now)} &middot; "
        'lag: time since the newest stored event &middot; JSON: <a href="/api/v1/sources">'
        "/api/v1/sources</a></p></header>"
        f"<main>{sources_table}{backfills}</main></body></html>"
    )
