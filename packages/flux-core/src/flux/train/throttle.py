"""`throttle`: call a function at most once per time window (for training callbacks)."""
from __future__ import annotations

import threading
import time

__all__ = ["throttle"]


def throttle(f, seconds: float, leading: bool = True, trailing: bool = False):
    """Return a function that calls `f` at most once every `seconds`, as Flux's `throttle`.

    The first call in a quiet period runs `f` at once when `leading` (otherwise it is kept
    and run when the window ends). Calls inside the window are dropped, or, when `trailing`,
    the last of them runs when the window ends. The throttled function returns the most recent
    result of `f`.

    >>> calls = []
    >>> log = throttle(calls.append, 60)
    >>> log(1); log(2); calls
    [1]
    """
    lock = threading.Lock()
    state = {"cooling": False, "later": None, "result": None}

    def run_later():
        while True:
            time.sleep(seconds)
            with lock:
                later, state["later"] = state["later"], None
                if later is None:
                    state["cooling"] = False
                    return
            result = later()
            with lock:
                state["result"] = result

    def throttled(*args, **kwargs):
        with lock:
            if not state["cooling"]:
                state["cooling"] = True
                call_now = leading
                if not leading:
                    state["later"] = lambda: f(*args, **kwargs)
                threading.Thread(target=run_later, daemon=True).start()
            else:
                call_now = False
                if trailing:
                    state["later"] = lambda: f(*args, **kwargs)
        if call_now:
            result = f(*args, **kwargs)
            with lock:
                state["result"] = result
        return state["result"]

    throttled.__wrapped__ = f
    return throttled
