"""What a prediction request for one flight carries: its schedule, known before departure.

Constraints the flights ingestion schema puts on the same columns (carrier and airport
codes, the three New York origins, positive numbers, UTC timestamps) are added from it by
``Problem.request_model``; only bounds that schema lacks are written here.
"""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Request(BaseModel):
    """One scheduled flight from New York."""

    model_config = ConfigDict(extra="forbid")

    carrier: str = Field(description="Two-letter airline code")
    flight: int = Field(ge=1, le=9999, description="Flight number")
    origin: str = Field(description="Departure airport (FAA code): EWR, JFK or LGA")
    dest: str = Field(description="Destination airport (FAA code)")
    distance: float = Field(gt=0, le=6000, description="Route distance in miles")
    tailnum: str | None = Field(default=None, max_length=8, description="Aircraft tail number")
    time_hour: datetime = Field(
        description="Scheduled departure hour with its UTC offset, e.g. 2013-01-28T15:00:00Z"
    )
