# Sourced by run_tests.sh and run_local.sh after setup_venv.sh: find Beam's Flink job server (a Java jar) and
# export FLINK_JOB_SERVER_JAR, which the Flink tests and `./run_local.sh --runner=FlinkRunner` pass as
# --flink_job_server_jar. In order:
# - FLINK_JOB_SERVER_JAR already set to an existing file: kept as it is;
# - ../shared/flink-job-server/ next to the repository (Beam's job server as source, for machines whose package
#   registry refuses Beam's published jar): built once into .tools/flink-job-server-<Flink version>/, about
#   40 s, with Java 17 and Maven; Maven's output goes to build.log there (its tail is shown when it fails);
# - otherwise left unset: Beam's FlinkRunner then downloads Beam's own job-server jar when a job starts, and
#   the Flink tests are skipped, with the reason.
# With FLINK_REQUIRED=1 (CI) a missing jar stops here.
flink_version="${FLINK_VERSION:-1.19.0}"
flink_source="$root/../shared/flink-job-server"
flink_dir="$root/.tools/flink-job-server-$flink_version"
if [ -n "${FLINK_JOB_SERVER_JAR:-}" ] && [ ! -f "$FLINK_JOB_SERVER_JAR" ]; then
  echo "FLINK_JOB_SERVER_JAR=$FLINK_JOB_SERVER_JAR is not a file: ignored"
  unset FLINK_JOB_SERVER_JAR
fi
_build_flink_job_server() {
  if [ -f "$flink_dir/beam-flink-job-server.jar" ]; then return 0; fi  # built meanwhile by another run
  echo "Building Beam's Flink job server for Flink $flink_version into $flink_dir (about 40 s, once) ..."
  if ! FLINK_VERSION="$flink_version" bash "$flink_source/build.sh" "$flink_dir" >"$flink_dir/build.log" 2>&1; then
    tail -n 30 "$flink_dir/build.log"
    echo "The Flink job server could not be built (the whole log: $flink_dir/build.log)"
  fi
}
if [ -z "${FLINK_JOB_SERVER_JAR:-}" ] && [ -f "$flink_source/build.sh" ]; then
  if [ ! -f "$flink_dir/beam-flink-job-server.jar" ]; then
    if command -v java >/dev/null && command -v mvn >/dev/null; then
      mkdir -p "$flink_dir"
      if command -v flock >/dev/null; then  # one build at a time: two runs may start together
        ( flock 9; _build_flink_job_server ) 9>"$flink_dir/.lock"
      else
        _build_flink_job_server
      fi
    else
      echo "Java and Maven are not installed: Beam's Flink job server cannot be built"
    fi
  fi
  if [ -f "$flink_dir/beam-flink-job-server.jar" ]; then
    export FLINK_JOB_SERVER_JAR="$flink_dir/beam-flink-job-server.jar"
  fi
fi
if [ -z "${FLINK_JOB_SERVER_JAR:-}" ] && [ "${FLINK_REQUIRED:-}" = "1" ]; then
  echo "error: Flink's job server is required (FLINK_REQUIRED=1) but there is none" \
       "(set FLINK_JOB_SERVER_JAR, or see scripts/setup_flink.sh)" >&2
  exit 1
fi
