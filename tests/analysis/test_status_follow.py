"""``--status`` shows ``--follow``'s last actions, from the campaign journal, under its table."""

from __future__ import annotations

from protbench_nrp import status
from protbench_nrp.follow import Journal
from protbench_nrp.store import LocalStore

from .test_status import all_jobs, make_config


def test_status_shows_the_journals_last_actions_under_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no kubectl: results only
    root = tmp_path / "results"
    config = make_config(root)
    jobs = all_jobs(config)
    assert status.show_status(jobs, config) == 0
    assert "--follow" not in capsys.readouterr().out  # no journal, no lines

    journal = Journal(root / config.campaign.follow_journal, config.campaign.follow_journal, LocalStore(root),
                      echo=lambda *args, **kwargs: None)
    for job in jobs[:7]:
        journal.record("submit", job.name, "its inputs are in the results (attempt 1 of 4)", attempt=1)
    journal.record("relaunch", jobs[0].name, "its Job failed (backoffLimit (10) reached) (attempt 2 of 4)")
    assert status.show_status(jobs, config) == 0
    out = capsys.readouterr().out
    table_end = out.index(jobs[-1].name)
    header = out.index(f"Last actions of --follow ({root / config.campaign.follow_journal}):")
    assert header > table_end
    shown = [line.strip() for line in out[header:].splitlines()[1:] if line.strip()]
    assert len(shown) == status.FOLLOW_ACTIONS_SHOWN
    assert [line.split()[1:3] for line in shown] == (
        [["submit", f"{job.name}:"] for job in jobs[3:7]] + [["relaunch", f"{jobs[0].name}:"]])
    assert shown[-1].endswith("its Job failed (backoffLimit (10) reached) (attempt 2 of 4)")  # brackets as written

    # a follower SIGKILLed while writing leaves a cut line: said, not a traceback
    with open(root / config.campaign.follow_journal, "a") as cut:
        cut.write('{"time": "2026-01-01T00:00:00+0000", "act')
    assert status.show_status(jobs, config) == 0
    out = capsys.readouterr().out
    assert "an unreadable line: '{\"time\": \"2026-01-01T00:00:00+0000\", \"act'" in out
