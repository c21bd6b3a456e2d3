# Sourced by run_local.sh and run_tests.sh: create .venv if missing and install the project into it.
# Re-installs only when setup.py changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "Creating $venv ..."
  "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$(sha1sum "$root/setup.py" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "Installing the project and its test tools into $venv (first run takes a minute) ..."
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$root[test]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
