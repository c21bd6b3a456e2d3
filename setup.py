"""Packaging for the Braze Currents → Segment Beam pipeline."""
import setuptools

VERSION = "0.1.0"
PACKAGES = ("pipeline", "transforms", "transforms.currents", "transforms.segment")

setuptools.setup(
    name="braze-currents-to-segment",
    version=VERSION,
    description="Apache Beam job that replays Braze Currents Avro exports into Segment track calls.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Installed under one name of our own, so that nothing called `pipeline` or `transforms` lands at the top of
    # site-packages (where it would clash with any other project's): the folders of the repository are the
    # subpackages of `currents_to_segment`, an implicit namespace package (PEP 420) with no folder of its own.
    packages=[f"currents_to_segment.{package}" for package in PACKAGES],
    package_dir={f"currents_to_segment.{package}": package.replace(".", "/") for package in PACKAGES},
    package_data={"currents_to_segment.transforms.currents": ["schemas.json"]},
    install_requires=[
        "apache-beam>=2.60,<3",
        "fastavro>=1.9,<2",
        "requests>=2.31,<3",
        "orjson>=3.9,<4",  # each call is serialized once, with it
        # Avro codecs beyond null/deflate: snappy needs cramjam; zstandard needs backports.zstd
        # (fastavro uses the standard library's zstd from Python 3.14 on).
        "cramjam>=2.7,<3",
        "backports.zstd>=1.0,<2; python_version < '3.14'",
        "prometheus-client>=0.20,<1",  # --metrics_port: the exposition format
    ],
    extras_require={
        "gcp": ["apache-beam[gcp]>=2.60,<3", "google-cloud-secret-manager>=2.16,<3"],
        "aws": ["apache-beam[aws]>=2.60,<3"],
        "azure": ["apache-beam[azure]>=2.60,<3"],
        # The storage tests run the job against real servers on loopback: moto's S3 server and
        # gcp-storage-emulator here, Azurite from npm (run_tests.sh installs it).
        "test": ["pytest>=7,<10", "pytest-xdist>=3.5,<4", "hypothesis>=6.80,<7", "moto[server]>=5,<6", "gcp-storage-emulator>=2024.8,<2027",
                 "apache-beam[aws,gcp,azure]>=2.60,<3"],
        # benchmarks/side_by_side.py: Segment's own library, for a system it compares with the job.
        "bench": ["segment-analytics-python==2.4.0"],
    },
    entry_points={"console_scripts": ["currents-to-segment=currents_to_segment.pipeline.main:cli"]},
)
