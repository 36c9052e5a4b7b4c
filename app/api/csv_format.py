"""Spreadsheet answers: a list or analytics route answers text/csv when asked with
?format=csv or an Accept header naming text/csv (JSON stays the contract)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import Response

TableFormat = Literal["json", "csv"]
PageFormat = Annotated[
    TableFormat | None, Query(description="csv: this page as a spreadsheet (or Accept: text/csv)")
]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "?format=csv or Accept: text/csv"}
}


def wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    return "text/csv" in request.headers.get("accept", "")


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def csv_response(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> Response:
    """The rows as CSV with a header; nested values as JSON text."""
    rows = list(rows)
    header = columns or (list(rows[0]) if rows else [])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in header})
    return Response(out.getvalue(), media_type="text/csv")
