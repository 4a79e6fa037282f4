"""How the suites wait: on observable state (a pending get, a queued send, a counter), never
for a while. The bounds only turn a hang into a failure."""
import signal
import threading
import time


def wait_for(cond, what="the condition", timeout=20.0):
    """Polls `cond()` until it is true (returns True); fails after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.001)
    return True


def interrupt_main_when(cond, give_up):
    """A thread that waits for `cond()` (observable state: the main thread's call is pending),
    then sends SIGINT to the main thread, as Ctrl-C does. If the main thread is still in its call
    long after (the bug: it cannot be interrupted), give_up() unblocks it so that the test fails
    instead of hanging (a KeyboardInterrupt raised after the call returned is no interrupted
    call). Returns the thread; call its finish() once the main thread is out of its call."""
    out = threading.Event()
    gave_up = []
    main = threading.main_thread().ident

    def run():
        while not cond():
            if out.wait(0.001):  # (the call ended before its state showed: the test fails)
                return
        signal.pthread_kill(main, signal.SIGINT)
        if not out.wait(10):
            gave_up.append(True)
            give_up()

    t = threading.Thread(target=run, daemon=True)

    def finish():
        out.set()
        t.join()
        assert not gave_up, "the call was not interrupted"

    t.finish = finish
    t.start()
    return t
