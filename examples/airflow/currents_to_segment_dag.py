"""Airflow 2 DAG: send one UTC day of Braze Currents to Segment per task run, with backfill.

Each DAG run reads the hour partitions Braze queued in [ds, next_ds). `catchup=True` makes Airflow create a run for every day since
`start_date`, so a backfill is `airflow dags backfill currents_to_segment -s 2024-03-01 -e 2024-03-31`.
The ledger makes a retried or re-run day send only the files not yet handled; `--fail_on_dead_letters`
fails the task (exit 2) when anything was dead-lettered, so it shows red and is retried.

Days that ended more than 24 hours before the run are replays Segment can no longer deduplicate: for
those the task adds `--integrations '{"All": false}'` so that only warehouses (which dedupe on the
message id) receive them. Set the DAG param `all_destinations` to true to send them everywhere anyway.

The write key comes from the Airflow Variable `segment_write_key`, passed in the environment, never on
the command line.
"""
import datetime

from airflow import DAG
from airflow.operators.bash import BashOperator

BUCKET = "gs://my-bucket"

COMMAND = (
    "python -m pipeline --runner=FnApiRunner"
    f" --currents_root {BUCKET}/currents"
    " --start {{ ds }} --end {{ next_ds }}"
    f" --ledger {BUCKET}/segment-ledger"
    f" --dead_letter_output {BUCKET}/segment-dead-letters/{{{{ ds }}}}"
    f" --summary_output {BUCKET}/segment-runs/{{{{ ds }}}}.json"
    " --fail_on_dead_letters"
    "{% if not params.all_destinations and data_interval_end < macros.datetime.now(data_interval_end.tzinfo)"
    " - macros.timedelta(hours=24) %} --integrations '{\"All\": false}'{% endif %}"
)

with DAG(
    dag_id="currents_to_segment",
    description="Braze Currents → Segment, one UTC day per run",
    schedule="@daily",
    start_date=datetime.datetime(2024, 1, 1),
    catchup=True,
    max_active_runs=1,  # one run at a time: overlapping runs would send shared files twice
    params={"all_destinations": False},
    default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=10)},
) as dag:
    BashOperator(
        task_id="send_day",
        bash_command=COMMAND,
        env={"SEGMENT_WRITE_KEY": "{{ var.value.segment_write_key }}"},
        append_env=True,
    )
