"""Fixtures shared by the test modules: a Segment server on loopback, and a generated Currents bucket.

A module names its server's write key as KEY (or WRITE_KEY), and may shape its bucket with SAMPLE_BUCKET, keyword
arguments of pipeline.sample_bucket.make_sample_bucket (default: 6 events per file, the classic types).
"""
import pytest

from pipeline.sample_bucket import make_sample_bucket
from tests.segment_server import SegmentServer

DEFAULT_BUCKET = {"events_per_file": 6}


@pytest.fixture
def server(request):
    """A SegmentServer taking the module's KEY, for one test."""
    key = getattr(request.module, "KEY", None) or getattr(request.module, "WRITE_KEY", "test-write-key")
    with SegmentServer(write_key=key) as running:
        yield running


@pytest.fixture(scope="module")
def bucket(request, tmp_path_factory):
    """(root, manifest) of a demo Currents bucket written with the module's BUCKET settings, for its tests."""
    root = tmp_path_factory.mktemp("bucket")
    return str(root), make_sample_bucket(str(root), **getattr(request.module, "SAMPLE_BUCKET", DEFAULT_BUCKET))
