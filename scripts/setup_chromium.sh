# Sourced by run_tests.sh: find a headless browser for the report page's browser tests (tests/test_report_page.py)
# and export CHROMIUM, its path. In order:
# - CHROMIUM already set to an executable: kept as it is;
# - chromium, chromium-browser, google-chrome or google-chrome-stable on PATH: that one;
# - as root with apt-get (Debian, Ubuntu): Debian's `chromium` package is installed once (about a minute;
#   `apt-get update` first only when the package cannot be found), apt's output going to a log whose tail is
#   shown when it fails;
# - otherwise left unset: the browser tests are skipped, with the reason.
# With CHROMIUM_REQUIRED=1 (CI) a missing browser stops here. Can also be run on its own, to install it:
#   sudo bash scripts/setup_chromium.sh
chromium_log="${CHROMIUM_INSTALL_LOG:-${TMPDIR:-/tmp}/setup-chromium.log}"
if [ -n "${CHROMIUM:-}" ] && [ ! -x "$CHROMIUM" ]; then
  echo "CHROMIUM=$CHROMIUM is not an executable: ignored"
  unset CHROMIUM
fi
_find_chromium() {
  local name
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null; then command -v "$name"; return 0; fi
  done
  return 1
}
_install_chromium() {
  export DEBIAN_FRONTEND=noninteractive
  # The simulation says whether the package can be had at all; stale package lists are refreshed once.
  if ! apt-get install -s --no-install-recommends chromium >"$chromium_log" 2>&1; then
    apt-get update -qq >>"$chromium_log" 2>&1 || true
    if ! apt-get install -s --no-install-recommends chromium >>"$chromium_log" 2>&1; then
      echo "Chromium is not available from apt-get (see $chromium_log): the browser tests will be skipped"
      return 1
    fi
  fi
  echo "Installing Chromium with apt-get (about a minute, once; log: $chromium_log) ..."
  # -o DPkg::Lock::Timeout: another run (or apt itself) may hold the lock for a while.
  if ! apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 chromium >>"$chromium_log" 2>&1; then
    tail -n 20 "$chromium_log"
    echo "Chromium could not be installed (the whole log: $chromium_log): the browser tests will be skipped"
    return 1
  fi
}
if [ -z "${CHROMIUM:-}" ]; then
  if chromium_path="$(_find_chromium)"; then
    export CHROMIUM="$chromium_path"
  elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    if _install_chromium && chromium_path="$(_find_chromium)"; then
      export CHROMIUM="$chromium_path"
      echo "Chromium installed: $CHROMIUM"
    fi
  else
    echo "No Chromium on PATH (and not root with apt-get to install it): the report page's browser tests" \
         "will be skipped"
  fi
  unset chromium_path
fi
if [ -z "${CHROMIUM:-}" ] && [ "${CHROMIUM_REQUIRED:-}" = "1" ]; then
  echo "error: a headless Chromium is required (CHROMIUM_REQUIRED=1) but there is none" \
       "(set CHROMIUM, or see scripts/setup_chromium.sh)" >&2
  exit 1
fi
