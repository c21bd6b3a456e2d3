"""Reading Currents from S3, Google Cloud Storage and Azure Blob Storage, outputs written there too,
against real servers on loopback speaking each protocol (moto's S3 server, gcp-storage-emulator,
Azurite), started and stopped by the tests. A cloud whose server cannot start here is skipped with
the reason."""
import concurrent.futures
import contextlib
import http.server
import importlib
import json
import os
import pathlib
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from currents_to_segment.pipeline import compact, partitions, replay
from currents_to_segment.pipeline.partitions import select_partitions
from currents_to_segment.transforms.currents.partitions import parse_hour
from currents_to_segment.pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import expected_calls, received_calls, run_job
from tests.segment_server import SegmentServer
from tests.test_replay import letter, track

KEY = "cloud-test-key"
# The buckets, account and roots of the per-cloud examples (docs/storage.md), so that those commands run as written.
BUCKET, REGION = "my-bucket", "eu-central-1"
AZURE_ACCOUNT, AZURE_CONTAINER = "myaccount", "currents"
AZURITE = pathlib.Path(__file__).parent / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# The key of Azurite's documented development account (public, local only), given to our account.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
STORAGE_DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "storage.md"


def unavailable(reason):
    """Skip: this cloud's server cannot run here. With STORAGE_SERVERS_REQUIRED=1 (CI) it is a failure
    instead, so that a green run means all three clouds were tested."""
    if os.environ.get("STORAGE_SERVERS_REQUIRED") == "1":
        pytest.fail(f"storage server unavailable: {reason}")
    pytest.skip(reason)


def need(module, reason):
    """Import a module a storage server or client needs, or call it unavailable."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return unavailable(f"{reason} ({module} is not installed)")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port, seconds):
    """Wait until something accepts connections on the loopback port (the cloud SDKs' own retries back
    off for seconds on a refused connection)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


class Store:
    """A bucket on a storage server: the Currents root the README's example reads (`root`), the job's
    flags to reach it (`args`), or the README's endpoint flag and environment instead (`endpoint_args`,
    `env`); how the test puts, gets and lists objects; `counting_lister()`, a one-level folder listing
    whose list calls are counted; and `wrong_credentials()`, a context in which the server checks
    credentials, giving job flags with wrong ones (None when the server accepts any)."""

    def __init__(self, root, *, args, endpoint_args, env, put, get, keys, counting_lister, wrong_credentials=None):
        self.root, self.base_uri = root, root.rsplit("/", 1)[0]
        self.args, self.endpoint_args, self.env = args, endpoint_args, env
        self.put, self.get, self.keys, self.counting_lister = put, get, keys, counting_lister
        self.wrong_credentials = wrong_credentials


def s3_store():
    moto_server = need("moto.server", "needs moto[server]")
    boto3 = need("boto3", "needs the aws extra")
    requests = need("requests", "needs the test extra")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto's backends live in the process, across servers: start from nothing.
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true"}

    def client():
        return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                            region_name=REGION)

    def counting_lister():
        calls, counted = [], client()
        counted.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: calls.append(1))
        return partitions.delimited_lister("s3://", partitions.s3_prefixes(counted)), calls

    @contextlib.contextmanager
    def wrong_credentials():
        # moto checks credentials against its IAM once told to (its documented /moto-api/reset-auth).
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        try:
            yield ["--s3_endpoint_url", endpoint, "--s3_access_key_id", "AKIAWRONGWRONGWRONG1",
                   "--s3_secret_access_key", "wrong", "--s3_region_name", REGION]
        finally:
            requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()

    s3 = client()
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    store = Store(f"s3://{BUCKET}/currents",
                  args=["--s3_endpoint_url", endpoint, "--s3_access_key_id", "test", "--s3_secret_access_key",
                        "test", "--s3_region_name", REGION],
                  endpoint_args=["--s3_endpoint_url", endpoint], env=env,
                  put=lambda key, body: s3.put_object(Bucket=BUCKET, Key=key, Body=body),
                  get=lambda key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode("utf-8"),
                  keys=lambda prefix: [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
                                       .get("Contents", [])],
                  counting_lister=counting_lister, wrong_credentials=wrong_credentials)
    return store, server.stop


class _TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """Google's OAuth token endpoint, as far as a service account's token request goes."""

    def do_POST(self):  # pylint: disable=invalid-name  # the handler's protocol
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"access_token": "emulator-token", "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


@pytest.fixture(scope="session")
def google_adc(tmp_path_factory):
    """A service-account key file for Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS)
    whose token endpoint is on loopback: the job authenticates the way the README says, without Beam's
    ~25 s of retries before it falls back to anonymous access."""
    rsa = need("cryptography.hazmat.primitives.asymmetric.rsa", "needs the test extra")
    serialization = need("cryptography.hazmat.primitives.serialization", "needs the test extra")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = tmp_path_factory.mktemp("gcloud") / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "1", "private_key": key.decode(),
        "client_email": "currents@test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": f"http://127.0.0.1:{server.server_address[1]}/token"}))
    yield str(path)
    server.shutdown()


def gcs_store(monkeypatch, adc):
    server_module = need("gcp_storage_emulator.server", "needs gcp-storage-emulator")
    storage = need("google.cloud.storage", "needs the gcp extra")
    credentials = need("google.auth.credentials", "needs the gcp extra")
    requests = need("requests", "needs the test extra")
    port = free_port()
    server = server_module.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    # google-cloud-storage's own switch to an emulator; Beam's GCS filesystem has no endpoint option.
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GOOGLE_APPLICATION_CREDENTIALS": adc}
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def client(http=None):
        return storage.Client(project="test", credentials=credentials.AnonymousCredentials(), _http=http)

    def counting_lister():
        calls, session = [], requests.Session()
        # objects.list only: the client also fetches the bucket's metadata once, in the background.
        session.hooks["response"].append(
            lambda response, *_, **__: calls.append(response.url) if "/o?" in response.url else None)
        return partitions.delimited_lister("gs://", partitions.gcs_prefixes(client(session))), calls

    bucket = client().bucket(BUCKET)
    store = Store(f"gs://{BUCKET}/currents", args=["--project", "test"], endpoint_args=[], env=env,
                  put=lambda key, body: bucket.blob(key).upload_from_string(body),
                  get=lambda key: bucket.blob(key).download_as_bytes().decode("utf-8"),
                  keys=lambda prefix: [b.name for b in bucket.list_blobs(prefix=prefix)],
                  counting_lister=counting_lister)
    return store, server.stop


def azure_store(location):
    blob = need("azure.storage.blob", "needs the azure extra")
    if not AZURITE.exists() or not shutil.which("node"):
        unavailable("Azurite is not installed (run_tests.sh installs it with npm when Node.js is present)")
    port = free_port()
    server = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                               "--location", str(location), "--silent", "--skipApiVersionCheck",
                               "--disableTelemetry"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ, AZURITE_ACCOUNTS=f"{AZURE_ACCOUNT}:{AZURITE_KEY}"))
    connection = (f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURITE_KEY};"
                  f"BlobEndpoint=http://127.0.0.1:{port}/{AZURE_ACCOUNT};")
    if not listening(port, seconds=30):
        server.terminate()
        unavailable("Azurite did not start within 30 s")
    container = blob.BlobServiceClient.from_connection_string(connection).create_container(AZURE_CONTAINER)

    def counting_lister():
        calls = []
        counted = blob.BlobServiceClient.from_connection_string(connection, raw_response_hook=calls.append)
        return partitions.delimited_lister(f"azfs://{AZURE_ACCOUNT}/", partitions.azure_prefixes(counted)), calls

    @contextlib.contextmanager
    def wrong_credentials():
        yield ["--azure_connection_string", connection.replace(AZURITE_KEY, "d3Jvbmcta2V5" * 7 + "AA==")]

    store = Store(f"azfs://{AZURE_ACCOUNT}/{AZURE_CONTAINER}/braze",
                  args=["--azure_connection_string", connection], endpoint_args=[],
                  env={"AZURE_STORAGE_CONNECTION_STRING": connection},
                  put=lambda key, body: container.upload_blob(key, body),
                  get=lambda key: container.download_blob(key).readall().decode("utf-8"),
                  keys=lambda prefix: [b.name for b in container.list_blobs(name_starts_with=prefix)],
                  counting_lister=counting_lister, wrong_credentials=wrong_credentials)
    return store, server.terminate


@pytest.fixture(params=["s3", "gcs", "azure"])
def empty_store(request, tmp_path, monkeypatch):
    """A storage server of each cloud with an empty bucket; yields the Store."""
    made, stop = {"s3": s3_store, "gcs": lambda: gcs_store(monkeypatch, request.getfixturevalue("google_adc")),
                  "azure": lambda: azure_store(tmp_path / "azurite")}[request.param]()
    try:
        yield made
    finally:
        stop()


def _key(store, uri):
    """The object key of a URI in the store's bucket."""
    return uri[len(store.base_uri) + 1:]


def upload_sample_bucket(store, local):
    """Generate a Currents bucket in the local folder and upload it under the store's root; return its
    manifest, with the records' source files as their URIs in the store."""
    manifest = make_sample_bucket(local, events_per_file=5)
    for path in manifest["files"]:
        with open(path, "rb") as stream:
            store.put(_key(store, f"{store.root}/" + os.path.relpath(path, local)), stream.read())
    manifest["records"] = [
        dict(entry, source_file=f"{store.root}/" + os.path.relpath(entry["source_file"], local))
        for entry in manifest["records"]]
    return manifest


@pytest.fixture
def store(empty_store, tmp_path):
    """A generated Currents bucket uploaded under the store's root; yields (store, manifest)."""
    return empty_store, upload_sample_bucket(empty_store, str(tmp_path / "bucket"))


def test_input_pattern_and_outputs_in_the_bucket(tmp_path, store):
    made, manifest = store
    with SegmentServer(write_key=KEY) as server:
        status, _, _ = run_job(tmp_path, "--input", f"{made.root}/**", "--segment_endpoint", server.url,
                               "--segment_write_key", KEY, *made.args,
                               "--dead_letter_output", f"{made.base_uri}/out/dead",
                               "--summary_output", f"{made.base_uri}/out/summary.json")
        assert status == 0
        assert received_calls(server.accepted) == expected_calls(manifest)
        assert not server.violations
    summary = json.loads(made.get("out/summary.json"))
    assert summary["sent"] == sum(expected_calls(manifest).values()) and summary["unreadable_files"] == 2
    letters = [json.loads(line) for key in made.keys("out/dead/") for line in made.get(key).splitlines() if line]
    assert {letter["reason"] for letter in letters} == {"event_too_large", "unreadable_file"}
    assert all(letter["source_file"].startswith(f"{made.root}/") for letter in letters)


def test_date_range_with_a_plan_a_ledger_and_dry_run_in_the_bucket(tmp_path, store, capsys):
    made, manifest = store
    day = [e for e in manifest["records"] if "/date=2024-03-02-" in e["source_file"]]
    args = ["--currents_root", made.root, "--start", "2024-03-02", "--end", "2024-03-03",
            "--ledger", f"{made.base_uri}/ledger", "--dead_letter_output", f"{made.base_uri}/out/dead-range",
            *made.args]
    status, _, _ = run_job(tmp_path / "plan", *args, "--plan")
    plan = capsys.readouterr().out.strip().splitlines()
    day_files = [path for path in manifest["files"] if "/date=2024-03-02-" in path]
    assert status == 0 and f"  {len(day_files)} files  " in plan[-1]
    assert sum(line.startswith(f"    {made.root}/") for line in plan) == len(day_files)
    with SegmentServer(write_key=KEY) as server:
        status, _, _ = run_job(tmp_path, "--segment_endpoint", server.url, "--segment_write_key", KEY, *args)
        assert status == 0
        assert received_calls(server.accepted) == expected_calls(dict(manifest, records=day))
        first = len(server.requests)
        status, _, _ = run_job(tmp_path / "again", "--segment_endpoint", server.url, "--segment_write_key", KEY,
                               *args)
        assert status == 0 and len(server.requests) == first  # the ledger in the bucket skips every file
        written = made.keys("ledger/date=")  # the ledger is laid out by hour partition
        assert written and all(key.split("/")[-1].startswith("entries-") for key in written)
        # Merged in the bucket: one file per partition, and every file is still skipped.
        assert compact.main([f"{made.base_uri}/ledger", "--older_than_hours", "0", *made.args]) == 0
        merged = made.keys("ledger/date=")
        partitions = {key.rsplit("/", 1)[0] for key in written}
        assert len(merged) == len(partitions) and all(key.split("/")[-1].startswith("compacted-") for key in merged)
        status, _, _ = run_job(tmp_path / "merged", "--segment_endpoint", server.url, "--segment_write_key", KEY,
                               *args)
        assert status == 0 and len(server.requests) == first
    # A dry run takes no ledger (it would record files nothing was sent of): the same range without it.
    unledgered = [arg for arg in args if arg not in ("--ledger", f"{made.base_uri}/ledger")]
    status, _, _ = run_job(tmp_path / "dry", *unledgered, "--dry_run_output", f"{made.base_uri}/out/requests")
    bodies = [json.loads(line) for key in made.keys("out/requests/") for line in made.get(key).splitlines() if line]
    assert status == 0
    assert received_calls(m for body in bodies for m in body["batch"]) == expected_calls(dict(manifest, records=day))


def readme_command(scheme):
    """docs/storage.md's example command for one URI scheme, continuation lines joined."""
    section = STORAGE_DOC.read_text(encoding="utf-8").split("## S3, GCS and Azure", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    [command] = [" ".join(line.split()) for line in block.splitlines()
                 if line.lstrip().startswith("currents-to-segment ") and f"--currents_root {scheme}" in line]
    return command


def test_the_storage_example_runs_as_written(tmp_path, store):
    """docs/storage.md's command for this cloud (the console script that `pip install` puts on PATH), run by a shell in a fresh process with the credentials in the
    environment, plus only the endpoint options (the local storage server's, the Segment server's)."""
    made, manifest = store
    command = readme_command(made.root.split("://", 1)[0] + "://")
    day = [e for e in manifest["records"] if "/date=2024-03-01-" in e["source_file"]]
    assert "--start 2024-03-01 --end 2024-03-02" in command and day
    with SegmentServer(write_key=KEY) as server:
        extra = " ".join(shlex.quote(arg) for arg in [*made.endpoint_args, "--segment_endpoint", server.url])
        env = dict(os.environ, **made.env, SEGMENT_WRITE_KEY=KEY,
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        done = subprocess.run(["bash", "-c", f"{command} {extra}"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert received_calls(server.accepted) == expected_calls(dict(manifest, records=day))
        assert not server.violations


def test_dead_letters_in_the_bucket_are_replayed(store):
    made, _ = store
    messages = [track(f"m{n}") for n in range(3)]
    letters = [letter(reason, message, http_status=503)
               for reason, message in zip(("retries_exhausted", "rejected_by_segment", "retries_exhausted"), messages)]
    made.put("replay/dead_letters-00000-of-00001.jsonl", "".join(json.dumps(one) + "\n" for one in letters).encode())
    with SegmentServer(write_key=KEY) as server:
        status = replay.main([f"{made.base_uri}/replay", "--segment_endpoint", server.url, "--segment_write_key", KEY,
                              *made.args])
        assert status == 0
        assert received_calls(server.accepted) == received_calls(messages)


def test_wrong_credentials_stop_the_run_with_one_line(tmp_path, store, capsys):
    made, _ = store
    if made.wrong_credentials is None:
        pytest.skip("gcp-storage-emulator accepts any credentials; moto and Azurite check them")
    with made.wrong_credentials() as args:
        for source in (["--currents_root", made.root], ["--input", f"{made.root}/**"]):
            status, _, _ = run_job(tmp_path, *source, "--segment_write_key", KEY,
                                   "--dry_run_output", str(tmp_path / "requests"), *args)
            err = capsys.readouterr().err.strip().splitlines()
            assert status == 1 and err[-1].startswith(f"error: cannot list {source[0]} {made.root}"), err
        assert replay.main([f"{made.root}/dead", "--segment_write_key", KEY, *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"error: cannot list {made.root}/dead: "), err


def test_missing_s3_credentials_stop_the_run_with_one_line(tmp_path, monkeypatch, capsys):
    made, stop = s3_store()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    try:
        status, _, _ = run_job(tmp_path, "--currents_root", made.root, "--segment_write_key", KEY,
                               "--dry_run_output", str(tmp_path / "requests"), *made.endpoint_args)
    finally:
        stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err == [f"error: cannot list --currents_root {made.root}: Unable to locate credentials"]


HOURLY, DAILY = "users.messages.email.Send", ("users.canvas.Entry", "users.behaviors.Uninstall")


def put_month(store):
    """A month of Currents partitions under `<bucket>/month`: one event type every hour, two more once a
    day (one small object each); returns the root and the (event type, hour) partitions of 2024-03-15."""
    month = f"{store.base_uri}/month/dataexport.prod-01.S3.integration.5a"
    uris = [f"{month}/event_type={HOURLY}/date=2024-03-{day:02d}-{hour:02d}/7/0/f.avro"
            for day in range(1, 32) for hour in range(24)]
    uris += [f"{month}/event_type={t}/date=2024-03-{day:02d}-06/7/0/f.avro" for t in DAILY for day in range(1, 32)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda uri: store.put(_key(store, uri), b"x"), uris))
    assert len(uris) == 31 * 24 + 2 * 31
    day = [(HOURLY, parse_hour(f"2024-03-15T{hour:02d}")) for hour in range(24)]
    return f"{store.base_uri}/month", sorted(day + [(t, parse_hour("2024-03-15T06")) for t in DAILY])


def test_one_day_out_of_a_month_takes_a_few_list_calls(empty_store):
    """Folders are listed one level at a time (a "/" delimiter): the cost depends on the folders, not
    on how many hours and files the bucket holds."""
    root, day = put_month(empty_store)
    lister, calls = empty_store.counting_lister()
    selected = select_partitions(root, parse_hour("2024-03-15"), parse_hour("2024-03-16"), children=lister)
    assert sorted((p.event_type, p.hour) for p in selected) == day
    assert len(calls) == 1 + 1 + 3  # the root, the integration folder, each event-type folder


@pytest.fixture
def s3_spy(monkeypatch):
    """Every boto3 client the process builds, and the S3 operations they call: (clients, operations)."""
    boto3 = need("boto3", "needs the aws extra")
    clients, operations = [], []
    build = boto3.session.Session.client

    def spied(self, *args, **kwargs):
        client = build(self, *args, **kwargs)
        client.meta.events.register("before-call.s3", lambda model, **_: operations.append(model.name))
        clients.append(client)
        return client

    monkeypatch.setattr(boto3.session.Session, "client", spied)
    return clients, operations


def test_a_one_day_run_on_s3_lists_and_reads_only_that_day(tmp_path, s3_spy):
    made, stop = s3_store()
    clients, operations = s3_spy
    try:
        root, day = put_month(made)
        clients.clear(), operations.clear()
        status, summary, letters = run_job(tmp_path, "--currents_root", root, "--start", "2024-03-15",
                                           "--end", "2024-03-16", "--dry_run_output", str(tmp_path / "r"),
                                           *made.args)
    finally:
        stop()
    assert status == 0 and summary["unreadable_files"] == len(day)  # the objects are not Avro
    assert sorted({letter["source_file"].split("/date=")[0].rsplit("=", 1)[1] for letter in letters}) == sorted(
        {event_type for event_type, _ in day})
    assert all("/date=2024-03-15-" in letter["source_file"] for letter in letters)
    # Discovery: the root, the integration folder, each event-type folder; then each selected partition.
    assert operations.count("ListObjectsV2") == 1 + 1 + 3 + len(day)
    assert len(clients) <= 5, len(clients)  # Beam alone builds one per listing and per file opened


def test_s3_files_are_listed_and_read_with_one_client_per_worker(tmp_path, s3_spy):
    """Beam's S3 filesystem builds a boto3 client per pattern listed and per file opened; the read
    stage builds one per worker, so the count does not grow with the files."""
    made, stop = s3_store()
    clients, _ = s3_spy
    try:
        manifest = upload_sample_bucket(made, str(tmp_path / "bucket"))
        hours = {os.path.dirname(path) for path in manifest["files"]}
        clients.clear()
        status, summary, _ = run_job(tmp_path, "--currents_root", made.root, "--dry_run_output",
                                     str(tmp_path / "requests"), *made.args)
    finally:
        stop()
    assert status == 0 and summary["sent"] == sum(expected_calls(manifest).values())
    assert len(manifest["files"]) == 73 and len(hours) > 60
    assert len(clients) <= 5, len(clients)  # here 3: the partition lister, one per DoFn of the read stage


def test_an_output_that_cannot_be_written_stops_the_run_before_anything_is_sent(tmp_path, store, capsys):
    made, _ = store
    if made.wrong_credentials is None:
        pytest.skip("gcp-storage-emulator accepts any credentials; moto and Azurite check them")
    local = tmp_path / "local"
    make_sample_bucket(str(local), events_per_file=5)
    with SegmentServer(write_key=KEY) as server, made.wrong_credentials() as args:
        status, _, _ = run_job(tmp_path, "--input", f"{local}/**", "--segment_endpoint", server.url,
                               "--segment_write_key", KEY, *args, "--dead_letter_output", f"{made.base_uri}/out/dead")
        assert not server.requests
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err[-1].startswith(f"error: cannot write --dead_letter_output {made.base_uri}/out/dead: "), err
    assert not made.keys("out/")
    status, _, _ = run_job(tmp_path / "ok", "--input", f"{local}/**", "--dry_run_output", f"{made.base_uri}/out/r",
                           *made.args, "--dead_letter_output", f"{made.base_uri}/out/dead")
    assert status == 0 and not [key for key in made.keys("out/") if ".write-check-" in key]
