"""FindMe: attendees find the event photos they appear in."""

__version__ = "0.1.0"
