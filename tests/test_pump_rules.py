"""The pump's answer rules, as a Hypothesis state machine on the inproc emulator: random
interleavings of sends, taking batches, reply (whole batch or masked), release, a raising
handler, stop and deadline expiry. Invariant: every message the pump received is answered
exactly once, with the right reply: the handler's verdict where it gave one in time,
default_reply otherwise; the pump's counters agree with what the senders got."""
import itertools
import struct
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import fastport
from fastport import status
from fastport.pump import Pump
from fastport.sim import FilterManager
from pumpkit import DEFAULT, MSG, REP, expected
from waiting import wait_for

_names = itertools.count()

# what the model knows of a message's answer
VERDICT, DEFAULT_REPLY, EITHER, DEFAULT_OR_GONE = "verdict", "default", "either", "default/gone"


class Raised(Exception):
    pass


class PumpRules(RuleBasedStateMachine):
    @initialize(deadline=st.sampled_from([None, None, 0.05]))
    def start(self, deadline):
        self.deadline = deadline
        self.fm = FilterManager("inproc")
        name = f"\\Rules{next(_names)}"
        self.server = self.fm.create_port(name)
        self.port = fastport.connect(name)
        self.client = self.server.clients[0]
        self.pump = Pump(self.port, message=MSG, reply=REP, threads=1, outstanding=2, batch=4,
                         deadline=deadline, default_reply=DEFAULT, reply_threads=0)
        self.pump.start()
        self.senders = []
        self.results = {}   # seq -> SendResult
        self.answer = {}    # seq -> what the model expects (None: not answered yet)
        self.untaken = set()
        self.held = []      # [(batch, seqs)]
        self.stopped = False

    # -- the kernel side --
    @precondition(lambda self: not self.stopped and len(self.answer) < 24)
    @rule(n=st.integers(1, 4))
    def send(self, n):
        for _ in range(n):
            seq = len(self.answer)
            self.answer[seq] = None
            self.untaken.add(seq)
            payload = struct.pack("<II", 0, seq) + bytes(MSG.itemsize - 8)
            t = threading.Thread(target=self._send, args=(seq, payload))
            t.start()
            self.senders.append(t)

    def _send(self, seq, payload):
        self.results[seq] = self.server.send(self.client, payload, reply_length=REP.itemsize,
                                             timeout=60)

    # -- the consumer --
    # Threads decide how messages fall into batches, so what the rules draw and whether they
    # may run depend only on the model's own state (drawn from fixed ranges, preconditions on
    # what the rules did): Hypothesis needs the same draws for the same choices. A rule with
    # nothing to act on does nothing.
    @precondition(lambda self: not self.stopped)
    @rule()
    def take(self):
        if not self.untaken or len(self.held) >= 2:
            return
        if self.deadline is None:
            b = self.pump._next(timeout=20)
            assert b is not None, "a message sent was not handed out"
        else:  # every message sent is received at once (a deadline never stops receiving),
            # but the deadline may have answered them already and freed their slots
            wait_for(lambda: self.pump.stats["received"] == len(self.answer),
                     "the pump to receive every message sent")
            b = self.pump._try_next()
            if b is None:
                return
        seqs = [int(s) for s in b.messages["seq"]]
        assert set(seqs) <= self.untaken
        self.untaken -= set(seqs)
        b.replies["a"] = 1  # the verdicts (sender 0): expected(0, seq)
        b.replies["b"] = b.messages["seq"] ^ 0x5A5A5A5A
        self.held.append((b, seqs))

    def _pick(self, which):
        """A held batch (taking one first when none is held and one can be); (None, None) if
        there is none."""
        if not self.held and not self.stopped:
            self.take()
        return self.held[which % len(self.held)] if self.held else (None, None)

    @rule(which=st.integers(0, 1))
    def reply_all(self, which):
        b, seqs = self._pick(which)
        if b is not None:
            self._replied(seqs, [True] * len(seqs), b.reply())

    @rule(which=st.integers(0, 1), mask=st.lists(st.booleans(), min_size=4, max_size=4))
    def reply_masked(self, which, mask):
        b, seqs = self._pick(which)
        if b is not None:
            mask = mask[:len(seqs)]
            self._replied(seqs, mask, b.reply(np.array(mask)))

    def _replied(self, seqs, mask, sent):
        fresh = [s for s, m in zip(seqs, mask) if m and self.answer[s] is None]
        if sent == len(fresh):
            for s in fresh:
                self.answer[s] = VERDICT
        else:  # the deadline answered some of them first (which: not said)
            assert self.deadline is not None and sent < len(fresh)
            for s in fresh:
                self.answer[s] = EITHER

    def _defaulted(self, seqs):
        for s in seqs:
            if self.answer[s] is None:
                self.answer[s] = DEFAULT_REPLY

    @rule(which=st.integers(0, 1))
    def release(self, which):
        b, seqs = self._pick(which)
        if b is None:
            return
        b.release()
        self._defaulted(seqs)
        self.held.remove((b, seqs))

    @rule(which=st.integers(0, 1))
    def handler_raises(self, which):
        b, seqs = self._pick(which)
        if b is None:
            return
        with pytest.raises(Raised):
            with b:  # what run() does around a handler that raises
                raise Raised()
        self._defaulted(seqs)
        self.held.remove((b, seqs))

    @precondition(lambda self: self.deadline is not None)
    @rule()
    def deadline_expires(self):
        s = self.pump.stats
        wait_for(lambda: (lambda s: s["received"] == s["replied"] + s["defaulted"])(
            self.pump.stats), "the deadline to answer every received message")
        for _, seqs in self.held:
            self._defaulted(seqs)
        assert s["late_replies"] == 0

    @precondition(lambda self: not self.stopped)
    @rule()
    def stop(self):
        self.pump.stop()
        self.stopped = True
        for _, seqs in self.held:
            self._defaulted(seqs)
        for s in self.untaken:  # received by the pump (defaulted at stop), or never
            self.answer[s] = DEFAULT_OR_GONE

    @rule()
    def look(self):  # always possible (after a stop, say): nothing answered twice meanwhile
        s = self.pump.stats
        assert s["received"] >= s["replied"] + s["defaulted"]

    @invariant()
    def counters_add_up(self):
        if hasattr(self, "pump"):
            s = self.pump.stats
            assert s["errors"] == 0 and s["late_replies"] == 0 and s["reply_failed"] == 0

    def teardown(self):
        if not hasattr(self, "pump"):
            return
        for b, seqs in self.held:
            b.release()
            self._defaulted(seqs)
        self.held = []
        if self.stopped:
            pass
        elif self.deadline is None:  # every message sent is taken and answered
            while self.untaken:
                b = self.pump._next(timeout=20)
                assert b is not None
                seqs = [int(s) for s in b.messages["seq"]]
                self.untaken -= set(seqs)
                b.release()
                self._defaulted(seqs)
                del b
        else:  # the pump receives every message, and C answers those nobody took
            for t in self.senders:
                t.join(30)
                assert not t.is_alive()
            self._defaulted(self.untaken)
        self.pump.stop()
        self.port.close()  # sends the pump never received end (only after a stop rule)
        for t in self.senders:
            t.join()
        stats = self.pump.stats
        self.fm.close()
        self.check(stats)

    def check(self, stats):
        verdicts = defaults = 0
        for seq, want in self.answer.items():
            r = self.results[seq]
            if want == DEFAULT_OR_GONE and r.status == status.STATUS_PORT_DISCONNECTED:
                continue
            assert r.status == status.STATUS_SUCCESS, (seq, want, r)
            got = VERDICT if r.reply == expected(0, seq) else DEFAULT_REPLY \
                if r.reply == DEFAULT else None
            assert got is not None, (seq, r)
            if want in (VERDICT, DEFAULT_REPLY):
                assert got == want, (seq, want, r)
            verdicts += got == VERDICT
            defaults += got == DEFAULT_REPLY
        # exactly once: the kernel saw one answer per message, as many as the pump counted
        assert stats["replied"] == verdicts
        assert stats["defaulted"] == defaults
        assert stats["received"] == verdicts + defaults
        assert stats["late_replies"] == 0 and stats["errors"] == 0


# Bounded: a fixed (derandomized) set of examples, no example database, and no shrinking (a
# failure is reported as found: shrinking a threaded machine can take minutes).
PumpRules.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.too_slow])
test_pump_answer_rules = PumpRules.TestCase
