"""Where a sensor channel's messages stand in their sequence, judged so that no message can make the gateway deaf.

A sensor numbers its messages per channel with ``(boot, seq)``: both unsigned 32-bit counters that wrap
(``docs/protocol.md``). They are compared with serial-number arithmetic (RFC 1982): ``b`` is ahead of ``a`` when
``(b - a) mod 2**32`` is below ``2**31``. On a single MQTT topic messages arrive in order, so ordering is here
for three things only: dropping the duplicates QoS 1 may deliver, telling a stale replay from news, and noticing a
counter that jumped. None of them may cost a real reading:

- the **mark** (the last key in sequence) only moves forward, by a small step (at most :data:`SEQ_WINDOW`
  messages, or up to :data:`BOOT_WINDOW` boots to a key that counts from 0 again). A key far from the mark
  never becomes the mark on its own: one wild counter cannot make every real message after it look old;
- a far jump **ahead** is remembered as a candidate; the next message that continues it resynchronises (a
  firmware whose counter really jumped is followed after one message);
- the last :data:`RECENT` keys are remembered with their content, so a replay of one is a duplicate and a second,
  different message under such a key is a conflict, not news. A key remembered only as doubtful (taken without
  becoming the mark) is no proof of anything: when the same message comes again it is placed afresh, so a stray
  message that guessed the sensor's next key cannot make the real one look like a replay.

What numbers cannot do: tell the real sensor from a second sender that counts consistently (a forged message
in the window ahead of the mark, or two forged messages that continue each other). Keeping other clients off a
sensor's topics is the broker ACL's job. A stray message that used up keys ahead of the real sensor delays
its closings (refused as doubtful) until the sensor's count passes it: loud, never silent.

The monitor decides what a doubtful reading may still do (an opening is taken anyway: fail toward the alarm).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Hashable

SERIAL_BITS = 32
SERIAL_MODULUS = 1 << SERIAL_BITS
SERIAL_MAX = SERIAL_MODULUS - 1
"""The largest ``boot`` and ``seq``: 4294967295, after which they wrap to 0."""
_HALF = 1 << (SERIAL_BITS - 1)

SEQ_WINDOW = 256
"""How far ahead of the mark (in messages of one boot) a key still counts as the next in order."""
BOOT_WINDOW = 16
"""How many boots ahead of the mark a key (with a seq of at most SEQ_WINDOW) still counts as in sequence."""
RECENT = SEQ_WINDOW
"""How many keys per channel are remembered with their content (duplicates and conflicts)."""

SeqKey = tuple[int, int]
"""(boot, seq)."""


def serial_distance(a: int, b: int) -> int:
    """How far ``b`` is ahead of ``a`` (negative: behind), in 32-bit serial-number arithmetic.

    The result lies in ``[-2**31, 2**31)``; exactly half the circle away counts as behind (RFC 1982 leaves it
    undefined; behind is the cautious side here, since a key behind the mark is never taken as news on its own).
    """
    d = (b - a) % SERIAL_MODULUS
    return d - SERIAL_MODULUS if d >= _HALF else d


class Place(enum.Enum):
    """Where a key lies relative to a reference key."""

    SAME = "same"
    AHEAD = "ahead"
    """Within the window ahead: the next in sequence, perhaps after a few lost messages."""
    BEHIND = "behind"
    """Within the window behind."""
    FAR_AHEAD = "far_ahead"
    FAR_BEHIND = "far_behind"


def place(reference: SeqKey, key: SeqKey) -> Place:
    boots = serial_distance(reference[0], key[0])
    if boots == 0:
        d = serial_distance(reference[1], key[1])
        if d == 0:
            return Place.SAME
        if 0 < d <= SEQ_WINDOW:
            return Place.AHEAD
        if -SEQ_WINDOW <= d < 0:
            return Place.BEHIND
        return Place.FAR_AHEAD if d > 0 else Place.FAR_BEHIND
    if 0 < boots <= BOOT_WINDOW and key[1] <= SEQ_WINDOW:
        return Place.AHEAD  # a later boot starts its own count from 0
    # An earlier boot is never just behind: winding the mark back across a boot would let any seq of the boot
    # after it pass as "a new boot" again.
    return Place.FAR_AHEAD if boots > 0 else Place.FAR_BEHIND


class Verdict(enum.Enum):
    """What to make of one message, by its key alone."""

    ACCEPT = "accept"
    """The first of a sequence, or the next in order: news; it becomes the mark."""
    DUPLICATE = "duplicate"
    """This very message (same key, same content) was seen already."""
    RESYNC = "resync"
    """Continues a far jump seen just before: the counter really jumped. News; the new mark."""
    DOUBT = "doubt"
    """Far from the mark, or a different message under a key already seen. The mark stays."""


class SequenceTracker:
    """The sequence state of one channel (latch or telemetry) of one sensor."""

    __slots__ = ("_candidate", "_recent", "announced_boot", "mark")

    def __init__(self) -> None:
        self.mark: SeqKey | None = None
        self.announced_boot: int | None = None
        """The boot of the sensor's last live ``online``: its first message of that boot may start afresh."""
        self._candidate: SeqKey | None = None
        self._recent: OrderedDict[SeqKey, tuple[Hashable, bool]] = OrderedDict()
        """key -> (what it said, whether it was only doubtful), for the last RECENT keys."""

    def judge(self, key: SeqKey, content: Hashable) -> Verdict:
        """Place one message; a far jump ahead is remembered as the candidate for a resync."""
        seen = self._recent.get(key)
        if seen is not None:
            said, doubtful = seen
            if said != content:
                return Verdict.DOUBT
            if not doubtful:
                return Verdict.DUPLICATE
            # The same message under a key taken only in doubt: perhaps the real sensor's, which a stray message
            # guessed before it; placed like news (a replay that is still far from the mark stays doubtful).
        mark = self.mark
        if mark is None or (self.announced_boot == key[0] != mark[0] and key[1] == 0):
            return Verdict.ACCEPT
        where = place(mark, key)
        if where is Place.AHEAD:
            return Verdict.ACCEPT
        candidate = self._candidate
        if candidate is not None and place(candidate, key) is Place.AHEAD:
            return Verdict.RESYNC
        if where is Place.FAR_AHEAD:
            self._candidate = key
        return Verdict.DOUBT

    def commit(self, key: SeqKey, content: Hashable) -> None:
        """Make ``key`` the mark (after ACCEPT or RESYNC)."""
        self.mark = key
        self._candidate = None
        if self.announced_boot == key[0]:
            self.announced_boot = None
            if key[1] == 0:
                # The sensor said it starts this boot now: what was seen under it before is another life's (or
                # a stray sender's guess) and must not make its coming messages look like replays.
                for old in [k for k in self._recent if k[0] == key[0]]:
                    del self._recent[old]
        self.remember(key, content)

    def remember(self, key: SeqKey, content: Hashable, *, doubtful: bool = False) -> None:
        """Keep a key with what it said, so that a replay of it is a duplicate; ``doubtful``: a message taken
        without becoming the mark (a doubtful opening), whose key proves nothing, so its repeat is placed
        afresh (see :meth:`judge`) and a different message under it is a conflict."""
        recent = self._recent
        recent[key] = (content, doubtful)
        recent.move_to_end(key)
        while len(recent) > RECENT:
            recent.popitem(last=False)

    def announce(self, boot: int) -> None:
        """The sensor has just connected and says it runs ``boot``: the first message of that boot (``seq`` 0) may
        start a new sequence (a swapped unit, a reset counter, a second simulator). Later messages of that boot, and
        messages of other boots, are still judged against the mark and the recent keys."""
        if self.mark is None or boot != self.mark[0]:
            self.announced_boot = boot
