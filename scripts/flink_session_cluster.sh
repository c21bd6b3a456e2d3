#!/usr/bin/env bash
# A Flink session cluster on this machine, to try the job on Flink as it runs on a real cluster: a JobManager
# (Flink's StandaloneSessionClusterEntrypoint) and one TaskManager with 2 slots (TaskManagerRunner), each a JVM
# of its own, from the jars of Beam's Flink job server (scripts/setup_flink.sh finds or builds it: Flink 1.19).
# Config, logs and process ids in .tools/flink-session-cluster/, or in FLINK_CLUSTER_DIR (a second cluster, as the
# tests start one). Needs Java 17, and Maven once (for the metrics reporter, below).
#
#   scripts/flink_session_cluster.sh start [REST_PORT [RPC_PORT [METRICS_PORT]]]  # default 8081, 6123 and 9249;
#                                                                   # prints the --flink_master and where to scrape
#   ./run_local.sh --runner=FlinkRunner --flink_master=localhost:8081 --environment_type=LOOPBACK --parallelism=2
#   curl -s localhost:9250/metrics | grep currents_to_segment       # the job's Beam counters, while it runs
#   scripts/flink_session_cluster.sh stop
#
# Flink's metrics, Beam's counters among them, are served to Prometheus by Flink's Prometheus reporter
# (org.apache.flink:flink-metrics-prometheus, fetched once from Maven into .tools/; a Flink plugin): the JobManager's
# on METRICS_PORT, the TaskManager's (where the job's counters are) on METRICS_PORT+1, at /metrics.
#
# The job server (which --runner=FlinkRunner starts) submits each job with its own jars (about 190 MB, some
# 20 s here). The cluster has the same jars, the job server's and its lib/, on its class path and loads classes
# from there first (classloader.resolve-order: parent-first): with lib/ alone there, a job failed with
# "FlinkPipelineOptions referenced from a method is not visible from class loader".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${FLINK_CLUSTER_DIR:-$root/.tools/flink-session-cluster}"

stop() {
  for role in taskmanager jobmanager; do
    if [ -f "$dir/$role.pid" ]; then
      kill "$(cat "$dir/$role.pid")" 2>/dev/null || true
      rm -f "$dir/$role.pid"
    fi
  done
}

case "${1:-}" in
  stop) stop; exit 0 ;;
  start) rest_port="${2:-8081}"; rpc_port="${3:-6123}"; metrics_port="${4:-9249}" ;;
  *) echo "usage: $0 start [REST_PORT [RPC_PORT [METRICS_PORT]]] | stop" >&2; exit 2 ;;
esac

source "$root/scripts/setup_flink.sh"
if [ -z "${FLINK_JOB_SERVER_JAR:-}" ]; then
  echo "error: no Flink job server jar (see scripts/setup_flink.sh)" >&2
  exit 1
fi
if [ -f "$dir/jobmanager.pid" ] && kill -0 "$(cat "$dir/jobmanager.pid")" 2>/dev/null; then
  echo "error: a cluster started here is running already (stop it first: $0 stop)" >&2
  exit 1
fi
# Flink's Prometheus reporter, from Maven, once: 1.19.1 (the registry here serves no 1.19.0 of it; a reporter of a later
# patch release runs on Flink 1.19.0). Its one jar holds the Prometheus client it needs (io.prometheus:simpleclient),
# so it goes in a plugin folder of its own, as Flink's distribution has it (plugins/metrics-prometheus/), loaded by
# a class loader of its own.
prometheus_version="${FLINK_PROMETHEUS_VERSION:-1.19.1}"
prometheus_dir="$root/.tools/flink-metrics-prometheus-$prometheus_version"
prometheus_jar="$prometheus_dir/flink-metrics-prometheus-$prometheus_version.jar"
_fetch_prometheus_reporter() {
  if [ -f "$prometheus_jar" ]; then return 0; fi  # fetched meanwhile by another start
  echo "Fetching Flink's Prometheus reporter (org.apache.flink:flink-metrics-prometheus:$prometheus_version) ..."
  rm -rf "$prometheus_dir/.fetch"
  if mvn -B -q ${M2_REPO:+-Dmaven.repo.local="$M2_REPO"} dependency:copy \
       -Dartifact="org.apache.flink:flink-metrics-prometheus:$prometheus_version:jar" \
       -DoutputDirectory="$prometheus_dir/.fetch" >"$prometheus_dir/fetch.log" 2>&1; then
    mv "$prometheus_dir/.fetch/flink-metrics-prometheus-$prometheus_version.jar" "$prometheus_jar"
    rm -rf "$prometheus_dir/.fetch" "$prometheus_dir/fetch.log"
  else
    tail -n 20 "$prometheus_dir/fetch.log" >&2
    echo "error: Flink's Prometheus reporter could not be fetched with Maven" \
         "(the whole log: $prometheus_dir/fetch.log)" >&2
    return 1
  fi
}
if [ ! -f "$prometheus_jar" ]; then
  if ! command -v mvn >/dev/null; then
    echo "error: Maven is not installed: Flink's Prometheus reporter cannot be fetched" >&2
    exit 1
  fi
  mkdir -p "$prometheus_dir"
  if command -v flock >/dev/null; then  # one fetch at a time: two clusters may start together
    ( flock 9; _fetch_prometheus_reporter ) 9>"$prometheus_dir/.lock"
  else
    _fetch_prometheus_reporter
  fi
fi
rm -rf "$dir/plugins"
mkdir -p "$dir/conf" "$dir/plugins/metrics-prometheus"
cp "$prometheus_jar" "$dir/plugins/metrics-prometheus/"
# The TaskManager's memory, each part named (what Flink's own start scripts compute from a process size).
cat >"$dir/conf/flink-conf.yaml" <<EOF
jobmanager.rpc.address: localhost
jobmanager.bind-host: localhost
jobmanager.rpc.port: $rpc_port
rest.address: localhost
rest.bind-address: localhost
rest.port: $rest_port
taskmanager.host: localhost
taskmanager.bind-host: localhost
taskmanager.numberOfTaskSlots: 2
taskmanager.cpu.cores: 2
taskmanager.memory.framework.heap.size: 128m
taskmanager.memory.task.heap.size: 512m
taskmanager.memory.framework.off-heap.size: 128m
taskmanager.memory.task.off-heap.size: 0m
taskmanager.memory.network.min: 64m
taskmanager.memory.network.max: 64m
taskmanager.memory.managed.size: 128m
taskmanager.memory.jvm-metaspace.size: 256m
taskmanager.memory.jvm-overhead.min: 192m
taskmanager.memory.jvm-overhead.max: 192m
jobmanager.memory.process.size: 1024m
classloader.resolve-order: parent-first
metrics.reporters: prom
metrics.reporter.prom.factory.class: org.apache.flink.metrics.prometheus.PrometheusReporterFactory
EOF
# The JDK 17 module openings that Flink 1.19 sets for itself (env.java.opts.all).
opens=()
for p in java.lang java.net java.io java.nio sun.nio.ch java.lang.reflect java.text java.time java.util \
         java.util.concurrent java.util.concurrent.atomic java.util.concurrent.locks; do
  opens+=("--add-opens=java.base/$p=ALL-UNNAMED")
done
opens+=(--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
        --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED)
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
classpath="$FLINK_JOB_SERVER_JAR:$(dirname "$FLINK_JOB_SERVER_JAR")/lib/*"
# Each process its own reporter port (a dynamic property, -D, over the configuration file), so that each is known.
jobmanager_metrics="$metrics_port"
taskmanager_metrics="$((metrics_port + 1))"
export FLINK_PLUGINS_DIR="$dir/plugins"
rm -f "$dir/jobmanager.log" "$dir/taskmanager.log"  # read below: none of a previous start
"$java" -Xmx768m "${opens[@]}" -cp "$classpath" org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint \
  --configDir "$dir/conf" -Dmetrics.reporter.prom.port="$jobmanager_metrics" \
  >"$dir/jobmanager.log" 2>&1 </dev/null &
echo $! >"$dir/jobmanager.pid"
"$java" -Xmx640m "${opens[@]}" -cp "$classpath" org.apache.flink.runtime.taskexecutor.TaskManagerRunner \
  --configDir "$dir/conf" -Dmetrics.reporter.prom.port="$taskmanager_metrics" \
  >"$dir/taskmanager.log" 2>&1 </dev/null &
echo $! >"$dir/taskmanager.pid"

# Ready when the TaskManager has registered with the JobManager and each process's reporter has started on its port
# (as its log says: a reporter whose port is taken only logs it, and the process goes on without).
reporting() {  # ROLE PORT
  grep -q "Started PrometheusReporter HTTP server on port $2\." "$dir/$1.log" 2>/dev/null
}
deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$deadline" ]; do
  for role in jobmanager taskmanager; do
    if ! kill -0 "$(cat "$dir/$role.pid")" 2>/dev/null; then
      tail -n 30 "$dir/$role.log"
      echo "error: the $role stopped (its log: $dir/$role.log)" >&2
      stop
      exit 1
    fi
    if grep -q "Could not start PrometheusReporter HTTP server" "$dir/$role.log" 2>/dev/null; then
      port="$jobmanager_metrics"; [ "$role" = taskmanager ] && port="$taskmanager_metrics"
      echo "error: the $role's Prometheus reporter could not listen on port $port (taken?); give another" \
           "METRICS_PORT (its log: $dir/$role.log)" >&2
      stop
      exit 1
    fi
  done
  if reporting jobmanager "$jobmanager_metrics" && reporting taskmanager "$taskmanager_metrics" &&
     python3 - "$rest_port" <<'EOF' 2>/dev/null; then
import json, sys, urllib.request
overview = json.load(urllib.request.urlopen(f"http://localhost:{sys.argv[1]}/overview", timeout=1))
sys.exit(0 if overview["taskmanagers"] >= 1 else 1)
EOF
    echo "Flink session cluster up: --flink_master=localhost:$rest_port (logs: $dir; stop: ${FLINK_CLUSTER_DIR:+FLINK_CLUSTER_DIR=$dir }$0 stop)"
    echo "Flink's metrics for Prometheus: http://localhost:$taskmanager_metrics/metrics (the TaskManager: the jobs'" \
         "Beam counters, while they run), http://localhost:$jobmanager_metrics/metrics (the JobManager)"
    exit 0
  fi
  sleep 0.5
done
echo "error: the cluster did not come up within 60 s (logs: $dir)" >&2
stop
exit 1
