"""The store's schema: numbered migrations, registered by decorator and applied in order, once, by
every store. Column types are written ``$id`` (an auto-numbered primary key) and ``$real`` (a
float), filled in by the store's ``Dialect`` (``_dialect.py``)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["MIGRATIONS", "migration"]

MIGRATIONS: list[tuple[int, str]] = []


def migration(version: int) -> Callable[[Callable[[], str]], Callable[[], str]]:
    """Register a numbered migration (its function returns the SQL). Applied in order, once."""
    def register(fn: Callable[[], str]) -> Callable[[], str]:
        MIGRATIONS.append((version, fn()))
        MIGRATIONS.sort()
        return fn
    return register


@migration(1)
def _m1() -> str:
    return """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL, started_at $real NOT NULL,
        finished_at $real, input TEXT, output TEXT, tags TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE calls (
        id $id, run_id TEXT, model TEXT NOT NULL, started_at $real NOT NULL, latency_s $real NOT NULL,
        ok INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd $real NOT NULL,
        error_type TEXT, retries INTEGER NOT NULL, fallback TEXT, stream INTEGER NOT NULL
    );
    CREATE INDEX calls_run ON calls(run_id);
    CREATE INDEX calls_model_time ON calls(model, started_at);
    CREATE TABLE decisions (
        id $id, run_id TEXT, router TEXT NOT NULL, route TEXT, chosen TEXT, confidence $real NOT NULL,
        outcome TEXT NOT NULL, kind TEXT NOT NULL, stage TEXT, reason TEXT NOT NULL, latency_s $real NOT NULL,
        at $real NOT NULL, input TEXT, scores TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX decisions_run ON decisions(run_id);
    CREATE INDEX decisions_router_time ON decisions(router, at);
    """


@migration(2)
def _m2() -> str:
    return """
    CREATE TABLE feedback (
        id $id, run_id TEXT NOT NULL, at $real NOT NULL, score $real, labels TEXT NOT NULL DEFAULT '{}',
        comment TEXT
    );
    CREATE INDEX feedback_run ON feedback(run_id);
    """


@migration(3)
def _m3() -> str:
    return """
    CREATE TABLE experiment_outcomes (
        id $id, experiment TEXT NOT NULL, variant TEXT NOT NULL, unit TEXT, run_id TEXT, at $real NOT NULL,
        cost_usd $real NOT NULL, latency_s $real NOT NULL, error INTEGER NOT NULL, correct INTEGER, score $real
    );
    CREATE INDEX experiment_outcomes_name ON experiment_outcomes(experiment, variant);
    """


@migration(4)
def _m4() -> str:
    return """
    CREATE TABLE verdicts (
        id $id, run_id TEXT, name TEXT NOT NULL, at $real NOT NULL, answer TEXT, outcome TEXT NOT NULL,
        agreement $real NOT NULL, samples_used INTEGER NOT NULL, samples_planned INTEGER NOT NULL, abstained INTEGER NOT NULL,
        counts TEXT NOT NULL DEFAULT '{}', cost_usd $real NOT NULL
    );
    CREATE INDEX verdicts_name_time ON verdicts(name, at);
    """


@migration(5)
def _m5() -> str:
    return """
    CREATE TABLE steps (
        id $id, run_id TEXT, name TEXT NOT NULL, kind TEXT NOT NULL, at $real NOT NULL, latency_s $real NOT NULL,
        status TEXT NOT NULL, cost_usd $real NOT NULL, detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX steps_run ON steps(run_id);
    CREATE TABLE sections (
        id $id, run_id TEXT, step TEXT NOT NULL, idx INTEGER NOT NULL, title TEXT, status TEXT NOT NULL,
        error TEXT, cost_usd $real NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, latency_s $real NOT NULL,
        at $real NOT NULL
    );
    CREATE INDEX sections_run ON sections(run_id);
    """


@migration(6)
def _m6() -> str:
    return """
    CREATE TABLE batches (
        batch_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, source TEXT NOT NULL, created_at $real NOT NULL, total INTEGER NOT NULL
    );
    CREATE TABLE batch_items (
        batch_id TEXT NOT NULL, item_key TEXT NOT NULL, line INTEGER NOT NULL, status TEXT NOT NULL, run_id TEXT, output TEXT,
        error TEXT, cost_usd $real NOT NULL, latency_s $real NOT NULL, attempts INTEGER NOT NULL, updated_at $real NOT NULL,
        PRIMARY KEY (batch_id, item_key)
    );
    """


@migration(7)
def _m7() -> str:
    return """
    CREATE TABLE audit (
        id $id, run_id TEXT, at $real NOT NULL, model TEXT NOT NULL, action TEXT NOT NULL, data_classes TEXT NOT NULL,
        digest TEXT NOT NULL, reason TEXT NOT NULL
    );
    CREATE INDEX audit_run ON audit(run_id);
    CREATE INDEX audit_model_time ON audit(model, at)
    """


@migration(8)
def _m8() -> str:
    return """
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE, models TEXT NOT NULL, workflows TEXT NOT NULL,
        rpm $real, tpm $real, budget_usd $real, period TEXT, team TEXT, created_at $real NOT NULL, revoked_at $real
    )
    """


@migration(9)
def _m9() -> str:
    # a batch's lease: the one runner (host, pid) working on it now, and when it last said so
    return """
    ALTER TABLE batches ADD COLUMN owner TEXT;
    ALTER TABLE batches ADD COLUMN owner_host TEXT;
    ALTER TABLE batches ADD COLUMN owner_pid INTEGER;
    ALTER TABLE batches ADD COLUMN heartbeat $real
    """


@migration(10)
def _m10() -> str:
    return "CREATE INDEX verdicts_run ON verdicts(run_id)"  # a run's page reads its verdicts by id


@migration(11)
def _m11() -> str:
    return "ALTER TABLE calls ADD COLUMN tools TEXT"  # the tools the answer called, comma-separated (names, never arguments)


@migration(12)
def _m12() -> str:
    # people in the loop: the escalation queue, the runs waiting on it (their state, to resume from the
    # step that asked), and the refits a router had (so reports compare escalation rates before/after)
    return """
    CREATE TABLE escalations (
        item_id TEXT PRIMARY KEY, queue TEXT NOT NULL, run_id TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL,
        input TEXT, context TEXT NOT NULL, choices TEXT NOT NULL, status TEXT NOT NULL, created_at $real NOT NULL, team TEXT,
        workflow TEXT, router TEXT, claimed_by TEXT, claim_until $real, resolved_by TEXT, resolved_at $real, resolution TEXT,
        expires_at $real
    );
    CREATE INDEX escalations_queue ON escalations(queue, status, created_at);
    CREATE INDEX escalations_run ON escalations(run_id);
    CREATE TABLE suspended_runs (
        run_id TEXT PRIMARY KEY, item_id TEXT NOT NULL, workflow TEXT NOT NULL, path TEXT, version TEXT NOT NULL,
        state TEXT NOT NULL, created_at $real NOT NULL, resume_until $real
    );
    CREATE TABLE router_fits (
        id $id, router TEXT NOT NULL, at $real NOT NULL, source TEXT NOT NULL, examples INTEGER NOT NULL, detail TEXT NOT NULL
    )
    """


@migration(13)
def _m13() -> str:
    # the response cache: a call answered from it is a row with cached = 1, cost 0 and the cost it saved;
    # the cache's own entries when it is kept in the store (ns: the model and caller partition); a key's
    # cache opt-in (JSON: ttl, semantic, sampled)
    return """
    ALTER TABLE calls ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN saved_usd $real NOT NULL DEFAULT 0;
    CREATE TABLE response_cache (
        ns TEXT NOT NULL, key TEXT NOT NULL, entry TEXT NOT NULL, created_at $real NOT NULL, expires_at $real NOT NULL,
        PRIMARY KEY (ns, key)
    );
    CREATE INDEX response_cache_expiry ON response_cache(expires_at);
    ALTER TABLE api_keys ADD COLUMN cache TEXT
    """


@migration(14)
def _m14() -> str:
    # the dashboard at scale (store/_rollups.py): hourly totals of calls and decisions, kept by the writer
    # and built here from the rows already stored; time indexes for windows, the runs list and search
    return """
    CREATE TABLE call_rollups (
        model TEXT NOT NULL, slot $real NOT NULL, calls INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
        cost_usd $real NOT NULL, errors INTEGER NOT NULL, cancelled INTEGER NOT NULL, retries INTEGER NOT NULL, fallbacks INTEGER NOT NULL,
        cached INTEGER NOT NULL, saved_usd $real NOT NULL, PRIMARY KEY (model, slot)
    );
    CREATE TABLE call_latency (model TEXT NOT NULL, slot $real NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
                               PRIMARY KEY (model, slot, bucket));
    CREATE TABLE decision_rollups (
        router TEXT NOT NULL, route TEXT NOT NULL, outcome TEXT NOT NULL, slot $real NOT NULL, n INTEGER NOT NULL, conf_sum $real NOT NULL,
        low INTEGER NOT NULL, PRIMARY KEY (router, route, outcome, slot)
    );
    CREATE TABLE decision_hist (router TEXT NOT NULL, route TEXT NOT NULL, slot $real NOT NULL, kind TEXT NOT NULL, bucket INTEGER NOT NULL,
                                n INTEGER NOT NULL, PRIMARY KEY (router, route, slot, kind, bucket));
    CREATE INDEX call_rollups_slot ON call_rollups(slot);
    CREATE INDEX call_latency_slot ON call_latency(slot);
    CREATE INDEX decision_rollups_slot ON decision_rollups(slot);
    CREATE INDEX decision_hist_slot ON decision_hist(slot);
    CREATE INDEX calls_time ON calls(started_at);
    CREATE INDEX decisions_time ON decisions(at);
    CREATE INDEX verdicts_time ON verdicts(at);
    CREATE INDEX runs_time ON runs(started_at);
    CREATE INDEX runs_workflow_time ON runs(workflow, started_at);
    CREATE INDEX runs_status_time ON runs(status, started_at);
    INSERT INTO call_rollups (model, slot, calls, input_tokens, output_tokens, cost_usd, errors, cancelled, retries, fallbacks, cached,
                              saved_usd)
        SELECT model, $slot_of_started, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd),
               SUM(CASE WHEN ok = 0 AND COALESCE(error_type, '') <> 'CancelledError' THEN 1 ELSE 0 END),
               SUM(CASE WHEN error_type = 'CancelledError' THEN 1 ELSE 0 END), SUM(retries),
               SUM(CASE WHEN fallback IS NULL THEN 0 ELSE 1 END), SUM(cached), SUM(saved_usd)
        FROM calls GROUP BY model, $slot_of_started;
    INSERT INTO call_latency (model, slot, bucket, n)
        SELECT model, $slot_of_started, $bucket_of_latency, COUNT(*) FROM calls GROUP BY model, $slot_of_started, $bucket_of_latency;
    INSERT INTO decision_rollups (router, route, outcome, slot, n, conf_sum, low)
        SELECT router, COALESCE(route, ''), outcome, $slot_of_at, COUNT(*), SUM(confidence),
               SUM(CASE WHEN confidence < 0.5 THEN 1 ELSE 0 END)
        FROM decisions GROUP BY router, COALESCE(route, ''), outcome, $slot_of_at;
    INSERT INTO decision_hist (router, route, slot, kind, bucket, n)
        SELECT router, COALESCE(route, ''), $slot_of_at, 'conf', $bucket_of_confidence, COUNT(*)
        FROM decisions GROUP BY router, COALESCE(route, ''), $slot_of_at, $bucket_of_confidence;
    INSERT INTO decision_hist (router, route, slot, kind, bucket, n)
        SELECT router, COALESCE(route, ''), $slot_of_at, 'lat', $bucket_of_latency, COUNT(*)
        FROM decisions GROUP BY router, COALESCE(route, ''), $slot_of_at, $bucket_of_latency
    """


RUN_KEYS_FROM_TAGS = "UPDATE runs SET key_id = $tag_key, team = $tag_team WHERE tags <> '{}'"  # migration 15's backfill


@migration(15)
def _m15() -> str:
    # the runs' key and team as columns (from their tags), indexed with time: the dashboard's and
    # `turnout logs`' filters, the keys page and a key's spend read an index, not every run's JSON;
    # decisions by route and time: the runs search's route filter
    return f"""
    ALTER TABLE runs ADD COLUMN key_id TEXT;
    ALTER TABLE runs ADD COLUMN team TEXT;
    {RUN_KEYS_FROM_TAGS};
    CREATE INDEX runs_key_time ON runs(key_id, started_at);
    CREATE INDEX runs_team_time ON runs(team, started_at);
    CREATE INDEX decisions_route_time ON decisions(route, at)
    """


@migration(16)
def _m16() -> str:
    # hourly spend per gateway key and team (store/_rollups.py key_rollups), kept by the writer; built
    # here from the calls already stored
    return """
    CREATE TABLE key_rollups (
        key_id TEXT NOT NULL, team TEXT NOT NULL, slot $real NOT NULL, calls INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL, cost_usd $real NOT NULL, PRIMARY KEY (key_id, team, slot)
    );
    CREATE INDEX key_rollups_team ON key_rollups(team, slot);
    INSERT INTO key_rollups (key_id, team, slot, calls, input_tokens, output_tokens, cost_usd)
        SELECT r.key_id, COALESCE(r.team, ''), $slot_of_call, COUNT(*), SUM(c.input_tokens),
               SUM(c.output_tokens), SUM(c.cost_usd)
        FROM calls c JOIN runs r ON r.run_id = c.run_id WHERE r.key_id IS NOT NULL
        GROUP BY r.key_id, COALESCE(r.team, ''), $slot_of_call
    """
