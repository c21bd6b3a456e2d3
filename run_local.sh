#!/usr/bin/env bash
# Without --input or --currents_root: write a demo Currents bucket with the project's own generator and run the
# job on it in dry-run mode (nothing is sent), with any arguments given added (e.g. --runner=PrismRunner).
# With --input or --currents_root: run the job with the arguments as they are. Either way on FnApiRunner unless
# a --runner is given (a --watch runs on PrismRunner); --runner=PrismRunner builds Beam's Prism runner once (see
# scripts/setup_prism.sh), and --runner=FlinkRunner runs on an embedded Flink cluster (see scripts/setup_flink.sh for its job server).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_venv.sh

case "${1:-}" in
  make-sample-bucket|replay-dead-letters|-h|--help) exec .venv/bin/python -m pipeline "$@" ;;
esac

args=("$@")
case " $* " in
  *" --runner"*) ;;
  # A watch runs for ever: on Prism, which keeps its memory flat (FnApiRunner refuses it).
  *" --watch "*) args=(--runner=PrismRunner "${args[@]}") ;;
  *) args=(--runner=FnApiRunner "${args[@]}") ;;
esac
case " ${args[*]} " in
  *" --runner=PrismRunner"*|*" --runner PrismRunner"*)
    case " $* " in
      *" --prism_location"*) ;;
      *) source scripts/setup_prism.sh
         if [ -n "${PRISM_LOCATION:-}" ]; then args+=(--prism_location="$PRISM_LOCATION"); fi ;;
    esac ;;
  *" --runner=FlinkRunner"*|*" --runner FlinkRunner"*)
    # An embedded Flink cluster unless --flink_master names one; Beam's Flink job server from
    # scripts/setup_flink.sh unless --flink_job_server_jar names one (none there: Beam downloads its own).
    case " $* " in
      *" --flink_job_server_jar"*) ;;
      *) source scripts/setup_flink.sh
         if [ -n "${FLINK_JOB_SERVER_JAR:-}" ]; then args+=(--flink_job_server_jar="$FLINK_JOB_SERVER_JAR"); fi ;;
    esac
    case " $* " in
      *" --flink_master"*) ;;
      *) args+=("--flink_master=[local]") ;;
    esac ;;
esac
case " $* " in
  *" --input"*|*" --currents_root"*) exec .venv/bin/python -m pipeline "${args[@]}" ;;
esac

out="out/local-run"
rm -rf sample-bucket "$out"
.venv/bin/python -m pipeline make-sample-bucket sample-bucket
set +e
.venv/bin/python -m pipeline "${args[@]}" \
  --input 'sample-bucket/**/*.avro' \
  --dry_run_output "$out/requests" \
  --dead_letter_output "$out/dead_letters" \
  --summary_output "$out/summary.json"
status=$?
set -e
echo
echo "Sample bucket:       sample-bucket/"
echo "Request bodies:      $out/requests/ (one JSON body per line, exactly as they would be POSTed)"
echo "Dead letters:        $out/dead_letters/ (the oversize event and the broken files, with reasons)"
echo "Summary (JSON):      $out/summary.json"
echo "To send for real:    SEGMENT_WRITE_KEY=... ./run_local.sh --input 'sample-bucket/**/*.avro'"
echo "Today's connector:   ./run_local.sh --mapping current --include_anonymous_users (52 types, anonymousId;"
echo "                     the default, --mapping classic, sends the original 34 events)"
echo "On another runner:   ./run_local.sh --runner=PrismRunner (Beam's portable runner; built once, needs Go)"
echo "                     ./run_local.sh --runner=FlinkRunner (an embedded Flink cluster; needs Java)"
exit $status
