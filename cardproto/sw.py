"""Status words: what each one means and what a station must do about it.

The table merges ISO 7816-4, GlobalPlatform Card Specification 2.3 (chapter
11 responses), seed 002's station table, and the DESFire native status codes
(sent as SW1=0x91, SW2=code in ISO wrapping).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    PROCEED = "proceed"
    HALT_REVIEW = "halt: wrong key or MAC, flag the card for review"
    HALT_BUG = "halt: the command is malformed (a bug in the script or the CMS)"
    HALT_WRONG_APP = "halt: wrong application selected or not supported"
    HALT_DEFECTIVE = "halt: the card is defective"
    HALT_STATE = "halt: the card is not in the state this step needs"
    HALT_LOCKED = "halt: the card or key is blocked"
    CONTINUE = "continue: more data follows"
    ANALYZE = "analyze: retry counter decremented"
    HALT = "halt"


@dataclass(frozen=True)
class SwInfo:
    sw: int
    meaning: str
    action: Action


_ISO_GP: dict[int, tuple[str, Action]] = {
    0x9000: ("Success", Action.PROCEED),
    0x6200: ("Warning: state of non-volatile memory unchanged", Action.HALT),
    0x6283: ("Warning: selected file or application locked", Action.HALT_LOCKED),
    0x6310: ("Warning: more data available (GET STATUS)", Action.CONTINUE),
    0x6400: ("Execution error: state of non-volatile memory unchanged", Action.HALT),
    0x6581: ("Memory failure", Action.HALT_DEFECTIVE),
    0x6700: ("Wrong length", Action.HALT_BUG),
    0x6881: ("Logical channel not supported", Action.HALT_BUG),
    0x6882: ("Secure messaging not supported", Action.HALT_BUG),
    0x6883: ("Last command of the chain expected", Action.HALT_BUG),
    0x6884: ("Command chaining not supported", Action.HALT_BUG),
    0x6982: ("Security status not satisfied", Action.HALT_REVIEW),
    0x6983: ("Authentication method blocked", Action.HALT_LOCKED),
    0x6984: ("Referenced data invalidated", Action.HALT_STATE),
    0x6985: ("Conditions of use not satisfied", Action.HALT_STATE),
    0x6986: ("Command not allowed (no current EF)", Action.HALT_STATE),
    0x6988: ("Incorrect secure messaging data objects", Action.HALT_REVIEW),
    0x6A80: ("Incorrect values in command data", Action.HALT_BUG),
    0x6A81: ("Function not supported", Action.HALT_WRONG_APP),
    0x6A82: ("Application or file not found", Action.HALT_WRONG_APP),
    0x6A84: ("Not enough memory space", Action.HALT_DEFECTIVE),
    0x6A86: ("Incorrect P1/P2", Action.HALT_BUG),
    0x6A88: ("Referenced data not found", Action.HALT_BUG),
    0x6A83: ("Record not found", Action.HALT_BUG),
    0x6A85: ("Lc inconsistent with TLV structure", Action.HALT_BUG),
    0x6A87: ("Lc inconsistent with P1-P2", Action.HALT_BUG),
    0x6A89: ("File or application already exists", Action.HALT_STATE),
    0x6A8A: ("DF name already exists", Action.HALT_STATE),
    0x6981: ("Command incompatible with file structure", Action.HALT_BUG),
    0x6987: ("Expected secure messaging data objects missing", Action.HALT_REVIEW),
    0x6B00: ("Wrong parameters P1/P2", Action.HALT_BUG),
    0x6D00: ("Instruction not supported", Action.HALT_WRONG_APP),
    0x6E00: ("Class not supported", Action.HALT_WRONG_APP),
    0x6F00: ("No precise diagnosis", Action.HALT),
    0x6999: ("Applet selection failed", Action.HALT_WRONG_APP),
    0x9484: ("Algorithm not supported", Action.HALT_BUG),
    0x9485: ("Invalid key check value", Action.HALT_REVIEW),
}

# DESFire native status codes (SW1 = 0x91). NXP MF3ICD81 data sheet, section 9.
_DESFIRE: dict[int, tuple[str, Action]] = {
    0x00: ("DESFire: operation OK", Action.PROCEED),
    0x0C: ("DESFire: no changes done to backup files", Action.PROCEED),
    0x0E: ("DESFire: insufficient NV memory to complete command", Action.HALT_DEFECTIVE),
    0x1C: ("DESFire: command code not supported", Action.HALT_WRONG_APP),
    0x1E: ("DESFire: CRC or MAC does not match data; padding bytes not valid", Action.HALT_REVIEW),
    0x40: ("DESFire: invalid key number specified", Action.HALT_BUG),
    0x7E: ("DESFire: length of command string invalid", Action.HALT_BUG),
    0x9D: ("DESFire: current configuration or status does not allow the command", Action.HALT_STATE),
    0x9E: ("DESFire: value of the parameter(s) invalid", Action.HALT_BUG),
    0xA0: ("DESFire: requested AID not present on PICC", Action.HALT_WRONG_APP),
    0xA1: ("DESFire: unrecoverable error within application, application will be disabled",
           Action.HALT_DEFECTIVE),
    0xAE: ("DESFire: current authentication status does not allow the command", Action.HALT_REVIEW),
    0xAF: ("DESFire: additional frame expected", Action.CONTINUE),
    0xBE: ("DESFire: attempt to read/write beyond the file's or record's limits", Action.HALT_BUG),
    0xC1: ("DESFire: unrecoverable error within PICC, PICC will be disabled", Action.HALT_DEFECTIVE),
    0xCA: ("DESFire: previous command was not fully completed", Action.HALT_STATE),
    0xCD: ("DESFire: PICC was disabled by an unrecoverable error", Action.HALT_DEFECTIVE),
    0xCE: ("DESFire: number of applications limited to 28", Action.HALT_STATE),
    0xDE: ("DESFire: file or application with that number already exists", Action.HALT_STATE),
    0xEE: ("DESFire: could not complete NV-write operation due to loss of power", Action.HALT_DEFECTIVE),
    0xF0: ("DESFire: specified file number does not exist", Action.HALT_BUG),
    0xF1: ("DESFire: unrecoverable error within file, file will be disabled", Action.HALT_DEFECTIVE),
}


def describe(sw: int) -> SwInfo:
    """Meaning and action for any status word; unknown words are still described."""
    if sw in _ISO_GP:
        meaning, action = _ISO_GP[sw]
        return SwInfo(sw, meaning, action)
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x91:
        meaning, action = _DESFIRE.get(sw2, (f"DESFire: unknown status code {sw2:02X}", Action.HALT))
        return SwInfo(sw, meaning, action)
    if sw1 == 0x61:
        return SwInfo(sw, f"{sw2} more response bytes available (GET RESPONSE)", Action.CONTINUE)
    if sw1 == 0x6C:
        return SwInfo(sw, f"Wrong Le: exact length is {sw2}", Action.HALT_BUG)
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        left = sw2 & 0x0F
        if left == 0:
            return SwInfo(sw, "Verification failed, no retries left: permanently locked", Action.HALT_LOCKED)
        return SwInfo(sw, f"Verification failed, {left} retries left", Action.ANALYZE)
    return SwInfo(sw, f"Unknown status word {sw:04X}", Action.HALT)
