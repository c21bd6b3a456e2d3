"""What can be checked of Dataflow here: the job graph builds with DataflowRunner options (nothing is
submitted), no stage shuffles events, and the sdist that --setup_file stages holds what workers need."""
import glob
import os
import subprocess
import sys
import tarfile

import apache_beam as beam
import pytest

from currents_to_segment.pipeline import assembly, config
from currents_to_segment.pipeline.sample_bucket import make_sample_bucket
from currents_to_segment.transforms import ledger
from currents_to_segment.transforms.currents.catalog import CLASSIC

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "dataflow-test-key-77c1"
SAMPLE_BUCKET = {"events_per_file": 3}
GROUPINGS = ("beam:transform:group_by_key:v1", "beam:transform:combine_per_key:v1", "beam:transform:reshuffle:v1")
# The only groupings allowed: file paths (listed once each, spread over workers; the ledger's skip).
GROUPED_PATHS = ("ListCurrentsFiles/", "SkipFilesInLedger/")


def _built(argv, monkeypatch):
    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    job = config.load(argv, ledger.new_run_id())
    pipeline = beam.Pipeline(options=job.pipeline_options)
    assembly.build(pipeline, job.config)
    return pipeline


def test_the_dataflow_job_graph_builds_without_submitting_and_holds_no_key(tmp_path, bucket, monkeypatch):
    pipeline = _built(["--runner=DataflowRunner", "--project=demo-project", "--region=us-central1",
                       "--temp_location=gs://demo-bucket/tmp", "--dry_run=True", "--input", f"{bucket[0]}/**",
                       "--dead_letter_output", str(tmp_path / "dead"), "--ledger", str(tmp_path / "ledger")],
                      monkeypatch)
    result = pipeline.run()
    job_json = str(result.job)
    names = {transform.unique_name for transform in result.job.proto_pipeline.components.transforms.values()}
    # The design's shape, as a user reads it in Dataflow's graph: list, branch by family, deliver each branch.
    assert {"ListCurrentsFiles", "SkipFilesInLedger", "RouteByFamily", "DeliverToSegment[unsupported]",
            "RecordInLedger[unsupported]"} <= names
    assert {f"{stage}[{family}]" for family in CLASSIC.families
            for stage in ("DeliverToSegment", "RecordInLedger")} <= names
    assert "JOB_TYPE_BATCH" in job_json
    assert KEY not in job_json and KEY not in str(result.job.proto_pipeline)


@pytest.mark.parametrize("outputs", ["ledger", "dry_run_output"])
def test_no_stage_groups_events_only_file_paths(tmp_path, bucket, monkeypatch, outputs):
    pipeline = _built(["--runner=FnApiRunner", "--input", f"{bucket[0]}/**", "--dead_letter_output",
                       str(tmp_path / "dead"), f"--{outputs}", str(tmp_path / outputs)], monkeypatch)
    transforms = pipeline.to_runner_api().components.transforms.values()
    groupings = [t.unique_name for t in transforms if t.spec.urn in GROUPINGS]
    assert groupings, "expected the file-path groupings"
    assert [name for name in groupings if not name.startswith(GROUPED_PATHS)] == []
    # Nothing merges the branches: each family's files go from the route to the ledger through fused steps.
    assert [t.unique_name for t in transforms if t.spec.urn == "beam:transform:flatten:v1"
            and not t.unique_name.startswith(GROUPED_PATHS)] == []


def test_the_sdist_staged_by_setup_file_holds_every_module_and_data_file(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    [sdist] = glob.glob(str(tmp_path / "*.tar.gz"))
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = {os.path.relpath(path, ROOT) for package in ("pipeline", "transforms", "transforms/currents", "transforms/segment")
              for path in glob.glob(os.path.join(ROOT, package, "*"))
              if not path.endswith("__pycache__") and not os.path.isdir(path)}
    assert "transforms/currents/schemas.json" in needed
    assert needed | {"setup.py", "README.md"} <= members
