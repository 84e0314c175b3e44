"""What a forecast request carries: the city and the hour it is issued at.

The forecast is for ``issued_at`` plus 6 hours. The city's allowed values and the UTC
timestamp come from the forecasts ingestion schema (``Problem.request_model``).
"""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Request(BaseModel):
    """One city's temperature, 6 hours after ``issued_at``."""

    model_config = ConfigDict(extra="forbid")

    city: str = Field(description="seattle or san_francisco")
    issued_at: datetime = Field(
        description="When the forecast is asked, with its UTC offset, e.g. 2010-06-01T15:00:00Z; "
        "the answer is the temperature (F) 6 hours later"
    )
