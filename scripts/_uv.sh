# Sourced by ./scripts/serve and ./scripts/test: put uv on PATH, installing it once if it is missing.
# ~/.local/bin goes on PATH first: that is where an earlier `pip install --user uv` put it.
export PATH="$HOME/.local/bin:$PATH"
# Use the machine's Python (3.11+); never download one.
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1; then
  echo "Installing uv (once) with pip --user ..." >&2
  # Debian/Ubuntu mark their Python as externally managed; a --user install does not touch it.
  python3 -m pip install --quiet --user uv \
    || python3 -m pip install --quiet --user --break-system-packages uv \
    || python3 -m pip install --quiet uv \
    || { echo "error: could not install uv; install it (https://docs.astral.sh/uv/getting-started/installation/) and run this again" >&2; exit 1; }
  # pip puts user scripts in <user base>/bin: ~/.local/bin on Linux, elsewhere on macOS.
  PATH="$(python3 -c 'import site; print(site.getuserbase())')/bin:$PATH"
  hash -r
fi
