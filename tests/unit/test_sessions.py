"""When the old writer closes its sessions: sessions.step, a pure function of the node's /writer
answers over time, the grace and now (docs/architecture.md, "Closing the old writer's
sessions")."""

from __future__ import annotations

from pathlib import Path

import pytest

from galera_health import sessions, sessions_sql
from galera_health.config import WRITER_KILL_GRACE, ConfigError, load_settings
from galera_health.sessions import KillClock, KillReport

GRACE = 6.0


def run(answers: list[tuple[float, bool | None]], grace: float = GRACE) -> list[float]:
    """The times at which a kill is due, for answers (time, /writer 200?) looked at in order."""
    clock, kills = KillClock(), []
    for now, writer in answers:
        clock, due = sessions.step(clock, writer, now, grace)
        if due:
            kills.append(now)
    return kills


def ticks(
    start: float, end: float, writer: bool | None, every: float = 0.25
) -> list[tuple[float, bool | None]]:
    n = round((end - start) / every)
    return [(start + i * every, writer) for i in range(n)]


def test_a_loss_of_the_role_kills_once_after_the_grace() -> None:
    answers = ticks(0, 10, True) + ticks(10, 30, False)
    assert run(answers) == [16.0]


def test_never_while_the_writer_nor_before_a_judged_answer() -> None:
    assert run(ticks(0, 30, True)) == []
    assert run(ticks(0, 30, None)) == []


def test_a_standby_found_at_start_kills_after_the_grace() -> None:
    """An agent (re)started beside a node that is not the writer: a pool may still sit there."""
    answers = ticks(0, 2, None) + ticks(2, 20, False)
    assert run(answers) == [8.0]
    clock, _ = sessions.step(KillClock(), False, 2.0, GRACE)
    assert not clock.lost  # logged only when it killed someone
    clock, _ = sessions.step(KillClock(writer=True), False, 2.0, GRACE)
    assert clock.lost


def test_regaining_the_role_within_the_grace_cancels_the_kill() -> None:
    answers = ticks(0, 5, True) + ticks(5, 8, False) + ticks(8, 30, True)
    assert run(answers) == []


def test_each_loss_kills_once() -> None:
    answers = ticks(0, 5, True) + ticks(5, 15, False) + ticks(15, 20, True) + ticks(20, 40, False)
    assert run(answers) == [11.0, 26.0]


def test_unknown_answers_keep_the_clock() -> None:
    """The lease job restarting (a reload) says nothing: the grace still counts from the loss."""
    answers = ticks(0, 5, True) + ticks(5, 7, False) + ticks(7, 9, None) + ticks(9, 20, False)
    assert run(answers) == [11.0]


def test_a_zero_grace_kills_at_the_first_503() -> None:
    assert run(ticks(0, 1, True) + ticks(1, 3, False), grace=0.0) == [1.0]


def test_a_failed_kill_is_retried_unless_it_lacks_a_privilege() -> None:
    clock, due = sessions.step(KillClock(writer=True), False, 0.0, 0.0)
    assert due
    retry = sessions.failed(clock, 0.0, lasting=False)
    assert sessions.step(retry, False, 0.5, 0.0) == (retry, False)
    assert sessions.step(retry, False, sessions.RETRY_SECONDS, 0.0)[1]
    lasting = sessions.failed(clock, 0.0, lasting=True)
    assert not any(sessions.step(lasting, False, t, 0.0)[1] for t in (1.0, 5.0, 100.0))


def test_the_report_counts_kills_and_failures() -> None:
    report = sessions.reported(KillReport(), 3, None, 1.0)
    report = sessions.reported(report, 0, "lacks PROCESS", 2.0)
    assert (report.killed_total, report.last_killed, report.failures_total) == (3, 0, 1)
    assert report.problem == "lacks PROCESS"
    assert sessions.reported(report, 2, None, 3.0).problem is None


def test_writer_users_settings(tmp_path: Path) -> None:
    """Client accounts only, with the election on; one line naming the mistake otherwise."""
    password = tmp_path / "pw"
    password.write_text("x")
    base = {"nodes": ["n1=127.0.0.1:3306"], "user": "mon", "writer": True}
    writer = {"writer_user": "wr", "writer_password_file": str(password)}
    settings = load_settings({**base, **writer, "writer_users": " app, reports ,"}, {})
    assert settings.writer_users == ("app", "reports")
    assert settings.writer_kill_grace == WRITER_KILL_GRACE
    assert load_settings(base, {}).writer_users == ()
    for users, message in [
        ("app,wr", "the agent's own account 'wr'"),
        ("mon", "the agent's own account 'mon'"),
        ("root", "must not name 'root'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings({**base, **writer, "writer_users": users}, {})
    with pytest.raises(ConfigError, match="writer_users needs writer = true"):
        load_settings({**base, "writer": False, "writer_users": "app"}, {})


def test_global_privileges_read_show_grants_own_and_roles_lines() -> None:
    """SHOW GRANTS as MariaDB 10.11 prints it for an account with a default role that has a
    role of its own (tests/integration/test_writer_sessions.py runs the real one)."""
    lines = [
        "GRANT `gh_killer` TO `rw`@`127.0.0.1`",
        "GRANT USAGE ON *.* TO `rw`@`127.0.0.1` IDENTIFIED BY PASSWORD '*D8218'",
        "GRANT `gh_inner` TO `gh_killer`",
        "GRANT process, CONNECTION ADMIN ON *.* TO `gh_killer`",
        "GRANT SELECT, UPDATE ON `galera_health`.* TO `rw`@`127.0.0.1`",
        "SET DEFAULT ROLE `gh_killer` FOR `rw`@`127.0.0.1`",
    ]
    assert sessions.global_privileges(lines) == {"USAGE", "PROCESS", "CONNECTION ADMIN"}
    assert sessions.global_privileges(["GRANT SUPER ON `x`.* TO `w`@`%`"]) == set()
    everything = ["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"]
    assert {"PROCESS", "CONNECTION ADMIN"} <= sessions.global_privileges(everything)


class ScriptedCursor:
    """The statements kill_sessions sends, answered as MariaDB answered them when a KILL met a
    thread Galera was aborting at that moment: accepted, not acted on (the bench saw it; a test
    cannot make the server do it on cue)."""

    def __init__(self, survivors: list[list[int]]) -> None:
        self.survivors = survivors  # what each look at the killed ones finds alive
        self.sent: list[str] = []
        self.rows: list[tuple[object, ...]] = []

    def execute(self, statement: str, params: object = None) -> None:
        self.sent.append(statement)
        if statement == "SHOW GRANTS":
            self.rows = [("GRANT PROCESS, CONNECTION ADMIN ON *.* TO `w`@`%`",)]
        elif statement.startswith("SELECT ID FROM information_schema.PROCESSLIST WHERE USER"):
            self.rows = [(11,), (12,)]
        elif "COMMAND <> 'Killed'" in statement:
            self.rows = [(i,) for i in self.survivors.pop(0)]
        else:
            self.rows = []

    def fetchall(self) -> list[tuple[object, ...]]:
        return self.rows


def test_a_kill_the_server_did_not_act_on_is_sent_again() -> None:
    cursor = ScriptedCursor(survivors=[[12], []])
    naps: list[float] = []
    assert sessions_sql.kill_sessions(cursor, ["app"], "w", sleep=naps.append) == (2, None)
    kills = [s for s in cursor.sent if s.startswith("KILL")]
    assert kills == ["KILL CONNECTION 11", "KILL CONNECTION 12", "KILL CONNECTION 12"]
    assert naps == [sessions_sql.RECHECK_SECONDS]


def test_a_session_that_outlives_every_kill_is_reported_and_tried_again_later() -> None:
    ticks = iter(float(t) for t in range(100))
    cursor = ScriptedCursor(survivors=[[12]] * 100)
    killed, problem = sessions_sql.kill_sessions(
        cursor, ["app"], "w", clock=lambda: next(ticks) * 0.5, sleep=lambda _: None
    )
    assert killed == 2 and problem is not None and "1 session(s) still alive" in problem
