"""``syncd simulate doorflow|intserv``: run one simulator in the foreground."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

import click

from syncd.simulators.data import DOORFLOW_LISTABLE_CODES
from syncd.simulators.doorflow import DoorFlowSimulator
from syncd.simulators.faults import ALL_KINDS, MALFORMED_KINDS, Faults, kind_indexes
from syncd.simulators.intserv import DEFAULT_SYSTEMS, IntServSimulator

_DOORFLOW_ONLY = (
    "flavor",
    "order",
    "late_share",
    "late_delay",
    "name_update_share",
    "name_update_delay",
    "token_expiry",
    "oauth_scope",
    "unlist",
    "token",
    "webhook_url",
    "webhook_secret",
    "webhook_interval",
)
_INTSERV_ONLY = (
    "continuation_ttl",
    "offline",
    "systems",
    "expired_key_status",
    "current_least_sync_time",
)

_share = click.FloatRange(0.0, 1.0)
_positive = click.FloatRange(min=0.0)


@click.command("simulate", context_settings={"show_default": True, "max_content_width": 100})
@click.argument("vendor", type=click.Choice(["doorflow", "intserv"]))
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--seed", default=1, type=int, help="Same seed, same data and credentials.")
@click.option("--events", default=10_000, type=click.IntRange(min=0), help="History size.")
@click.option("--history-days", default=30.0, type=_positive, help="History spans this many days.")
@click.option("--rate", default=0.0, type=_positive, help="New events per second, in real time.")
@click.option("--doors", type=click.IntRange(min=1), help="Doors (IntServ: per system). [20 / 6]")
@click.option("--people", default=200, type=click.IntRange(min=1))
@click.option(
    "--flavor",
    type=click.Choice(["reference", "guide"]),
    default="reference",
    help="DoorFlow: bare array + Total header, or {events, pagination}.",
)
@click.option("--rate-limit", default=0.0, type=_share, help="Share of requests answered 429.")
@click.option(
    "--retry-after-in",
    type=click.Choice(["header", "body", "both"]),
    default="header",
    help="Where a 429 carries its wait: Retry-After header or body retry_in.",
)
@click.option("--retry-after", default=1.0, type=_positive, help="The 429 wait, seconds.")
@click.option("--server-errors", default=0.0, type=_share, help="Share answered 500/503.")
@click.option("--drop", default=0.0, type=_share, help="Share of connections closed unanswered.")
@click.option("--latency", default=0.0, type=_positive, help="Added to every request, ms.")
@click.option("--malformed", default=0.0, type=_share, help="Share of records served broken.")
@click.option(
    "--malformed-kinds",
    default=",".join(MALFORMED_KINDS),
    help=f"Which breakages --malformed serves, comma-separated, of: {', '.join(ALL_KINDS)}.",
)
@click.option(
    "--late-share",
    default=0.0,
    type=_share,
    help="DoorFlow: share of events arriving late, with old created_at.",
)
@click.option("--late-delay", default=3600.0, type=_positive, help="DoorFlow: how late, s.")
@click.option(
    "--name-update-share",
    default=0.05,
    type=_share,
    help="DoorFlow: share of person events whose name is filled in later.",
)
@click.option(
    "--name-update-delay",
    default=300.0,
    type=_positive,
    help="DoorFlow: seconds until the name is corrected.",
)
@click.option(
    "--ties",
    default=0,
    type=click.IntRange(min=0),
    help="Events sharing one timestamp, per tie group (> page size to hurt).",
)
@click.option("--tie-groups", default=3, type=click.IntRange(min=0), help="Groups of --ties.")
@click.option(
    "--token-expiry",
    default=3600.0,
    type=_positive,
    help="DoorFlow: OAuth access token lifetime, s.",
)
@click.option(
    "--oauth-scope",
    default="account.event.access.readonly",
    help="DoorFlow: the scopes (space-separated) an OAuth grant has.",
)
@click.option(
    "--date-skew",
    default=0.0,
    type=float,
    help="Seconds added to the Date header (a vendor whose clock is off).",
)
@click.option(
    "--order",
    default="created",
    type=click.Choice(["created", "id"]),
    help="DoorFlow: what sort=ASC/DESC orders by (id: late uploads come last).",
)
@click.option(
    "--unlist",
    default="",
    metavar="CODES",
    help="DoorFlow: comma-separated codes the list refuses (400) besides 50-63.",
)
@click.option(
    "--continuation-ttl",
    default=300.0,
    type=_positive,
    help="IntServ: continuation key lifetime, s.",
)
@click.option(
    "--expired-key-status",
    default=400,
    type=click.Choice(["400", "403", "404", "410", "500", "503"]),
    help="IntServ: the status an expired continuation key gets (every time it is sent).",
)
@click.option(
    "--current-least-sync-time",
    is_flag=True,
    help="IntServ: each page reports least_sync_time now, not the pass minimum.",
)
@click.option(
    "--offline",
    multiple=True,
    metavar="SYSTEM[=SECONDS]",
    help="IntServ: start SYSTEM offline (back after SECONDS if given). Repeatable.",
)
@click.option("--systems", default=",".join(DEFAULT_SYSTEMS), help="IntServ: system ids.")
@click.option("--token", help="DoorFlow: static bearer token (default: derived from --seed).")
@click.option("--api-key", help="API key: DoorFlow Basic key:X, IntServ bearer. [from --seed]")
@click.option("--webhook-url", help="DoorFlow: POST signed notifications here.")
@click.option("--webhook-secret", help="DoorFlow: HMAC secret for the Signature header.")
@click.option(
    "--webhook-interval",
    default=5.0,
    type=_positive,
    help="DoorFlow: re-send unacknowledged notifications this often, s.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request to stderr.")
@click.pass_context
def simulate(ctx: click.Context, /, vendor: str, **options: Any) -> None:
    """Serve a fake VENDOR API (doorflow or intserv) on loopback until Ctrl-C."""
    _reject_foreign_options(ctx, vendor)
    try:
        faults = Faults(
            rate_limit=options["rate_limit"],
            retry_after_in=options["retry_after_in"],
            retry_after=options["retry_after"],
            server_errors=options["server_errors"],
            drop=options["drop"],
            latency=options["latency"] / 1000.0,
        )
        kinds = [k.strip() for k in options["malformed_kinds"].split(",") if k.strip()]
        kind_indexes(kinds)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    common: dict[str, Any] = {
        "seed": options["seed"],
        "history": options["events"],
        "history_days": options["history_days"],
        "people": options["people"],
        "faults": faults,
        "malformed_share": options["malformed"],
        "malformed_kinds": kinds,
        "tie_groups": options["tie_groups"] if options["ties"] else 0,
        "tie_size": options["ties"],
        "rate": options["rate"],
        "api_key": options["api_key"],
        "host": options["host"],
        "port": options["port"],
        "verbose": options["verbose"],
    }
    comebacks: list[tuple[float, str]] = []
    sim: DoorFlowSimulator | IntServSimulator
    if vendor == "doorflow":
        unlisted = _codes(options["unlist"])
        sim = DoorFlowSimulator(
            **common,
            doors=options["doors"] or 20,
            flavor=options["flavor"],
            order=options["order"],
            late_share=options["late_share"],
            late_delay=options["late_delay"],
            name_update_share=options["name_update_share"],
            name_update_delay=options["name_update_delay"],
            token_expiry=options["token_expiry"],
            oauth_scope=options["oauth_scope"],
            listable_codes=DOORFLOW_LISTABLE_CODES - unlisted,
            token=options["token"],
            webhook_url=options["webhook_url"],
            webhook_secret=options["webhook_secret"],
            webhook_interval=options["webhook_interval"],
        )
    else:
        systems = tuple(s.strip() for s in options["systems"].split(",") if s.strip())
        offline = []
        for spec in options["offline"]:
            system, _, seconds = spec.partition("=")
            if system not in systems:
                raise click.BadParameter(f"unknown system {system!r}", param_hint="--offline")
            offline.append(system)
            if seconds:
                try:
                    comebacks.append((time.monotonic() + float(seconds), system))
                except ValueError:
                    raise click.BadParameter(
                        f"bad seconds in {spec!r}", param_hint="--offline"
                    ) from None
        sim = IntServSimulator(
            **common,
            doors=options["doors"] or 6,
            systems=systems,
            continuation_ttl=options["continuation_ttl"],
            expired_key_status=int(options["expired_key_status"]),
            report_current_least_sync_time=options["current_least_sync_time"],
            offline=offline,
        )
    sim.date_skew = options["date_skew"]
    _run(sim, comebacks)


def _codes(spec: str) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in spec.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"not a list of integers: {spec!r}", param_hint="--unlist"
        ) from None


def _reject_foreign_options(ctx: click.Context, vendor: str) -> None:
    foreign = _INTSERV_ONLY if vendor == "doorflow" else _DOORFLOW_ONLY
    for name in foreign:
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} does not apply to {vendor}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(sim: DoorFlowSimulator | IntServSimulator, comebacks: list[tuple[float, str]]) -> None:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with sim:
            _banner(sim)
            while True:
                time.sleep(0.2)
                now = time.monotonic()
                for when, system in list(comebacks):
                    if when <= now and isinstance(sim, IntServSimulator):
                        sim.set_offline(system, False)
                        comebacks.remove((when, system))
                        click.echo(f"system {system} is back online")
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _banner(sim: DoorFlowSimulator | IntServSimulator) -> None:
    url = sim.base_url
    data = f"  data:           {sim.event_count:,} events, seed {sim.seed}"
    if sim.rate:
        data += f", {sim.rate:g} new events/s"
    if isinstance(sim, DoorFlowSimulator):
        oauth = sim.oauth
        lines = [
            f"DoorFlow simulator ({sim.flavor} flavor) listening on {url}",
            data,
            f"  bearer token:   {sim.token}",
            f"  API key:        {sim.api_key}   (HTTP Basic, password X)",
            f"  OAuth:          POST {url}/oauth/token  grant_type=refresh_token",
            f"                  GET {url}/oauth/authorize (PKCE S256; approves at once)",
            f"    client_id     {oauth.client_id}",
            f"    client_secret {oauth.client_secret}",
            f"    refresh_token {oauth.refresh_token}",
            f"  try: curl -H 'Authorization: Bearer {sim.token}' "
            f"'{url}/api/3/events?sort=ASC&n=5&event_codes=10,20,30'",
        ]
        if sim.webhook_url:
            lines.append(f"  webhooks to:    {sim.webhook_url}")
    else:
        lines = [
            f"IntServ simulator listening on {url}",
            data,
            f"  API key:        {sim.api_key}   (Authorization: Bearer)",
            f"  systems:        {', '.join(sim.systems)}"
            + (f"   offline: {', '.join(sorted(sim.offline))}" if sim.offline else ""),
            f"  try: curl -X POST -H 'Authorization: Bearer {sim.api_key}' "
            f"-H 'Content-Type: application/json' -d '{{\"limit\": 5}}' '{url}/v1/events/list'",
        ]
    lines.append("Ctrl-C to stop.")
    click.echo("\n".join(lines))
