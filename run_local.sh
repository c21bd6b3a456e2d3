#!/usr/bin/env bash
# Without arguments: write a demo Currents bucket with the project's own generator and run the job
# on it in dry-run mode (nothing is sent). With arguments: run the job with them, on FnApiRunner
# unless a --runner is given (--runner=PrismRunner builds Beam's Prism runner once, see scripts/setup_prism.sh).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_venv.sh

if [ $# -gt 0 ]; then
  case " $* " in
    *" --runner=PrismRunner"*|*" --runner PrismRunner"*)
      case " $* " in
        *" --prism_location"*) ;;
        *) source scripts/setup_prism.sh
           [ -n "${PRISM_LOCATION:-}" ] && set -- "$@" --prism_location="$PRISM_LOCATION" ;;
      esac
      exec .venv/bin/python -m pipeline "$@" ;;
    *" --runner"*) exec .venv/bin/python -m pipeline "$@" ;;
    *) exec .venv/bin/python -m pipeline --runner=FnApiRunner "$@" ;;
  esac
fi

out="out/local-run"
rm -rf sample-bucket "$out"
.venv/bin/python -m pipeline make-sample-bucket sample-bucket
set +e
.venv/bin/python -m pipeline --runner=FnApiRunner \
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
exit $status
