"""ovsnvgre: provision Open vSwitch hosts for NVGRE overlay networks."""

__version__ = "0.1.0"
