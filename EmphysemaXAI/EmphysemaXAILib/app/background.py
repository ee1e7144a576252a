"""One analysis in a worker thread, for a GUI that polls it (the Slicer module's panel).

The GUI thread reads the inputs from the scene, starts a :class:`BackgroundAnalysis`, and on a
timer drains :meth:`~BackgroundAnalysis.progress` and checks :attr:`~BackgroundAnalysis.running`;
when the worker is done it turns :attr:`~BackgroundAnalysis.result` into scene nodes itself (MRML
is touched on the GUI thread only). :meth:`~BackgroundAnalysis.cancel` is honoured before the
next step of :func:`~EmphysemaXAILib.pipeline.analyze_case`.
"""
from __future__ import annotations

import queue
import threading

from ..pipeline import Cancelled, CaseResult, analyze_case


class BackgroundAnalysis:
    """``analyze_case(ct, options, lung_mask=...)`` on a daemon thread.

    Attributes:
        result: the CaseResult when the run finished, else None.
        error: the exception that ended the run (a :class:`Cancelled` after :meth:`cancel`), else None.
    """

    def __init__(self, ct, options=None, lung_mask=None):
        self.result: CaseResult | None = None
        self.error: Exception | None = None
        self._messages: queue.Queue = queue.Queue()
        self._cancel = False
        self._thread = threading.Thread(target=self._work, args=(ct, options, lung_mask), daemon=True)

    def start(self) -> "BackgroundAnalysis":
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop before the next step (the current one runs to its end)."""
        self._cancel = True

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, Cancelled)

    def progress(self) -> list[tuple[float, str]]:
        """The (fraction 0..1, message) pairs queued since the last call."""
        out = []
        while True:
            try:
                out.append(self._messages.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self, ct, options, lung_mask) -> None:
        try:
            self.result = analyze_case(ct, options, lung_mask=lung_mask,
                                       progress=lambda step, fraction, message: self._messages.put((fraction, message)),
                                       cancel=lambda: self._cancel)
        except Exception as error:  # noqa: BLE001 - handed to the GUI thread, which shows it
            self.error = error
