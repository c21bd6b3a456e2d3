"""Airflow 2 DAG: send one UTC day of Braze Currents to Segment per DAG run, with backfill.

Usage
-----
1. Install the job where the Airflow workers run it (`pip install 'braze-currents-to-segment[gcp]'`,
   or `[aws]`/`[azure]` for those buckets), so that the `currents-to-segment` command works in a task's shell.
2. Store the Segment write key in the Airflow Variable `segment_write_key` (or in a secrets backend
   that serves it as that Variable). Add `segment_write_key` to `[core] sensitive_var_conn_names`
   (AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES) so that Airflow masks it in logs and in the rendered
   template view: its name contains none of the words Airflow masks by default.
3. Copy this file into the DAGs folder and set BUCKET below (or the `bucket` param).

What each run does
------------------
The run for logical date `ds` reads the hour partitions Braze queued in [ds, next_ds) under the
Currents root and sends them. `catchup=True` makes the scheduler create a run for every day since
`start_date`, oldest first; a backfill of chosen days is
`airflow dags backfill -s 2024-03-01 -e 2024-03-31 currents_to_segment`.
`max_active_runs=1` keeps days from running at the same time (see "Overlapping runs" in
examples/README.md).

- `--ledger`: a retried or cleared day sends only the files not handled yet.
- `--dead_letter_output` and `--summary_output` are per day, next to each other in the bucket.
- `--fail_on_dead_letters`: the job exits 2 when anything was dead-lettered or unreadable, so the task
  fails (red in the UI) and is retried; the dead letters of that day are under its folder, and
  `currents-to-segment replay-dead-letters DIR` resends them once the cause is fixed.
- The write key reaches the job through the environment (`SEGMENT_WRITE_KEY`), never the command line.

Days older than Segment's deduplication window
----------------------------------------------
Segment deduplicates `messageId`s for about 24 hours only. When a day's interval ended more than 24
hours before the task runs (a catch-up or backfill run), its events may already have been sent once
(by Braze's own connector or an earlier run), and sending them again would duplicate them in every
destination except warehouses, which dedupe on the message id. For those runs the template adds
`--integrations '{"All": false}'` so that only warehouses receive them. If the old days were never
sent to Segment (first deployment of this DAG with a past `start_date`, nothing forwarding Currents
before), set the param `all_destinations` to True so that they reach every destination.
"""
import datetime

from airflow import DAG
from airflow.operators.bash import BashOperator

BUCKET = "gs://my-bucket"

# One shell command, rendered by Airflow's Jinja for each run ({{ ds }} = the day, {{ next_ds }} = the
# day after, exclusive). A plain string literal: nothing is computed when the DAG file is parsed.
COMMAND = (
    "currents-to-segment --runner=FnApiRunner"
    " --currents_root {{ params.bucket }}/currents"
    " --start {{ ds }} --end {{ next_ds }}"
    " --ledger {{ params.bucket }}/segment-ledger"
    " --dead_letter_output {{ params.bucket }}/segment-dead-letters/{{ ds }}"
    " --summary_output {{ params.bucket }}/segment-runs/{{ ds }}.json"
    " --fail_on_dead_letters"
    # Warehouse-only when the day ended more than 24 h before this run (see the module docstring).
    "{% if not params.all_destinations"
    " and data_interval_end < macros.datetime.now(data_interval_end.tzinfo) - macros.timedelta(hours=24) %}"
    " --integrations '{\"All\": false}'"
    "{% endif %}"
)

with DAG(
    dag_id="currents_to_segment",
    description="Braze Currents to Segment, one UTC day per run",
    # Daily at 01:30 UTC: the run for day D starts on D+1 at 01:30, once Braze has written the files of
    # D's last hour; ds is still D and next_ds D+1.
    schedule="30 1 * * *",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=True,
    max_active_runs=1,  # one day at a time: overlapping runs would both send the files they share
    params={"bucket": BUCKET, "all_destinations": False},
    default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=15)},
    tags=["segment", "braze"],
) as dag:
    BashOperator(
        task_id="send_day",
        bash_command=COMMAND,
        env={"SEGMENT_WRITE_KEY": "{{ var.value.segment_write_key }}"},
        append_env=True,  # keep PATH and the rest of the worker's environment
    )
