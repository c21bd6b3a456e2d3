# Sourced by run_tests.sh and run_local.sh after setup_venv.sh: build Beam's Prism runner (a Go binary) for
# the Beam version installed in .venv, once, into .tools/prism-<version>/, and export PRISM_LOCATION.
# Prism is Beam's portable runner: it runs the job through the same job and Fn APIs as Flink and Dataflow.
# Building takes about 3 minutes and needs Go and its module proxy. With PRISM_REQUIRED=1 (CI) a failed
# build stops here; otherwise the Prism tests are skipped, with the reason.
beam_version="$("$root/.venv/bin/python" -c 'import apache_beam; print(apache_beam.__version__)')"
prism_dir="$root/.tools/prism-$beam_version"
if [ ! -x "$prism_dir/prism" ]; then
  if command -v go >/dev/null; then
    echo "Building Beam's Prism runner $beam_version into $prism_dir (about 3 minutes, once) ..."
    mkdir -p "$prism_dir"
    GOBIN="$prism_dir" go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$beam_version" \
      || echo "Prism $beam_version could not be built with $(go version)"
  else
    echo "Go is not installed: Prism $beam_version cannot be built"
  fi
fi
if [ -x "$prism_dir/prism" ]; then
  export PRISM_LOCATION="$prism_dir/prism"
elif [ "${PRISM_REQUIRED:-}" = "1" ]; then
  echo "error: Prism is required (PRISM_REQUIRED=1) but could not be built" >&2
  exit 1
fi
