"""The labeler job (kubernetes_pod_label): a thread of its own that makes the agent's pod carry
`<key>=writer` while the store says its node holds the lease, and `<key>=standby` otherwise.

It only reads the store (the /writer answer of its node, at read time) and publishes what it
did back to it for /status and /metrics; the lease never reads the label. So the API being
slow or down delays nothing but this thread, and never makes /writer 200 (pod_label.py says
the order of the calls; docs/architecture.md, "The role on the pod", why).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from . import pod_label
from .config import Settings
from .kube_api import ApiError, PodApi, PodTarget, pod_target
from .pod_label import Label, PodLabelState
from .store import VerdictStore

log = logging.getLogger("galera_health")

# How often the job compares the lease with the label: the label follows a lost lease within
# this (plus one API call); a poll of the store costs microseconds.
TICK_SECONDS = 0.05


class PodLabeler:
    def __init__(
        self,
        node: str,
        key: str,
        target: PodTarget,
        store: VerdictStore,
        api: PodApi | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.key = key
        self.target = target
        self.store = store
        self.api = api if api is not None else PodApi(target)
        self._clock = clock
        self.state = PodLabelState(target.pod, target.namespace, key, pod_label.STANDBY)
        self._own_due = 0.0
        self._sweep_due = 0.0
        self._retry_at = 0.0
        self._failed_for: Label | None = None  # the wanted value of the last failed call
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-labeler", daemon=True)
        store.publish_pod_label(node, self.state)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self.api.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug here must not end the thread silently
                log.exception("%s: pod labeler failed", self.node, extra={"node": self.node})
            self._stop.wait(TICK_SECONDS)

    def _wanted(self) -> Label:
        return pod_label.wanted(self.store.writer_view(self.node).writer)

    def _set(self, state: PodLabelState) -> None:
        before = self.state
        self.state = state
        self.store.publish_pod_label(self.node, state)
        self._log(before, state)

    def run_once(self) -> None:
        """One round: sweep other pods (a writer) and/or write the own label, as pod_label.plan
        says; the wanted value is read again right before each write."""
        now = self._clock()
        self._set(pod_label.track(self.state, self._wanted(), now))
        todo = pod_label.plan(
            self.state, now, self._own_due, self._sweep_due, self._retry_at, self._failed_for
        )
        if todo.sweep:
            self._sweep()
            # the sweep took time: write `writer` only if the lease still says so
            self._set(pod_label.track(self.state, self._wanted(), self._clock()))
        if todo.own:
            self._write_own()

    def _failed(self, exc: ApiError, own: bool) -> None:
        now = self._clock()
        self._retry_at = now + pod_label.RETRY_SECONDS
        self._failed_for = self.state.wanted
        self._set(pod_label.failed(self.state, str(exc), now, own=own))

    def _write_own(self) -> None:
        value = self.state.wanted
        try:
            self.api.set_label(self.target.pod, self.key, value)
        except ApiError as exc:
            self._failed(exc, own=True)
            return
        self._failed_for = None
        now = self._clock()
        self._own_due = now + pod_label.REFRESH_SECONDS
        self._set(pod_label.applied(self.state, value, now))

    def _sweep(self) -> None:
        """The holder: every other pod still labelled `writer` becomes `standby`."""
        try:
            others = [
                pod
                for pod in self.api.pods_with(self.key, pod_label.WRITER)
                if pod != self.target.pod
            ]
            for pod in others:
                self.api.set_label(pod, self.key, pod_label.STANDBY)
        except ApiError as exc:
            self._sweep_due = self._clock() + pod_label.RETRY_SECONDS
            self._failed(exc, own=False)
            return
        self._sweep_due = self._clock() + pod_label.SWEEP_SECONDS
        if others:
            log.warning(
                "%s: took %s=%s off pod(s) %s (this node holds the lease)",
                self.node,
                self.key,
                pod_label.WRITER,
                ", ".join(others),
                extra={"node": self.node, "event": "pod_label_sweep", "pods": others},
            )
        self._set(pod_label.swept(self.state, len(others)))

    def _log(self, before: PodLabelState, after: PodLabelState) -> None:
        """Transitions only: the label changed, or the API started or stopped failing."""
        if before.applied != after.applied and after.applied is not None:
            log.info(
                "%s: pod %s labelled %s=%s",
                self.node,
                after.pod,
                self.key,
                after.applied,
                extra={"node": self.node, "event": "pod_label", "to": after.applied},
            )
        if (before.error is None) != (after.error is None):
            if after.error is not None:
                log.warning(
                    "%s: cannot label pod %s: %s (retrying every %g s; /writer is unaffected)",
                    self.node,
                    after.pod,
                    after.error,
                    pod_label.RETRY_SECONDS,
                    extra={"node": self.node, "event": "pod_label_error"},
                )
            else:
                log.info(
                    "%s: the Kubernetes API answers again",
                    self.node,
                    extra={"node": self.node, "event": "pod_label_error"},
                )


def labeler_for(settings: Settings, store: VerdictStore, env: Mapping[str, str]) -> PodLabeler:
    """The labeler of an agent with kubernetes_pod_label (one node: config.check_pod_label);
    a ConfigError when the in-cluster environment is incomplete."""
    target = pod_target(settings, env)
    return PodLabeler(settings.nodes[0].name, settings.kubernetes_pod_label, target, store)
