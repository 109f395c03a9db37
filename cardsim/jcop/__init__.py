"""Virtual NXP JCOP 4 card: a GlobalPlatform ISD with SCP03/SCP02, card side only (no `cardproto`)."""
from .card import JCOP4Card

__all__ = ["JCOP4Card"]
