"""tap-doorflow: a Singer tap for the DoorFlow list endpoint, built with the Meltano Singer SDK.

The benchmark's Singer contender (``bench/compare.py``): ``tap_doorflow.py --config
tap.json | target-postgres --config target.json``. Written the way the SDK's
docs recommend for a REST API: one ``RESTStream`` with an incremental
``replication_key``, the ``primary_keys`` a target dedups on, a JSON schema of
the reference flavor's event fields, the SDK's bearer-token authenticator and
its page-number paginator. It runs in its own virtual environment
(``bench/.venv-singer``, see ``bench/singer/setup``): it imports nothing of
syncd.

Config: ``api_url`` (the simulator's base URL), ``token``, ``start_date``,
``event_codes`` (comma-separated: every code the list accepts), ``page_size``.
"""

from __future__ import annotations

from typing import Any

import requests
from singer_sdk import RESTStream, Tap
from singer_sdk import typing as th
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.pagination import PageNumberPaginator


class DoorFlowPaginator(PageNumberPaginator):
    """Page numbers from 1; the reference flavor's total is in the ``Total`` header."""

    def __init__(self, page_size: int) -> None:
        super().__init__(start_value=1)
        self.page_size = page_size

    def has_more(self, response: requests.Response) -> bool:
        # ``current_value`` is the page just fetched: stop without asking for an
        # empty page once it covered the total.
        return int(response.headers["Total"]) > self.current_value * self.page_size


class EventsStream(RESTStream[int]):
    """``GET /api/3/events``, oldest first (``sort=ASC``), ``n`` events a page."""

    name = "events"
    path = "/api/3/events"
    primary_keys = ("id",)
    replication_key = "created_at"
    # Ascending by time, but ``created_at`` carries the door's UTC offset
    # (Berlin ends ``+01:00``), and the SDK compares bookmarks as strings: not
    # declared sorted, so the SDK keeps the largest value it saw instead of
    # checking the order.
    is_sorted = False
    records_jsonpath = "$[*]"  # the reference flavor: a bare JSON array

    schema = th.PropertiesList(
        th.Property("id", th.IntegerType, required=True),
        th.Property("event_id", th.IntegerType),
        th.Property("event_code", th.IntegerType),
        th.Property("event_label", th.StringType),
        th.Property("door_controller_id", th.IntegerType),
        th.Property("door_controller_name", th.StringType),
        th.Property("channel_id", th.IntegerType),
        th.Property("channel_name", th.StringType),
        th.Property("person_id", th.IntegerType),
        th.Property("person_name", th.StringType),
        th.Property("credentials_number", th.StringType),
        th.Property("created_at", th.DateTimeType, required=True),
        th.Property("updated_at", th.DateTimeType),
    ).to_dict()

    @property
    def url_base(self) -> str:
        return str(self.config["api_url"])

    @property
    def authenticator(self) -> BearerTokenAuthenticator:
        return BearerTokenAuthenticator(token=self.config["token"])

    def get_new_paginator(self) -> DoorFlowPaginator:
        return DoorFlowPaginator(int(self.config["page_size"]))

    def get_url_params(self, context: dict | None, next_page_token: int | None) -> dict[str, Any]:
        return {
            "since": self.get_starting_replication_key_value(context),
            "sort": "ASC",
            "n": self.config["page_size"],
            "page": next_page_token or 1,
            "event_codes": self.config["event_codes"],
        }


class TapDoorFlow(Tap):
    name = "tap-doorflow"
    config_jsonschema = th.PropertiesList(
        th.Property("api_url", th.StringType, required=True),
        th.Property("token", th.StringType, required=True, secret=True),
        th.Property("start_date", th.DateTimeType, required=True),
        th.Property("event_codes", th.StringType, required=True),
        th.Property("page_size", th.IntegerType, default=1000),
    ).to_dict()

    def discover_streams(self) -> list[EventsStream]:
        return [EventsStream(self)]


if __name__ == "__main__":
    TapDoorFlow.cli()
