"""What a prediction request for one flight carries: its schedule, known before departure."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Request(BaseModel):
    """One scheduled flight from New York."""

    model_config = ConfigDict(extra="forbid")

    carrier: str = Field(pattern=r"^[A-Z0-9]{2}$", description="Two-letter airline code")
    flight: int = Field(ge=1, le=9999, description="Flight number")
    origin: str = Field(pattern=r"^[A-Z]{3}$", description="Departure airport (FAA code)")
    dest: str = Field(pattern=r"^[A-Z]{3}$", description="Destination airport (FAA code)")
    distance: float = Field(gt=0, le=6000, description="Route distance in miles")
    tailnum: str | None = Field(default=None, max_length=8, description="Aircraft tail number")
    time_hour: datetime = Field(description="Scheduled departure hour; naive times are UTC")
