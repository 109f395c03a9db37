"""Status words: every row of seed 002's station table and the GP words the channel relies on."""
from __future__ import annotations

import pytest

from cardproto.sw import Action, describe


@pytest.mark.parametrize("sw, action", [
    # seed 002 "Error Handling (APDU Status Words)" table
    (0x9000, Action.PROCEED),
    (0x6982, Action.HALT_REVIEW),
    (0x6A86, Action.HALT_BUG),
    (0x6700, Action.HALT_BUG),
    (0x6D00, Action.HALT_WRONG_APP),
    (0x6581, Action.HALT_DEFECTIVE),
    (0x63C2, Action.ANALYZE),
    (0x63C0, Action.HALT_LOCKED),
])
def test_seed_002_table_is_covered(sw, action):
    assert describe(sw).action is action


@pytest.mark.parametrize("sw", [0x6310, 0x6A88, 0x6A80, 0x6985, 0x6A84, 0x9484, 0x9485, 0x6A87, 0x6999])
def test_gp_status_words_have_a_known_meaning(sw):
    assert not describe(sw).meaning.startswith("Unknown")


def test_unknown_status_word_is_still_described():
    assert describe(0x6F42).meaning == "Unknown status word 6F42"
