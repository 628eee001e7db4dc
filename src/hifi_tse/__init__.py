"""hifi-tse: 48 kHz target speaker extraction toolkit (HiFi-TSE)."""

__version__ = "0.1.0"
