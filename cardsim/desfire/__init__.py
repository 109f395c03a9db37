"""Virtual MIFARE DESFire EV1/EV2/EV3 card (card side only; independent of `cardproto`)."""
from .card import DESFireCard

__all__ = ["DESFireCard"]
