"""Path and query parameters shared by the routes: ids as the schema allows them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from ..schema import MAX_ID_LEN

_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # the same rule as schema.Id: no control characters
UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=_ID_PATTERN)]
VideoId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=_ID_PATTERN)]
CreatorId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=_ID_PATTERN)]
ExperimentId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=_ID_PATTERN)]
Code = Annotated[str | None, Query(min_length=1, max_length=32)]
